"""The engine's faults, with REAL processes: gates, rejected checkpoints, crashes, timeouts, resume.

Faults are injected into the scripted agent (``tmops-scripted-agent``) with
``TMOPS_SCRIPTED_FAULT`` through ``providers.<name>.env``; a checkpoint written by hand stands
for a person doing a phase's work.

Runs that several tests read are module-scoped and run once; each test checks one behaviour.
The helpers are in ``engine_support.py``.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import (
    COMPLETIONS,
    FEAT_SUBJECT,
    SHORT_WORKFLOW,
    Finished,
    by_phase,
    git,
    in_memory_service,
    run_workflow,
    scripted_config,
    serve,
)
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.service.operations import Service
from tmops_core.store import AttemptRecord
from tmops_core.workspace.features import InitResult
from tmops_hookspecs import FeatureError

# -- 1. gates and retries -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """The tester's first tests already pass; the orchestrator's first session crashes."""
    base = tmp_path_factory.mktemp("gated")
    data = scripted_config(base / "state", fault="orchestrator:crash,tester:passing-tests")
    finished = run_workflow(base, data)
    yield finished
    finished.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_a_tester_whose_tests_pass_is_rejected_by_the_tests_fail_gate(gated: Finished) -> None:
    first = gated.attempts("tester")[0]
    assert first.state == "rejected"
    assert "gate tests-fail failed" in (first.message or "")
    checks = [e["data"] for e in gated.events("gate.checked") if e["data"]["phase"] == "tester"]
    assert [(c["gate"], c["passed"]) for c in checks] == [
        ("tests-fail", False),
        ("tests-fail", True),
    ]


def test_the_rejected_tester_is_resumed_in_the_same_session(gated: Finished) -> None:
    rows = gated.attempts("tester")
    assert [a.attempt for a in rows] == [1, 2]
    assert rows[0].session_id
    assert rows[1].session_id == rows[0].session_id
    started = [e["data"] for e in gated.events("session.started") if e["data"]["phase"] == "tester"]
    assert [s["resumed"] for s in started] == [False, True]


def test_the_run_completes_after_the_gate_rejection(gated: Finished) -> None:
    assert gated.status()["status"] == "completed"
    subjects = git(gated.root, "log", "--format=%s", f"main..{gated.init.branch}")
    assert subjects.splitlines()[0].startswith(FEAT_SUBJECT)


def test_a_crashed_agent_is_retried_and_the_phase_completes(gated: Finished) -> None:
    rows = gated.attempts("orchestrator")
    assert [(a.attempt, a.outcome) for a in rows] == [(1, "crashed"), (2, "succeeded")]
    assert "exit code 3" in (rows[0].message or "")
    assert rows[1].state == "completed"


def test_a_completed_run_reports_no_last_error(gated: Finished) -> None:
    status = gated.status()
    assert status["status"] == "completed"
    assert status["last_error"] is None


@pytest.fixture(scope="module")
def rejected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """The orchestrator's first session writes no checkpoint; the tester's names another
    feature. Two phases are enough here."""
    base = tmp_path_factory.mktemp("rejected")
    data = scripted_config(
        base / "state",
        fault="orchestrator:no-checkpoint,tester:wrong-feature",
        default_phases=SHORT_WORKFLOW,
    )

    def leave_notes(init: InitResult) -> None:
        (init.worktree / "NOTES.md").write_text("notes a person left in the worktree\n")

    finished = run_workflow(base, data, prepare=leave_notes)
    yield finished
    finished.close()


def test_a_checkpoint_rejected_by_a_validator_names_file_validator_and_problem(
    rejected: Finished,
) -> None:
    problems = [e["data"] for e in rejected.events("checkpoint.problem")]
    assert len(problems) == 1
    problem = problems[0]
    assert problem["file"] == str(rejected.init.checkpoint_dir / "003-tests-complete.md")
    assert problem["validator"] == "identity"
    assert problem["severity"] == "error"
    assert f"'{DEMO_FEATURE}-other'" in problem["message"]


def test_the_rejection_reason_is_in_the_attempt_row_and_event(rejected: Finished) -> None:
    first = rejected.attempts("tester")[0]
    message = first.message or ""
    assert "003-tests-complete.md" in message
    assert "identity" in message
    assert f"'{DEMO_FEATURE}-other'" in message
    failed = [e["data"] for e in rejected.events("phase.attempt_failed")]
    assert {"phase": "tester", "attempt": 1, "reason": message}.items() <= failed[-1].items()


def test_after_a_rejected_checkpoint_the_resumed_attempt_completes(rejected: Finished) -> None:
    rows = rejected.attempts("tester")
    assert [a.state for a in rows] == ["rejected", "completed"]
    assert rows[1].session_id == rows[0].session_id
    assert rejected.status()["status"] == "completed"


def test_an_agent_that_exits_without_a_checkpoint_is_retried(rejected: Finished) -> None:
    rows = rejected.attempts("orchestrator")
    assert [a.state for a in rows] == ["rejected", "completed"]
    assert rows[0].outcome == "succeeded"
    assert "without writing 001-discovery-trigger.md" in (rows[0].message or "")
    assert rows[1].session_id == rows[0].session_id


def test_work_left_uncommitted_is_committed_on_the_feature_branch(rejected: Finished) -> None:
    log = git(rejected.root, "log", "--format=%H %s", f"main..{rejected.init.branch}")
    commits = dict(line.split(" ", 1)[::-1] for line in log.splitlines())
    sha = commits[f"tmops({DEMO_FEATURE}): orchestrator work left uncommitted"]
    files = git(rejected.root, "show", "--name-only", "--format=", sha).split()
    assert files == ["NOTES.md"]
    tester_start = rejected.attempts("tester")[0].start_commit
    assert tester_start == sha


@dataclass
class FailedThenResumed:
    failed: Finished
    failed_status: dict[str, Any]
    failed_attempts: list[AttemptRecord]
    failed_line: str
    refused: FeatureError
    resumed: Service
    resume_answer: dict[str, Any]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailedThenResumed]:
    """The implementer's code always fails the tests (max_retries 1); then the run is resumed
    by a service whose config has no fault."""
    base = tmp_path_factory.mktemp("broken")
    data = scripted_config(base / "state", fault="implementer:broken-code:always", max_retries=1)
    failed = run_workflow(base, data)
    failed_status = failed.status()
    failed_attempts = failed.attempts()
    failed_line = (failed.root / ".tmops" / "FEATURES.txt").read_text()
    with pytest.raises(FeatureError) as caught:
        failed.service.start(failed.feature, workspace=failed.root, spawn=False)
    resumed = in_memory_service(scripted_config(base / "state", max_retries=1))
    answer = resumed.start(failed.feature, workspace=failed.root, spawn=False, resume=True)
    serve(resumed, failed.root)
    yield FailedThenResumed(
        failed, failed_status, failed_attempts, failed_line, caught.value, resumed, answer
    )
    resumed.close()
    failed.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_an_implementer_whose_tests_fail_fails_the_run(broken: FailedThenResumed) -> None:
    status = broken.failed_status
    assert status["status"] == "failed"
    assert "gate tests-pass failed" in status["last_error"]
    assert status["last_error"].startswith("implementer:")
    assert by_phase(broken.failed_attempts)["implementer"] == 2


def test_a_failed_run_records_an_error_event(broken: FailedThenResumed) -> None:
    errors = [e["data"] for e in broken.failed.events("error")]
    assert errors[0]["status"] == "failed"
    assert errors[0]["message"] == broken.failed_status["last_error"]


def test_features_txt_says_failed_after_a_failed_run(broken: FailedThenResumed) -> None:
    assert broken.failed_line.startswith(f"{DEMO_FEATURE}:failed:")


def test_a_failed_run_is_not_started_again_without_resume(broken: FailedThenResumed) -> None:
    assert "has failed" in str(broken.refused)
    assert "tests-pass" in str(broken.refused)
    assert broken.refused.hint is not None
    assert "--resume" in broken.refused.hint


def test_a_resumed_run_completes_once_the_fault_is_gone(broken: FailedThenResumed) -> None:
    assert broken.resume_answer["status"] == "queued"
    assert broken.resume_answer["run_id"] != broken.failed.answer["run_id"]
    status = broken.resumed.status(broken.failed.feature, workspace=broken.failed.root)
    assert status["status"] == "completed"
    assert status["last_error"] is None


def test_a_resumed_run_goes_on_from_the_failed_phase(broken: FailedThenResumed) -> None:
    counts = by_phase(broken.failed.attempts())
    assert counts == {"orchestrator": 1, "tester": 1, "implementer": 3, "verifier": 1}
    adopted = [e["data"]["phase"] for e in broken.failed.events("phase.adopted")]
    assert adopted == ["orchestrator", "tester"]


def test_a_resumed_phase_keeps_its_phase_start_ref(broken: FailedThenResumed) -> None:
    first = broken.failed.attempts("implementer")[0]
    ref = f"refs/tmops/{DEMO_FEATURE}/{broken.failed.init.run}/implementer-start"
    assert git(broken.failed.root, "rev-parse", "--verify", ref).strip() == first.start_commit


def test_metrics_after_a_resume_keep_the_durations_of_earlier_phases(
    broken: FailedThenResumed,
) -> None:
    metrics = json.loads((broken.failed.init.run_dir / "metrics.json").read_text())
    durations = {p["phase"]: p["duration_s"] for p in metrics["phases"]}
    assert durations["orchestrator"] > 0
    assert durations["tester"] > 0


@dataclass
class VerifierResumed:
    failed: Finished
    failed_status: dict[str, Any]
    resumed: Service


@pytest.fixture(scope="module")
def verifier_resumed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerifierResumed]:
    """The verifier always crashes (max_retries 0); then the run is resumed with no fault."""
    base = tmp_path_factory.mktemp("verifier")
    failed = run_workflow(
        base, scripted_config(base / "state", fault="verifier:crash:always", max_retries=0)
    )
    failed_status = failed.status()
    resumed = in_memory_service(scripted_config(base / "state", max_retries=0))
    resumed.start(failed.feature, workspace=failed.root, spawn=False, resume=True)
    serve(resumed, failed.root)
    yield VerifierResumed(failed, failed_status, resumed)
    resumed.close()
    failed.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_a_run_whose_verifier_always_crashes_fails_in_the_verifier(
    verifier_resumed: VerifierResumed,
) -> None:
    assert verifier_resumed.failed_status["status"] == "failed"
    assert verifier_resumed.failed_status["last_error"].startswith("verifier:")


def test_a_run_resumed_after_the_verifier_failed_completes(
    verifier_resumed: VerifierResumed,
) -> None:
    failed = verifier_resumed.failed
    status = verifier_resumed.resumed.status(failed.feature, workspace=failed.root)
    assert status["status"] == "completed", status["last_error"]


def test_a_resume_does_not_run_again_the_phases_already_accepted(
    verifier_resumed: VerifierResumed,
) -> None:
    failed = verifier_resumed.failed
    assert by_phase(failed.attempts())["tester"] == 1
    adopted = [e["data"]["phase"] for e in failed.events("phase.adopted")]
    assert adopted == ["orchestrator", "tester", "implementer"]
    assert (failed.init.checkpoint_dir / COMPLETIONS["tester"]).is_file()


@pytest.fixture(scope="module")
def crashing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("crashing")
    finished = run_workflow(
        base, scripted_config(base / "state", fault="*:crash:always", max_retries=1)
    )
    yield finished
    finished.close()


def test_an_agent_that_always_crashes_fails_the_run_with_last_error(crashing: Finished) -> None:
    status = crashing.status()
    assert status["status"] == "failed"
    assert status["last_error"].startswith("orchestrator:")
    assert "exit code 3" in status["last_error"]
    assert [a.outcome for a in crashing.attempts()] == ["crashed", "crashed"]


def test_the_last_attempt_of_a_failed_run_is_not_marked_retry(crashing: Finished) -> None:
    assert crashing.attempts()[-1].state != "rejected"
    assert crashing.status()["sessions"]["orchestrator"]["state"] != "rejected"


# -- 2. a checkpoint written by hand, a timeout ---------------------------------------------------


HAND_WRITTEN = """\
# Checkpoint: 001-discovery-trigger.md
**From:** Orchestrator (a person)
**To:** Tester
**Timestamp:** 2026-01-01 00:00:00
**Feature:** slugify
**Run:** initial
**Status:** complete

