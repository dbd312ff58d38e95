"""``tmops init``: the upstream tree, the branch and worktree, idempotence, retries, reporting.

Everything runs for real: git repositories in ``tmp_path``, real processes, no mocks. Bad input
and errors are in ``test_features_errors.py``, the legacy script in ``test_features_legacy.py``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tmops_core.config import Config, LoadedConfig
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.operations import Service
from tmops_core.workspace.features import InitRequest
from tmops_hookspecs import FeatureContext, FeatureError, hookimpl

from .features_support import branch_exists, git, init, run_cli, write_config

SECTIONS = ("User Story", "Acceptance Criteria", "Technical Constraints", "Definition of Done")


# -- helpers -----------------------------------------------------------------------------------


def worktree_paths(repo: Path) -> list[str]:
    lines = git(repo, "worktree", "list", "--porcelain").splitlines()
    return [line.removeprefix("worktree ") for line in lines if line.startswith("worktree ")]


def tree_snapshot(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` with its type, mode, mtime and content (or link target)."""
    found: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            if any(re.fullmatch(pattern, name) for pattern in skip):
                continue
            path = Path(folder) / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                content: Any = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            else:
                content = None
            found[str(path.relative_to(root))] = (
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                info.st_mtime_ns,
                content,
            )
    return found


def features_lines(repo: Path) -> list[str]:
    return (repo / ".tmops" / "FEATURES.txt").read_text().splitlines()


# -- the upstream tree --------------------------------------------------------------------------


def test_init_creates_the_run_folders(repo: Path) -> None:
    init(repo)
    run = repo / ".tmops/auth-api/runs/initial"
    assert (run / "checkpoints").is_dir()
    assert (run / "logs").is_dir()


def test_init_creates_the_docs_folders(repo: Path) -> None:
    init(repo)
    docs = repo / ".tmops/auth-api/docs"
    assert sorted(p.name for p in docs.iterdir()) == ["archive", "external", "images", "internal"]
    assert all(p.is_dir() for p in docs.iterdir())


def test_init_writes_a_task_spec_with_the_four_sections(repo: Path) -> None:
    result = init(repo)
    spec = repo / ".tmops/auth-api/runs/initial/TASK_SPEC.md"
    assert result.task_spec == spec
    headings = re.findall(r"^## (.+)$", spec.read_text(), flags=re.MULTILINE)
    assert headings == list(SECTIONS)


def test_init_points_current_at_runs_initial(repo: Path) -> None:
    init(repo)
    current = repo / ".tmops/auth-api/current"
    assert current.is_symlink()
    assert os.readlink(current) == "runs/initial"


def test_init_records_one_features_line_with_time_and_branch(repo: Path) -> None:
    init(repo)
    [line] = features_lines(repo)
    match = re.fullmatch(r"auth-api:initialized:(.+):feature/auth-api", line)
    assert match is not None
    assert datetime.fromisoformat(match.group(1)).tzinfo is not None


def test_init_makes_directories_0700_and_files_0600(repo: Path) -> None:
    init(repo)
    seen = {"dirs": 0, "files": 0}
    for folder, dirs, files in os.walk(repo / ".tmops/auth-api"):
        for name in dirs:
            info = os.lstat(Path(folder, name))
            if stat.S_ISLNK(info.st_mode):
                continue
            assert stat.S_IMODE(info.st_mode) == 0o700, Path(folder, name)
            seen["dirs"] += 1
        for name in files:
            info = os.lstat(Path(folder, name))
            assert stat.S_IMODE(info.st_mode) == 0o600, Path(folder, name)
            seen["files"] += 1
    assert stat.S_IMODE(os.lstat(repo / ".tmops/auth-api").st_mode) == 0o700
    assert seen == {"dirs": 9, "files": 1}


# -- branch and worktree, the user's checkout untouched -----------------------------------------


@pytest.fixture
def busy_repo(repo: Path) -> Path:
    """A repository with a staged file, an unstaged change and an untracked file."""
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "README.md").write_text("changed, not staged\n")
    (repo / "untracked.txt").write_text("untracked\n")
    return repo


