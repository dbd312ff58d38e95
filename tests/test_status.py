"""``tmops status`` and ``tmops list``: the state of features, from files and the store only."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tmops_core.service.operations import Service
from tmops_core.surfaces.cli import cli
from tmops_core.workspace.features import InitRequest, InitResult
from tmops_hookspecs import FeatureError

PHASES = [
    ("orchestrator", "orchestrator", "001-discovery-trigger.md"),
    ("tester", "tester", "003-tests-complete.md"),
    ("implementer", "implementer", "005-impl-complete.md"),
    ("verifier", "verifier", "007-verify-complete.md"),
]
COMPLETIONS = [checkpoint for _, _, checkpoint in PHASES]


@pytest.fixture
def service() -> Iterator[Service]:
    service = Service.load()
    yield service
    service.close()


def init(service: Service, repo: Path, feature: str = "auth-api", **kw: Any) -> InitResult:
    return service.init(InitRequest(feature=feature, workspace=repo, **kw))


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def checkpoint(repo: Path, name: str, feature: str = "auth-api", run: str = "initial") -> Path:
    path = repo / ".tmops" / feature / "runs" / run / "checkpoints" / name
    path.write_text(f"# Checkpoint: {name}\n**Feature:** {feature}\n")
    return path


@pytest.fixture
def initialised(service: Service, repo: Path) -> Path:
    init(service, repo)
    return repo


# -- 1. a feature just initialised --------------------------------------------------------------


def test_new_feature_is_initialized_with_no_current_phase(
    service: Service, initialised: Path
) -> None:
    status = service.status("auth-api", workspace=initialised)
    assert status["feature"] == "auth-api"
    assert status["status"] == "initialized"
    assert status["current_phase"] is None
    assert status["run"] == "initial"
    assert status["branch"] == "feature/auth-api"


def test_new_feature_has_four_pending_phases_with_their_completion_checkpoints(
    service: Service, initialised: Path
) -> None:
    progress = service.status("auth-api", workspace=initialised)["phase_progress"]
    assert progress["completed"] == 0
    assert progress["total"] == 4
    assert [(p["phase"], p["role"], p["completion_checkpoint"]) for p in progress["phases"]] == (
        PHASES
    )
    assert {p["status"] for p in progress["phases"]} == {"pending"}


def test_new_feature_has_no_sessions_started(service: Service, initialised: Path) -> None:
    sessions = service.status("auth-api", workspace=initialised)["sessions"]
    assert set(sessions) == {"orchestrator", "tester", "implementer", "verifier"}
    for session in sessions.values():
        assert session["state"] == "not_started"
        assert session["session_id"] is None


def test_new_feature_has_no_checkpoints(service: Service, initialised: Path) -> None:
    assert service.status("auth-api", workspace=initialised)["checkpoints"] == []


def test_new_feature_next_action_is_to_edit_the_spec(service: Service, initialised: Path) -> None:
    status = service.status("auth-api", workspace=initialised)
    assert status["next_action"].startswith("edit TASK_SPEC.md, then start")


# -- 2. checkpoints written by hand ----------------------------------------------------------


def test_hand_written_trigger_shows_the_orchestrator_written_and_the_tester_started(
    service: Service, initialised: Path
) -> None:
    checkpoint(initialised, "001-discovery-trigger.md")
    status = service.status("auth-api", workspace=initialised)
    phases = {p["phase"]: p["status"] for p in status["phase_progress"]["phases"]}
    assert phases == {
        "orchestrator": "written",
        "tester": "in_progress",
        "implementer": "pending",
        "verifier": "pending",
    }
    assert status["status"] == "in_progress"
    assert status["current_phase"] == "tester"
    assert status["sessions"]["tester"]["state"] == "active"


def test_hand_written_checkpoint_is_listed_with_status_and_iso_timestamp(
    service: Service, initialised: Path
) -> None:
    checkpoint(initialised, "001-discovery-trigger.md")
    [listed] = service.status("auth-api", workspace=initialised)["checkpoints"]
    assert listed["name"] == "001-discovery-trigger.md"
    assert listed["status"] == "trigger"
    assert datetime.fromisoformat(listed["timestamp"]).tzinfo is not None


def test_hand_written_checkpoints_never_make_a_feature_completed(
    service: Service, initialised: Path
) -> None:
    """Completed comes from the run record only: files nobody checked are "written"."""
    for name in COMPLETIONS:
        checkpoint(initialised, name)
    status = service.status("auth-api", workspace=initialised)
    assert status["status"] == "in_progress"
    assert status["current_phase"] is None
    assert status["phase_progress"]["completed"] == 0
    assert {p["status"] for p in status["phase_progress"]["phases"]} == {"written"}
    assert status["next_action"].startswith("tmops start auth-api checks the 4 checkpoint(s)")


def test_symlinks_and_other_files_are_not_checkpoints(
    service: Service, initialised: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "fake.md"
    elsewhere.write_text("not a checkpoint\n")
    folder = initialised / ".tmops/auth-api/runs/initial/checkpoints"
    (folder / "003-tests-complete.md").symlink_to(elsewhere)
    (folder / "notes.txt").write_text("notes\n")
    checkpoint(initialised, "001-discovery-trigger.md")
    status = service.status("auth-api", workspace=initialised)
    assert [c["name"] for c in status["checkpoints"]] == ["001-discovery-trigger.md"]
    assert status["current_phase"] == "tester"


# -- 3. optional parts -------------------------------------------------------------------------


def test_include_sessions_false_omits_sessions(service: Service, initialised: Path) -> None:
    status = service.status("auth-api", workspace=initialised, include_sessions=False)
    assert "sessions" not in status
    assert "checkpoints" in status


def test_include_checkpoints_false_omits_checkpoints(service: Service, initialised: Path) -> None:
    status = service.status("auth-api", workspace=initialised, include_checkpoints=False)
    assert "checkpoints" not in status
    assert "sessions" in status


# -- 4. unknown and invalid features --------------------------------------------------------


def test_unknown_feature_is_a_feature_error_naming_it(service: Service, initialised: Path) -> None:
    with pytest.raises(FeatureError, match="no feature named 'never-made'"):
        service.status("never-made", workspace=initialised)


@pytest.mark.parametrize("name", ["../auth-api", "Auth-Api", "-x", "a", "auth\n"], ids=repr)
def test_invalid_name_is_a_feature_error(service: Service, initialised: Path, name: str) -> None:
    with pytest.raises(FeatureError, match="not a valid feature name"):
        service.status(name, workspace=initialised)


# -- 5. status starts no process --------------------------------------------------------------


def test_status_runs_no_subprocess_and_no_git(
    service: Service, initialised: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint(initialised, "001-discovery-trigger.md")

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("status started a process")

    with monkeypatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", forbidden)
        patch.setattr(os, "posix_spawn", forbidden)
        patch.setattr(os, "fork", forbidden)
        status = service.status("auth-api", workspace=initialised)
        listed = service.list_features(workspace=initialised)
    assert status["current_phase"] == "tester"
    assert [row["feature"] for row in listed] == ["auth-api"]


# -- 6. where status is run from ----------------------------------------------------------------


def test_status_from_a_subfolder_of_the_project(
    service: Service, initialised: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = initialised / "src" / "pkg"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert service.status("auth-api")["status"] == "initialized"


def test_status_from_inside_the_feature_worktree(
    service: Service, initialised: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(initialised / ".tmops/worktrees/auth-api")
    status = service.status("auth-api")
    assert status["status"] == "initialized"
    assert status["task_spec"] == str(initialised / ".tmops/auth-api/runs/initial/TASK_SPEC.md")


def test_status_from_a_worktree_outside_the_project(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = repo / "tmops.yaml"
    config.write_text("features:\n  worktree_root: ../trees\n")
    config.chmod(0o600)
    service = Service.load(config)
    try:
        result = init(service, repo)
        assert result.worktree == tmp_path / "trees/auth-api"
        monkeypatch.chdir(result.worktree)
        assert service.status("auth-api")["status"] == "initialized"
    finally:
        service.close()


@pytest.fixture
def hand_made(repo: Path) -> Path:
    """A feature laid out by hand the upstream way, without tmops (so without a store)."""
    feature = repo / ".tmops/hand-made"
    (feature / "runs/initial/checkpoints").mkdir(parents=True)
    (feature / "current").symlink_to("runs/initial")
    (repo / ".tmops/FEATURES.txt").write_text(
        "hand-made:initialized:2025-08-20T09:34:30Z:feature/hand-made\n"
    )
    return repo


def test_status_of_a_feature_made_by_hand_without_tmops(service: Service, hand_made: Path) -> None:
    checkpoint(hand_made, "001-discovery-trigger.md", feature="hand-made")
    status = service.status("hand-made", workspace=hand_made)
    assert status["run"] == "initial"
    assert status["branch"] == "feature/hand-made"
    assert status["current_phase"] == "tester"
    assert status["worktree"] is None


def test_status_of_a_hand_made_feature_creates_no_store(service: Service, hand_made: Path) -> None:
    service.status("hand-made", workspace=hand_made)
    assert sorted(p.name for p in (hand_made / ".tmops").iterdir()) == ["FEATURES.txt", "hand-made"]


# -- 7. list and the CLI --------------------------------------------------------------------


def test_list_shows_each_feature_with_branch_run_status_and_update(
    service: Service, repo: Path
) -> None:
    init(service, repo, "auth-api")
    init(service, repo, "billing")
    rows = service.list_features(workspace=repo)
    assert [(r["feature"], r["branch"], r["run"], r["status"]) for r in rows] == [
        ("auth-api", "feature/auth-api", "initial", "initialized"),
        ("billing", "feature/billing", "initial", "initialized"),
    ]
    assert all(datetime.fromisoformat(r["updated"]).tzinfo is not None for r in rows)


def test_list_shows_the_retry_run(service: Service, repo: Path) -> None:
    init(service, repo, "auth-api")
    init(service, repo, "auth-api", run_type="retry")
    [row] = service.list_features(workspace=repo)
    assert row["run"] == "retry"


def test_list_includes_a_feature_made_by_hand(service: Service, hand_made: Path) -> None:
    [row] = service.list_features(workspace=hand_made)
    assert (row["feature"], row["run"], row["status"]) == ("hand-made", "initial", "initialized")


def test_cli_list_prints_a_table(service: Service, repo: Path) -> None:
    init(service, repo, "auth-api")
    init(service, repo, "billing")
    result = run_cli("list", "--workspace", str(repo))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "FEATURE", "BRANCH", "RUN", "STATUS", "PHASE", "ELAPSED", "COST", "UPDATED"
    ]  # fmt: skip
    assert [line.split()[:4] for line in lines[1:]] == [
        ["auth-api", "feature/auth-api", "initial", "initialized"],
        ["billing", "feature/billing", "initial", "initialized"],
    ]


def test_cli_list_json(service: Service, initialised: Path) -> None:
    result = run_cli("list", "--workspace", str(initialised), "--json")
    assert result.exit_code == 0
    [row] = json.loads(result.stdout)["features"]
    assert row["feature"] == "auth-api"
    assert row["branch"] == "feature/auth-api"
    assert row["run"] == "initial"
    assert row["status"] == "initialized"


def test_cli_list_in_an_empty_repository_says_no_features_yet(repo: Path) -> None:
    result = run_cli("list", "--workspace", str(repo))
    assert result.exit_code == 0
    assert result.stdout.startswith("no features yet")


def test_cli_status_prints_phases_checkpoints_and_next_action(
    service: Service, initialised: Path
) -> None:
    checkpoint(initialised, "001-discovery-trigger.md")
    result = run_cli("status", "auth-api", "--workspace", str(initialised))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "auth-api: in_progress (run initial, feature/auth-api)"
    assert lines[1] == "phases: 0/4 completed"
    assert lines[2].split() == ["orchestrator", "written"]
    assert lines[3].split() == ["tester", "in_progress"]
    assert lines[6] == "checkpoints:"
    assert lines[7].split()[0] == "001-discovery-trigger.md"
    assert lines[-1] == "next: waiting for 003-tests-complete.md from the tester"


def test_cli_status_json(service: Service, initialised: Path) -> None:
    result = run_cli("status", "auth-api", "--workspace", str(initialised), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data == service.status("auth-api", workspace=initialised)


def test_cli_status_of_an_unknown_feature_exits_1(initialised: Path) -> None:
    result = run_cli("status", "never-made", "--workspace", str(initialised))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no feature named 'never-made'")
    assert "Traceback" not in result.stderr