## Action Required
Write one failing test per acceptance criterion of TASK_SPEC.md.
"""


@pytest.fixture(scope="module")
def adopted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("adopted")

    def hand_write(init: InitResult) -> None:
        path = init.checkpoint_dir / COMPLETIONS["orchestrator"]
        path.write_text(HAND_WRITTEN)
        path.chmod(0o644)  # as a person's editor leaves it

    finished = run_workflow(base, scripted_config(base / "state"), prepare=hand_write)
    yield finished
    finished.close()


def test_a_hand_written_checkpoint_is_adopted_without_running_the_agent(adopted: Finished) -> None:
    # the store records the adoption, with no agent process behind it
    [adoption] = adopted.attempts("orchestrator")
    assert (adoption.outcome, adoption.state, adoption.pid) == ("adopted", "completed", None)
    assert [e["data"]["phase"] for e in adopted.events("phase.adopted")] == ["orchestrator"]
    assert (adopted.init.checkpoint_dir / COMPLETIONS["orchestrator"]).read_text() == HAND_WRITTEN


def test_an_adopted_checkpoint_is_made_private(adopted: Finished) -> None:
    path = adopted.init.checkpoint_dir / COMPLETIONS["orchestrator"]
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600


def test_a_run_with_an_adopted_checkpoint_completes(adopted: Finished) -> None:
    assert adopted.status()["status"] == "completed"
    ran = [a for a in adopted.attempts() if a.outcome != "adopted"]
    assert by_phase(ran) == {"tester": 1, "implementer": 1, "verifier": 1}


def test_metrics_mark_the_adopted_phase(adopted: Finished) -> None:
    metrics = json.loads((adopted.init.run_dir / "metrics.json").read_text())
    orchestrator = metrics["phases"][0]
    assert (orchestrator["phase"], orchestrator["adopted"]) == ("orchestrator", True)
    assert orchestrator["attempts"] == 0
    assert [p["adopted"] for p in metrics["phases"][1:]] == [False, False, False]


HAND_WRITTEN_TESTS = """\
# Checkpoint: 003-tests-complete.md
**From:** Tester (a person)
**To:** Orchestrator
**Timestamp:** 2026-01-01 00:00:00
**Feature:** slugify
**Run:** initial
**Status:** complete

