"""``tmops init``: the upstream tree, the branch and worktree, idempotence, retries, errors.

Everything runs for real: git repositories in ``tmp_path``, real processes, no mocks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tmops_core.cli import cli
from tmops_core.config import Config, LoadedConfig
from tmops_core.features import InitRequest, InitResult
from tmops_core.plugins import create_plugin_manager
from tmops_core.service import Service
from tmops_hookspecs import FeatureContext, FeatureError, TmopsError, WorkspaceError, hookimpl

TMOPS = str(Path(sys.executable).with_name("tmops"))
NOBODY = 65534
SCRIPT = "tmops_v6_portable/tmops_tools/init_feature_multi.sh"
SECTIONS = ("User Story", "Acceptance Criteria", "Technical Constraints", "Definition of Done")


# -- helpers -----------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def branch_exists(repo: Path, branch: str) -> bool:
    result = subprocess.run(
        [
            "git",
            "-c",
            "safe.directory=*",
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/heads/{branch}",
        ],
        cwd=repo,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def worktree_paths(repo: Path) -> list[str]:
    lines = git(repo, "worktree", "list", "--porcelain").splitlines()
    return [line.removeprefix("worktree ") for line in lines if line.startswith("worktree ")]


def write_config(repo: Path, text: str) -> Path:
    path = repo / "tmops.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def init(
    repo: Path, feature: str = "auth-api", *, config: Path | None = None, **kw: Any
) -> InitResult:
    service = Service.load(config)
    try:
        return service.init(InitRequest(feature=feature, workspace=repo, **kw))
    finally:
        service.close()


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


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


def repo_state(repo: Path) -> tuple[set[str], str, str]:
    """All paths under the repository (.git included), its refs and its worktrees."""
    paths = set()
    for folder, dirs, files in os.walk(repo):
        paths.update(str(Path(folder, name).relative_to(repo)) for name in (*dirs, *files))
    refs = git(repo, "for-each-ref")
    worktrees = git(repo, "worktree", "list", "--porcelain")
    return paths, refs, worktrees


def features_lines(repo: Path) -> list[str]:
    return (repo / ".tmops" / "FEATURES.txt").read_text().splitlines()


# -- 1. the upstream tree -----------------------------------------------------------------------


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


# -- 2. branch and worktree, the user's checkout untouched --------------------------------------


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


# -- 3. checkout isolation, the current branch, an explicit branch -----------------------------


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


# -- 4. idempotence ----------------------------------------------------------------------------

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


# -- 5. retries ----------------------------------------------------------------------------------


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


# -- 6. a preflight spec is kept ----------------------------------------------------------------


@pytest.mark.parametrize("marker", ["Created by preflight workflow", "Refined by preflight"])
def test_preflight_task_spec_is_kept_byte_for_byte(repo: Path, marker: str) -> None:
    run = repo / ".tmops/auth-api/runs/initial"
    run.mkdir(parents=True)
    content = f"# Login API\r\n\n<!-- {marker} -->\n## User Story\nAs a user \xe9\t\n".encode()
    (run / "TASK_SPEC.md").write_bytes(content)
    init(repo)
    assert (run / "TASK_SPEC.md").read_bytes() == content


# -- 7. malicious names -------------------------------------------------------------------------

BAD_NAMES = [
    "'; rm -rf /; #",
    "../../../etc/passwd",
    "\x00\x01\x02",
    "A" * 1000,
    "feature-${EVIL_VAR}",
    "<script>alert('xss')</script>",
    "-leading",
    "trailing-",
    "ab",
    "a" * 21,
    "Upper",
    "auth api",
    "\u0430uth-api",  # Cyrillic a
    "auth\u2010api",  # unicode hyphen
    "\uff41uth",  # fullwidth a
    "auth\n",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_feature_name_is_refused_saying_what_is_allowed(repo: Path, name: str) -> None:
    with pytest.raises(FeatureError, match="3 to 20 characters"):
        init(repo, name)


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_feature_name_changes_nothing_in_the_repository(repo: Path, name: str) -> None:
    before = repo_state(repo)
    with pytest.raises(FeatureError):
        init(repo, name)
    assert repo_state(repo) == before


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_feature_name_through_the_cli_is_a_one_line_error(repo: Path, name: str) -> None:
    before = repo_state(repo)
    result = run_cli("init", "--workspace", str(repo), "--", name)
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("Error: invalid feature name")
    assert "Traceback" not in result.stderr
    assert repo_state(repo) == before


# -- 8. clear errors ----------------------------------------------------------------------------


def test_outside_a_git_repository_is_a_workspace_error() -> None:
    with pytest.raises(WorkspaceError, match="not inside a git repository"):
        init(Path.cwd())


def test_repository_without_commits_is_a_workspace_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(WorkspaceError, match="no commits"):
        init(empty)


def test_missing_git_is_a_workspace_error(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nothing = tmp_path / "no-bin"
    nothing.mkdir()
    monkeypatch.setenv("PATH", str(nothing))
    with pytest.raises(WorkspaceError, match="git is not installed"):
        init(repo)


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_taken_worktree_path_is_an_error_naming_it(repo: Path, kind: str) -> None:
    taken = repo / ".tmops/worktrees/auth-api"
    taken.parent.mkdir(parents=True)
    if kind == "file":
        taken.write_text("mine\n")
    else:
        taken.mkdir()
    with pytest.raises(WorkspaceError) as caught:
        init(repo)
    assert str(taken) in str(caught.value)


def test_taken_worktree_path_leaves_no_branch_and_no_feature_folder(repo: Path) -> None:
    taken = repo / ".tmops/worktrees/auth-api"
    taken.mkdir(parents=True)
    with pytest.raises(WorkspaceError):
        init(repo)
    assert not branch_exists(repo, "feature/auth-api")
    assert not os.path.lexists(repo / ".tmops/auth-api")
    assert sorted(taken.parent.iterdir()) == [taken]


@pytest.fixture
def nobody_project() -> Iterator[tuple[Path, dict[str, str]]]:
    """A project owned by user nobody whose ``.tmops`` belongs to root (mode 0755)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv to run tmops as another user")
    # Not under tmp_path: pytest's base folder is private to root, so nobody could not enter it.
    base = Path(tempfile.mkdtemp(prefix="tmops-nobody-"))
    try:
        yield _nobody_project(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _nobody_project(base: Path) -> tuple[Path, dict[str, str]]:
    home = base / "home"
    home.mkdir()
    (home / "gitconfig").write_text("[safe]\n\tdirectory = *\n")
    project = base / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    identity = ("-c", "user.name=t", "-c", "user.email=t@t.invalid")
    git(project, *identity, "commit", "-q", "--allow-empty", "-m", "initial commit")
    for folder, dirs, files in os.walk(base):
        for name in (".", *dirs, *files):
            os.chown(Path(folder, name), NOBODY, NOBODY, follow_symlinks=False)
    (project / ".tmops").mkdir(mode=0o755)
    (project / ".tmops").chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": str(home / "gitconfig"),
        "LC_ALL": "C",
    }
    return project, env


