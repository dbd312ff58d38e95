"""tmops rollback: a phase and the ones after it go back by the phase's preserve rules, after a
backup ref of the worktree as it was; nothing is ever lost."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_hookspecs import FeatureError

from .engine_support import Finished, git, run_workflow, scripted_config, serve
from .takeover_support import TMOPS

RUN = "initial"
TESTS = "tests/test_slug.py"
CODE = "slug.py"


@pytest.fixture
def finished(tmp_path: Path) -> Finished:
    """A completed run of the four phases (scripted agent)."""
    done = run_workflow(tmp_path, scripted_config(tmp_path / "state"))
    assert done.status()["status"] == "completed"
    return done


def _head(done: Finished) -> str:
    return git(done.root, "rev-parse", f"refs/heads/feature/{DEMO_FEATURE}").strip()


def _start_ref(done: Finished, phase: str) -> str:
    return git(done.root, "rev-parse", f"refs/tmops/{DEMO_FEATURE}/{RUN}/{phase}-start").strip()


def _phases(done: Finished) -> dict[str, str]:
    return {p["phase"]: p["status"] for p in done.status()["phase_progress"]["phases"]}


def _worktree(done: Finished) -> Path:
    return Path(done.init.worktree)


def _run_dir(done: Finished) -> Path:
    return done.root / ".tmops" / DEMO_FEATURE / "runs" / RUN


def test_a_dry_run_lists_what_would_change_and_changes_nothing(finished: Finished) -> None:
    head = _head(finished)
    before = sorted(p.name for p in (_run_dir(finished) / "checkpoints").iterdir())
    plan = finished.service.rollback(
        DEMO_FEATURE, phase="implementer", dry_run=True, workspace=finished.root
    )
    assert plan["dry_run"] is True
    assert plan["target"] == _start_ref(finished, "implementer")
    assert [u["subject"] for u in plan["undone"]][-1] == "feat(slug): add slugify"
    assert CODE in plan["reverted"]
    assert any(p.endswith("005-impl-complete.md") for p in plan["set_aside"])
    assert any(p.endswith("SUMMARY.md") for p in plan["set_aside"])
    assert plan["phases"] == ["implementer", "verifier"]
    # nothing changed: branch, files, checkpoints, state, no backup ref
    assert _head(finished) == head
    assert (_worktree(finished) / CODE).is_file()
    assert sorted(p.name for p in (_run_dir(finished) / "checkpoints").iterdir()) == before
    assert finished.status()["status"] == "completed"
    refs = git(finished.root, "for-each-ref", "--format=%(refname)", "refs/tmops/")
    assert "backup-" not in refs


def test_implementer_rollback_keeps_the_tests_and_undoes_the_code(finished: Finished) -> None:
    head = _head(finished)
    answer = finished.service.rollback(DEMO_FEATURE, phase="implementer", workspace=finished.root)
    worktree = _worktree(finished)
    assert _head(finished) == _start_ref(finished, "implementer") == answer["target"]
    assert not (worktree / CODE).exists()
    assert (worktree / TESTS).is_file()
    assert git(worktree, "status", "--porcelain").strip() == ""
    # the run pauses rolled_back; only the rolled-back phases are pending again
    status = finished.status()
    assert (status["status"], status["pause_reason"]) == ("paused", "rolled_back")
    assert _phases(finished) == {
        "orchestrator": "completed", "tester": "completed",
        "implementer": "pending", "verifier": "pending",
    }  # fmt: skip
    # the sessions count from the reset: nothing ran since
    sessions = status["sessions"]
    assert (sessions["implementer"]["attempts"], sessions["implementer"]["session_id"]) == (0, None)
    assert sessions["tester"]["attempts"] == 1
    # their checkpoints and the run's outputs are set aside, not deleted
    backup_dir = Path(answer["backup_dir"])
    assert sorted(p.name for p in backup_dir.iterdir()) == [
        "005-impl-complete.md", "006-verify-trigger.md", "007-verify-complete.md", "SUMMARY.md",
        "metrics.json",
    ]  # fmt: skip
    assert not (_run_dir(finished) / "checkpoints" / "SUMMARY.md").exists()
    assert (_run_dir(finished) / "checkpoints" / "003-tests-complete.md").is_file()
    # the backup ref holds the branch as it was
    assert git(finished.root, "rev-parse", answer["backup_ref"]).strip() == head
    events = [e for e in finished.events() if e["event_type"] == "orchestration.run.rolled_back"]
    assert events
    assert events[-1]["data"]["backup_ref"] == answer["backup_ref"]
    # and the run goes on: the implementer runs again and the run completes
    finished.service.start(DEMO_FEATURE, resume=True, workspace=finished.root, spawn=False)
    serve(finished.service, finished.root)
    assert finished.status()["status"] == "completed"
    assert [a.state for a in finished.attempts("implementer")] == [
        "completed", "reset", "completed",
    ]  # fmt: skip
    assert [a.state for a in finished.attempts("tester")] == ["completed"]
    assert (worktree / CODE).is_file()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_tester_rollback_keeps_its_tests_uncommitted_and_goes_back_to_the_plan(
    finished: Finished,
) -> None:
    tests_text = (_worktree(finished) / TESTS).read_text()
    finished.service.rollback(DEMO_FEATURE, phase="tester", workspace=finished.root)
    worktree = _worktree(finished)
    assert _head(finished) == _start_ref(finished, "tester")
    assert not (worktree / CODE).exists()
    # the tests survive, as they were, for the tester that runs again to commit
    assert (worktree / TESTS).read_text() == tests_text
    assert git(worktree, "status", "--porcelain").split() == ["??", TESTS]
    assert (_run_dir(finished) / "checkpoints" / "001-discovery-trigger.md").is_file()
    # later phases' markers pointed into the history left behind: gone (the backup has it)
    missing = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet",
         f"refs/tmops/{DEMO_FEATURE}/{RUN}/implementer-start"],
        cwd=finished.root, capture_output=True, check=False,
    )  # fmt: skip
    assert missing.returncode != 0
    finished.service.start(DEMO_FEATURE, resume=True, workspace=finished.root, spawn=False)
    serve(finished.service, finished.root)
    assert finished.status()["status"] == "completed"
    log = git(worktree, "log", "--format=%s", f"{_start_ref(finished, 'tester')}..HEAD")
    assert "test(slug)" in log
    assert "feat(slug)" in log


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_orchestrator_rollback_returns_to_the_initial_state_and_keeps_the_task_spec(
    finished: Finished,
) -> None:
    task_spec = finished.init.task_spec.read_text()
    start = _start_ref(finished, "orchestrator")
    finished.service.rollback(DEMO_FEATURE, phase="orchestrator", workspace=finished.root)
    worktree = _worktree(finished)
    assert _head(finished) == start
    assert not (worktree / TESTS).exists()
    assert not (worktree / CODE).exists()
    assert git(worktree, "status", "--porcelain").strip() == ""
    assert finished.init.task_spec.read_text() == task_spec
    assert set(_phases(finished).values()) == {"pending"}
    assert list((_run_dir(finished) / "checkpoints").glob("0*.md")) == []


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_verifier_rollback_keeps_code_and_tests_and_sets_aside_only_its_outputs(
    finished: Finished,
) -> None:
    head = _head(finished)
    answer = finished.service.rollback(DEMO_FEATURE, phase="verifier", workspace=finished.root)
    assert answer["target"] is None
    assert answer["reverted"] == []
    assert _head(finished) == head
    assert (_worktree(finished) / CODE).is_file()
    assert (_worktree(finished) / TESTS).is_file()
    assert sorted(Path(p).name for p in answer["set_aside"]) == [
        "007-verify-complete.md", "SUMMARY.md", "metrics.json",
    ]  # fmt: skip
    assert _phases(finished)["verifier"] == "pending"
    assert _phases(finished)["implementer"] == "completed"


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_nothing_is_lost_uncommitted_work_is_restored_from_the_backup_ref(
    finished: Finished,
) -> None:
    worktree = _worktree(finished)
    (worktree / "notes.txt").write_text("a person's notes, never committed\n")
    (worktree / CODE).write_text((worktree / CODE).read_text() + "# edited by hand\n")
    head = _head(finished)
    answer = finished.service.rollback(DEMO_FEATURE, phase="implementer", workspace=finished.root)
    assert not (worktree / "notes.txt").exists()
    assert not (worktree / CODE).exists()
    backup = answer["backup_ref"]
    # the backup is the worktree as it was, on top of the branch as it was
    assert git(finished.root, "rev-parse", f"{backup}^").strip() == head
    git(worktree, "checkout", backup, "--", ".")
    assert (worktree / "notes.txt").read_text() == "a person's notes, never committed\n"
    assert (worktree / CODE).read_text().endswith("# edited by hand\n")


def test_rollback_is_refused_with_what_to_do(finished: Finished, tmp_path: Path) -> None:
    with pytest.raises(FeatureError, match="not a phase of the workflow"):
        finished.service.rollback(DEMO_FEATURE, phase="reviewer", workspace=finished.root)
    finished.service.rollback(DEMO_FEATURE, phase="implementer", workspace=finished.root)
    with pytest.raises(FeatureError, match=r"has not run .* since it was last sent back"):
        finished.service.rollback(DEMO_FEATURE, phase="verifier", workspace=finished.root)
    finished.service.start(DEMO_FEATURE, resume=True, workspace=finished.root, spawn=False)
    with pytest.raises(FeatureError, match="queued: an engine is working on it") as caught:
        finished.service.rollback(DEMO_FEATURE, phase="tester", workspace=finished.root)
    assert "tmops pause" in (caught.value.hint or "")


def test_rollback_from_the_cli_with_json_and_exit_codes(finished: Finished) -> None:
    config = finished.root.parent / "tmops.yaml"
    config.write_text(json.dumps(scripted_config(finished.root.parent / "state")))
    config.chmod(0o600)

    def tmops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TMOPS, "--config", str(config), *args, "--workspace", str(finished.root)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    dry = tmops("rollback", DEMO_FEATURE, "--phase", "tester", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("dry run, nothing changed")
    assert "undo" in dry.stdout
    assert f"revert  {CODE}" in dry.stdout
    done = tmops("rollback", DEMO_FEATURE, "--phase", "tester", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "paused"
    refused = tmops("rollback", DEMO_FEATURE, "--phase", "nope")
    assert refused.returncode == 1
    assert "not a phase of the workflow" in refused.stderr