## Work Completed
- tests/test_slug.py: one test per acceptance criterion
## Metrics
- Passing: 0/6
"""


def test_a_hand_written_checkpoint_goes_through_the_phases_gates(tmp_path: Path) -> None:
    def hand_write(init: InitResult) -> None:
        (init.checkpoint_dir / COMPLETIONS["orchestrator"]).write_text(HAND_WRITTEN)
        # it says the tests fail, but none were written: the gate finds no red run
        (init.checkpoint_dir / COMPLETIONS["tester"]).write_text(HAND_WRITTEN_TESTS)

    finished = run_workflow(
        tmp_path, scripted_config(tmp_path / "state", max_retries=0), prepare=hand_write
    )
    try:
        checks = [e["data"] for e in finished.events("gate.checked")]
        assert (checks[0]["phase"], checks[0]["gate"], checks[0]["passed"]) == (
            "tester",
            "tests-fail",
            False,
        )
        [refused] = [e["data"] for e in finished.events("phase.not_adopted")]
        assert refused["phase"] == "tester"
        assert "gate tests-fail failed" in refused["reason"]
        assert finished.status()["status"] == "completed"
    finally:
        finished.close()


@pytest.fixture(scope="module")
def timed_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("timeout")
    data = scripted_config(
        base / "state", fault="tester:slow=30:always", provider={"timeout_s": 1}, max_retries=0
    )
    began = time.monotonic()
    finished = run_workflow(base, data)
    assert time.monotonic() - began < 20
    yield finished
    finished.close()


def test_a_wall_clock_timeout_fails_the_run(timed_out: Finished) -> None:
    status = timed_out.status()
    assert status["status"] == "failed"
    assert status["last_error"].startswith("tester:")
    assert "timeout" in status["last_error"]
    assert timed_out.attempts("tester")[0].outcome == "timed_out"


def test_a_timed_out_agent_is_not_left_running(timed_out: Finished) -> None:
    pid = timed_out.attempts("tester")[0].pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