def run_as_nobody(
    project: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", TMOPS]
    return subprocess.run(
        [*argv, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unwritable_tmops_is_a_clear_error_saying_how_to_fix_it(
    nobody_project: tuple[Path, dict[str, str]],
) -> None:
    project, env = nobody_project
    result = run_as_nobody(project, env, "init", "auth-api")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(project / ".tmops") in result.stderr
    assert "chmod" in result.stderr or "chown" in result.stderr


def test_unwritable_tmops_creates_no_branch(nobody_project: tuple[Path, dict[str, str]]) -> None:
    project, env = nobody_project
    result = run_as_nobody(project, env, "init", "auth-api")
    assert result.returncode != 0
    assert not branch_exists(project, "feature/auth-api")
    assert os.listdir(project / ".tmops") == []


# -- 9. a failure part-way leaves nothing behind -----------------------------------------------


def assert_nothing_left(repo: Path) -> None:
    tmops = repo / ".tmops"
    assert not branch_exists(repo, "feature/auth-api")
    assert not os.path.lexists(tmops / "auth-api")
    assert [p.name for p in tmops.iterdir() if p.name.startswith(".staging-")] == []
    features = tmops / "FEATURES.txt"
    assert not features.exists() or "auth-api:" not in features.read_text()


def test_worktree_path_registered_on_another_branch_fails_after_the_branch_cleanly(
    repo: Path,
) -> None:
    # The branch is created first; the worktree step then finds the path used by another branch.
    git(repo, "worktree", "add", "-q", "-b", "other", str(repo / ".tmops/worktrees/auth-api"))
    with pytest.raises(WorkspaceError, match="has branch other checked out"):
        init(repo)
    assert_nothing_left(repo)


def test_failing_git_worktree_add_undoes_the_new_branch(repo: Path) -> None:
    # git cannot register any worktree when .git/worktrees is a file: `git worktree add` fails
    # for real, after tmops has created the branch.
    (repo / ".git/worktrees").write_text("not a folder\n")
    with pytest.raises(WorkspaceError, match="git worktree failed"):
        init(repo)
    assert_nothing_left(repo)


def test_worktree_root_being_a_file_leaves_nothing_behind(repo: Path) -> None:
    (repo / ".tmops").mkdir()
    (repo / ".tmops/worktrees").write_text("a file where the worktrees go\n")
    with pytest.raises((TmopsError, OSError)):
        init(repo)
    assert_nothing_left(repo)


def test_worktree_root_being_a_file_is_a_workspace_error(repo: Path) -> None:
    (repo / ".tmops").mkdir()
    (repo / ".tmops/worktrees").write_text("a file where the worktrees go\n")
    with pytest.raises(WorkspaceError, match=re.escape(str(repo / ".tmops/worktrees"))):
        init(repo)


# -- 10. delegation to a legacy init_feature_multi.sh ------------------------------------------

UPSTREAM_SCRIPT = """\
#!/bin/sh
printf '%s\\n' "$@" > "{argv_file}"
feature="$1"
branch="feature/$feature"
make_branch=yes
[ "$3" = "--branch" ] && branch="$4"
[ "$3" = "--use-current-branch" ] && make_branch=no && branch="$(git symbolic-ref --short HEAD)"
dir=".tmops/$feature"
mkdir -p "$dir/runs/initial/checkpoints" "$dir/runs/initial/logs"
mkdir -p "$dir/docs/internal" "$dir/docs/external" "$dir/docs/archive" "$dir/docs/images"
printf '# Task Specification: %s\\n' "$feature" > "$dir/runs/initial/TASK_SPEC.md"
ln -s runs/initial "$dir/current"
printf '%s:initialized:2025-08-20T09:34:30Z:%s\\n' "$feature" "$branch" >> .tmops/FEATURES.txt
if [ "$make_branch" = yes ]; then git branch "$branch"; fi
"""


def legacy(repo: Path, body: str, *, timeout: int | None = None, mode: int = 0o755) -> Path:
    script = repo / SCRIPT
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(body)
    script.chmod(mode)
    extra = f"\n  init_timeout: {timeout}" if timeout else ""
    return write_config(repo, f"paths:\n  init_script: {SCRIPT}{extra}\n")


@pytest.fixture
def argv_file(tmp_path: Path) -> Path:
    return tmp_path / "argv.txt"


def test_legacy_script_runs_with_feature_and_run_type(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    init(repo, config=config)
    assert argv_file.read_text().splitlines() == ["auth-api", "initial"]


def test_legacy_script_result_is_reported(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    result = init(repo, config=config)
    assert result.created is True
    assert result.changes == ("ran init_feature_multi.sh",)
    assert result.run == "initial"
    assert result.branch == "feature/auth-api"
    assert branch_exists(repo, "feature/auth-api")


def test_legacy_script_gets_use_current_branch(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    init(repo, config=config, use_current_branch=True)
    assert argv_file.read_text().splitlines() == ["auth-api", "initial", "--use-current-branch"]


def test_legacy_script_gets_the_branch_as_one_argument_without_a_shell(
    repo: Path, argv_file: Path
) -> None:
    # A valid git ref that a shell would run as two commands.
    branch = "topic/x;touch${IFS}pwned"
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    init(repo, config=config, branch=branch)
    assert argv_file.read_text().splitlines() == ["auth-api", "initial", "--branch", branch]
    assert not (repo / "pwned").exists()
    assert not Path("pwned").exists()


def test_legacy_init_reports_a_worktree_that_exists(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file))
    result = init(repo, config=config)
    assert result.worktree.is_dir()


def test_legacy_script_failure_reports_exit_code_and_stderr(repo: Path) -> None:
    config = legacy(repo, "#!/bin/sh\necho boom >&2\nexit 3\n")
    with pytest.raises(WorkspaceError, match="exit code 3") as caught:
        init(repo, config=config)
    assert "boom" in str(caught.value)


def test_legacy_script_that_creates_nothing_is_an_error(repo: Path) -> None:
    config = legacy(repo, "#!/bin/sh\nexit 0\n")
    with pytest.raises(WorkspaceError, match="exited 0 but did not create") as caught:
        init(repo, config=config)
    assert ".tmops/auth-api/current" in str(caught.value)


def test_legacy_script_that_creates_part_lists_what_is_missing(repo: Path) -> None:
    body = (
        "#!/bin/sh\n"
        'mkdir -p ".tmops/$1/runs/initial/checkpoints"\n'
        'ln -s runs/initial ".tmops/$1/current"\n'
    )
    config = legacy(repo, body)
    with pytest.raises(WorkspaceError) as caught:
        init(repo, config=config)
    message = str(caught.value)
    for missing in (
        ".tmops/auth-api/runs/initial/logs",
        ".tmops/auth-api/runs/initial/TASK_SPEC.md",
        ".tmops/auth-api/docs/internal",
        "a FEATURES.txt line",
        "branch feature/auth-api",
    ):
        assert missing in message
    assert "checkpoints" not in message


def test_legacy_script_that_runs_too_long_times_out(repo: Path) -> None:
    config = legacy(repo, "#!/bin/sh\nexec sleep 30\n", timeout=1)
    with pytest.raises(WorkspaceError, match="did not finish within 1 s"):
        init(repo, config=config)


def test_legacy_script_that_is_not_executable_is_an_error(repo: Path, argv_file: Path) -> None:
    config = legacy(repo, UPSTREAM_SCRIPT.format(argv_file=argv_file), mode=0o644)
    with pytest.raises(WorkspaceError, match="not an executable file"):
        init(repo, config=config)
    assert not argv_file.exists()


# -- 11. telemetry and the plugin hook ----------------------------------------------------------


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


# -- 12. the CLI -------------------------------------------------------------------------------


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