def test_init_creates_the_feature_branch_at_head(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    init(repo)
    assert git(repo, "rev-parse", "refs/heads/feature/auth-api") == head


def test_init_leaves_the_checkout_status_unchanged(busy_repo: Path) -> None:
    before = git(busy_repo, "status", "--porcelain")
    init(busy_repo)
    assert git(busy_repo, "status", "--porcelain") == before


def test_init_leaves_head_and_current_branch_unchanged(busy_repo: Path) -> None:
    head = git(busy_repo, "rev-parse", "HEAD")
    init(busy_repo)
    assert git(busy_repo, "rev-parse", "HEAD") == head
    assert git(busy_repo, "symbolic-ref", "--short", "HEAD") == "main\n"


def test_init_keeps_a_staged_change_staged(busy_repo: Path) -> None:
    init(busy_repo)
    assert git(busy_repo, "diff", "--cached", "--name-only") == "staged.txt\n"
    assert (busy_repo / "README.md").read_text() == "changed, not staged\n"


def test_init_adds_a_worktree_of_the_branch_under_tmops_worktrees(repo: Path) -> None:
    result = init(repo)
    worktree = repo / ".tmops/worktrees/auth-api"
    assert result.worktree == worktree
    assert str(worktree) in worktree_paths(repo)
    assert git(worktree, "symbolic-ref", "--short", "HEAD") == "feature/auth-api\n"


def test_worktree_root_in_the_config_moves_the_worktree(repo: Path, tmp_path: Path) -> None:
    config = write_config(repo, "features:\n  worktree_root: ../trees\n")
    result = init(repo, config=config)
    moved = tmp_path / "trees" / "auth-api"
    assert result.worktree == moved
    assert str(moved) in worktree_paths(repo)
    assert not (repo / ".tmops/worktrees").exists()


# -- checkout isolation, the current branch, an explicit branch --------------------------------


def test_checkout_isolation_checks_the_branch_out_in_the_project_root(repo: Path) -> None:
    config = write_config(repo, "features:\n  isolation: checkout\n")
    result = init(repo, config=config)
    assert result.worktree == repo
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "feature/auth-api\n"
    assert worktree_paths(repo) == [str(repo)]
    assert not (repo / ".tmops/worktrees").exists()


def test_use_current_branch_uses_it_in_place_without_a_worktree(repo: Path) -> None:
    result = init(repo, use_current_branch=True)
    assert result.branch == "main"
    assert result.worktree == repo
    assert worktree_paths(repo) == [str(repo)]
    assert not branch_exists(repo, "feature/auth-api")
    assert features_lines(repo)[0].endswith(":main")


def test_explicit_branch_is_used_for_the_feature(repo: Path) -> None:
    result = init(repo, branch="topic/x")
    assert result.branch == "topic/x"
    assert branch_exists(repo, "topic/x")
    assert not branch_exists(repo, "feature/auth-api")
    assert git(result.worktree, "symbolic-ref", "--short", "HEAD") == "topic/x\n"


# -- idempotence -------------------------------------------------------------------------------

VOLATILE = (r"tmops\.db.*", r".*\.lock")


def test_second_init_reports_nothing_changed(repo: Path) -> None:
    init(repo)
    again = init(repo)
    assert again.created is False
    assert again.changes == ()
    assert "nothing changed" in again.message


def test_second_init_changes_no_file_under_tmops(repo: Path) -> None:
    init(repo)
    before = tree_snapshot(repo / ".tmops", skip=VOLATILE)
    init(repo)
    assert tree_snapshot(repo / ".tmops", skip=VOLATILE) == before


def test_second_init_keeps_one_features_line(repo: Path) -> None:
    init(repo)
    init(repo)
    assert len(features_lines(repo)) == 1


# -- retries -------------------------------------------------------------------------------------


def test_retry_creates_runs_retry(repo: Path) -> None:
    init(repo)
    result = init(repo, run_type="retry")
    assert result.run == "retry"
    assert (repo / ".tmops/auth-api/runs/retry/checkpoints").is_dir()
    assert (repo / ".tmops/auth-api/runs/retry/logs").is_dir()


def test_retry_leaves_the_initial_run_untouched(repo: Path) -> None:
    init(repo)
    initial = repo / ".tmops/auth-api/runs/initial"
    (initial / "checkpoints/001-discovery-trigger.md").write_text("plan\n")
    before = tree_snapshot(initial)
    init(repo, run_type="retry")
    assert tree_snapshot(initial) == before


def test_retry_repoints_current(repo: Path) -> None:
    init(repo)
    init(repo, run_type="retry")
    assert os.readlink(repo / ".tmops/auth-api/current") == "runs/retry"


def test_retry_writes_previous_run_txt(repo: Path) -> None:
    init(repo)
    init(repo, run_type="retry")
    assert (repo / ".tmops/auth-api/runs/PREVIOUS_RUN.txt").read_text() == "initial\n"


def test_retry_copies_the_previous_runs_task_spec(repo: Path) -> None:
    first = init(repo)
    first.task_spec.write_text(
        "# Task Specification: auth-api\n\nEdited by hand: login by token.\n"
    )
    retry = init(repo, run_type="retry")
    assert retry.task_spec.read_text() == first.task_spec.read_text()


def test_second_retry_is_retry_2(repo: Path) -> None:
    init(repo)
    init(repo, run_type="retry")
    result = init(repo, run_type="retry")
    assert result.run == "retry-2"
    assert os.readlink(repo / ".tmops/auth-api/current") == "runs/retry-2"
    assert (repo / ".tmops/auth-api/runs/PREVIOUS_RUN.txt").read_text() == "retry\n"


def test_retry_of_an_unknown_feature_is_a_feature_error(repo: Path) -> None:
    with pytest.raises(FeatureError, match="has no run to retry"):
        init(repo, "never-made", run_type="retry")


def test_explicit_run_name_is_used(repo: Path) -> None:
    init(repo)
    result = init(repo, run="cycle-20260101-0930")
    assert result.run == "cycle-20260101-0930"
    assert (repo / ".tmops/auth-api/runs/cycle-20260101-0930/checkpoints").is_dir()
    assert os.readlink(repo / ".tmops/auth-api/current") == "runs/cycle-20260101-0930"


# -- a preflight spec is kept -------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["Created by preflight workflow", "Refined by preflight"])
def test_preflight_task_spec_is_kept_byte_for_byte(repo: Path, marker: str) -> None:
    run = repo / ".tmops/auth-api/runs/initial"
    run.mkdir(parents=True)
    content = f"# Login API\r\n\n<!-- {marker} -->\n## User Story\nAs a user \xe9\t\n".encode()
    (run / "TASK_SPEC.md").write_bytes(content)
    init(repo)
    assert (run / "TASK_SPEC.md").read_bytes() == content


# -- telemetry and the plugin hook --------------------------------------------------------------


def test_init_emits_feature_initialized_with_execution_time(repo: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    config = write_config(repo, f"telemetry:\n  outputs:\n    jsonl:\n      path: {events}\n")
    init(repo, config=config)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    [event] = [e for e in lines if e["event_type"] == "orchestration.feature.initialized"]
    assert event["feature"] == "auth-api"
    assert event["data"]["created"] is True
    assert isinstance(event["data"]["execution_time_ms"], int | float)
    assert event["data"]["execution_time_ms"] >= 0


class Recorder:
    def __init__(self) -> None:
        self.contexts: list[FeatureContext] = []

    @hookimpl
    def tmops_feature_initialized(self, context: FeatureContext) -> None:
        self.contexts.append(context)


@pytest.fixture
def recorded() -> Iterator[tuple[Service, Recorder]]:
    recorder = Recorder()
    plugins = create_plugin_manager(extra=[("recorder", recorder)])
    service = Service(LoadedConfig(Config(), None), plugins)
    yield service, recorder
    service.close()


def test_plugin_hook_receives_the_feature_context(
    repo: Path, recorded: tuple[Service, Recorder]
) -> None:
    service, recorder = recorded
    result = service.init(InitRequest(feature="auth-api", workspace=repo))
    [context] = recorder.contexts
    assert context.feature == "auth-api"
    assert context.run == "initial"
    assert context.branch == "feature/auth-api"
    assert context.project_root == repo
    assert context.worktree == repo / ".tmops/worktrees/auth-api"
    assert context.run_dir == result.run_dir
    assert context.checkpoint_dir == repo / ".tmops/auth-api/runs/initial/checkpoints"


def test_plugin_hook_is_not_called_when_nothing_changed(
    repo: Path, recorded: tuple[Service, Recorder]
) -> None:
    service, recorder = recorded
    service.init(InitRequest(feature="auth-api", workspace=repo))
    service.init(InitRequest(feature="auth-api", workspace=repo))
    assert len(recorder.contexts) == 1


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_init_prints_the_message_changes_and_next_steps(repo: Path) -> None:
    result = run_cli("init", "auth-api", "--workspace", str(repo))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Initialised feature 'auth-api' run 'initial'")
    assert "  + branch feature/auth-api" in lines
    assert f"  + worktree {repo / '.tmops/worktrees/auth-api'}" in lines
    assert "next:" in lines
    assert "  - Start the workflow: tmops start auth-api (MCP: tmops_start_orchestration)" in lines


def test_cli_init_from_inside_the_repository(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "src").mkdir()
    monkeypatch.chdir(repo / "src")
    result = run_cli("init", "auth-api")
    assert result.exit_code == 0
    assert (repo / ".tmops/auth-api/current").is_symlink()


def test_cli_init_json_has_the_structured_result(repo: Path) -> None:
    result = run_cli("init", "auth-api", "--workspace", str(repo), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["feature"] == "auth-api"
    assert data["branch"] == "feature/auth-api"
    assert data["workspace"] == str(repo)
    assert data["task_spec"] == str(repo / ".tmops/auth-api/runs/initial/TASK_SPEC.md")
    assert data["worktree"] == str(repo / ".tmops/worktrees/auth-api")
    assert datetime.fromisoformat(data["timestamp"]).tzinfo is not None
    assert data["execution_time_ms"] > 0
    assert len(data["next_steps"]) == 3
