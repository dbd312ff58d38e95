"""The engine, end to end: ``start`` queues, the engine drives the four phases with REAL processes.

The agent is the scripted stand-in for ``claude -p`` (``tmops-scripted-agent``), driven by the
real ``claude-code`` provider (and once by the ``command`` provider): it writes tests, code and
checkpoints in the feature's worktree and commits them, so a whole run takes a few seconds.
Faults are injected with ``TMOPS_SCRIPTED_FAULT`` through ``providers.<name>.env``.

Runs that several tests read are module-scoped and run once; each test checks one behaviour.
The helpers at the top are shared with ``test_concurrency.py`` and ``test_start_cli.py``.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tmops_core.config import LoadedConfig, load_config, parse_config
from tmops_core.demo import scripted_agent_config
from tmops_core.demo_project import DEMO_FEATURE, DEMO_TASK_SPEC, create_demo_project
from tmops_core.engine import Engine, engine_running
from tmops_core.features import InitRequest, InitResult
from tmops_core.plugins import create_plugin_manager
from tmops_core.service import Service
from tmops_core.store import STORE_NAME, AttemptRecord, Store
from tmops_core.workspace import Layout
from tmops_hookspecs import FeatureError

AGENT = str(Path(sys.executable).with_name("tmops-scripted-agent"))
TEST_COMMAND = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
PHASES = ("orchestrator", "tester", "implementer", "verifier")
SHORT_WORKFLOW = ["orchestrator", "tester"]
COMPLETIONS = {
    "orchestrator": "001-discovery-trigger.md",
    "tester": "003-tests-complete.md",
    "implementer": "005-impl-complete.md",
    "verifier": "007-verify-complete.md",
}
TRIGGERS = ("004-impl-trigger.md", "006-verify-trigger.md")
TEST_SUBJECT = "test(slug): "
FEAT_SUBJECT = "feat(slug): "
WAIT_S = 60.0


# -- helpers (shared with test_concurrency.py and test_start_cli.py) ---------------------------


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def scripted_config(
    state: Path,
    *,
    fault: str = "",
    provider: Mapping[str, Any] | None = None,
    jsonl: Path | None = None,
    **features: Any,
) -> dict[str, Any]:
    """Config data: the claude-code provider runs the scripted agent (state kept in ``state``)."""
    env = {"TMOPS_SCRIPTED_STATE_DIR": str(state)}
    if fault:
        env["TMOPS_SCRIPTED_FAULT"] = fault
    data: dict[str, Any] = {
        "providers": {
            "claude-code": {
                "command": AGENT,
                "permission_mode": "bypassPermissions",
                "env": env,
                **(provider or {}),
            }
        },
        "features": {
            "default_provider": "claude-code",
            "test_command": TEST_COMMAND,
            "checkpoint_timeout": 30,
            **features,
        },
    }
    if jsonl is not None:
        data["telemetry"] = {"outputs": {"jsonl": {"path": str(jsonl)}}}
    return data


def in_memory_service(data: Mapping[str, Any]) -> Service:
    return Service(LoadedConfig(parse_config(dict(data)), None), create_plugin_manager())


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data)))
    path.chmod(0o600)
    return path


def file_service(path: Path) -> Service:
    """A service whose config comes from a file, so a spawned engine reads the same config."""
    return Service(load_config(path), create_plugin_manager())


def new_feature(service: Service, root: Path, feature: str = DEMO_FEATURE) -> InitResult:
    result = service.init(InitRequest(feature=feature, workspace=root))
    result.task_spec.write_text(DEMO_TASK_SPEC)
    return result


def serve(service: Service, root: Path) -> None:
    assert service.serve_engine(workspace=root, idle_exit_s=0.2, retry_backoff_s=(0.05,))


def open_store(root: Path) -> Store:
    store = Store.open_existing(root / ".tmops" / STORE_NAME)
    assert store is not None
    return store


def wait_for(
    service: Service, feature: str, root: Path, *, done: Callable[[str], bool], timeout: float
) -> dict[str, Any]:
    """Poll ``status()`` until ``done(status)``; the last status either way."""
    deadline = time.monotonic() + timeout
    while True:
        status = service.status(feature, workspace=root)
        if done(status["status"]) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def ended(state: str) -> bool:
    return state not in {"queued", "running"}


def jsonl_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Finished:
    """A project whose feature was started and driven by the engine until the queue emptied."""

    service: Service
    root: Path
    init: InitResult
    answer: dict[str, Any]
    start_s: float
    queued_status: str
    store: Store

    @property
    def feature(self) -> str:
        return self.init.feature

    def status(self) -> dict[str, Any]:
        return self.service.status(self.feature, workspace=self.root)

    def attempts(self, phase: str | None = None) -> list[AttemptRecord]:
        rows = self.store.attempts(self.feature, self.init.run)
        return [a for a in rows if phase is None or a.phase == phase]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = self.service.events_since(self.feature, workspace=self.root)
        return [e for e in rows if kind is None or e["event_type"] == f"orchestration.{kind}"]

    def close(self) -> None:
        self.store.close()
        self.service.close()


def run_workflow(
    base: Path,
    data: Mapping[str, Any],
    *,
    prepare: Callable[[InitResult], None] | None = None,
) -> Finished:
    """Make the demo project in ``base``, init + start its feature and serve the queue."""
    root = create_demo_project(base / "p").path
    service = in_memory_service(data)
    init = new_feature(service, root)
    if prepare is not None:
        prepare(init)
    began = time.monotonic()
    answer = service.start(init.feature, workspace=root, spawn=False)
    start_s = time.monotonic() - began
    queued = service.status(init.feature, workspace=root)["status"]
    serve(service, root)
    return Finished(service, root, init, answer, start_s, queued, open_store(root))


def by_phase(rows: list[AttemptRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.phase] = counts.get(row.phase, 0) + 1
    return counts


# -- 1. a full run through the claude-code provider ---------------------------------------------


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("full")
    finished = run_workflow(base, scripted_config(base / "state", jsonl=base / "events.jsonl"))
    yield finished
    finished.close()


def test_start_returns_at_once_with_the_run_queued(full: Finished) -> None:
    assert full.start_s < 0.5
    assert full.answer["status"] == "queued"
    assert full.answer["run_id"]
    assert full.queued_status == "queued"


def test_a_full_run_completes(full: Finished) -> None:
    status = full.status()
    assert status["status"] == "completed"
    assert status["last_error"] is None


def test_every_phase_is_completed(full: Finished) -> None:
    progress = full.status()["phase_progress"]
    assert progress["completed"] == progress["total"] == 4
    assert [p["status"] for p in progress["phases"]] == ["completed"] * 4


def test_the_four_completion_checkpoints_are_written(full: Finished) -> None:
    names = {p.name for p in full.init.checkpoint_dir.iterdir()}
    assert set(COMPLETIONS.values()) <= names


def test_tmops_writes_the_implementer_and_verifier_triggers(full: Finished) -> None:
    for name in TRIGGERS:
        text = (full.init.checkpoint_dir / name).read_text()
        assert "**From:** tmops" in text, name
        assert f"**Feature:** {full.feature}" in text, name


def test_a_summary_is_written(full: Finished) -> None:
    summary = (full.init.checkpoint_dir / "SUMMARY.md").read_text()
    assert f"**Feature:** {full.feature}" in summary
    assert "| verifier | 1 |" in summary


def test_metrics_json_has_four_phases_with_one_attempt_each(full: Finished) -> None:
    metrics = json.loads((full.init.run_dir / "metrics.json").read_text())
    assert [p["phase"] for p in metrics["phases"]] == list(PHASES)
    assert [p["attempts"] for p in metrics["phases"]] == [1, 1, 1, 1]
    assert metrics["provider"] == "claude-code"


def test_metrics_json_lists_the_commits_of_the_branch(full: Finished) -> None:
    metrics = json.loads((full.init.run_dir / "metrics.json").read_text())
    branch = git(full.root, "log", "--format=%H", f"main..{full.init.branch}").split()
    assert [c["sha"] for c in metrics["commits"]] == branch
    assert len(branch) == 2


def test_features_txt_says_completed(full: Finished) -> None:
    lines = (full.root / ".tmops" / "FEATURES.txt").read_text().splitlines()
    line = next(x for x in lines if x.startswith(f"{full.feature}:"))
    assert line.split(":")[1] == "completed"
    assert line.endswith(f":{full.init.branch}")


def test_the_test_commit_comes_before_the_feat_commit(full: Finished) -> None:
    subjects = git(full.root, "log", "--reverse", "--format=%s", f"main..{full.init.branch}")
    lines = subjects.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(TEST_SUBJECT)
    assert lines[1].startswith(FEAT_SUBJECT)


def test_the_tests_pass_on_the_branch(full: Finished) -> None:
    worktree = full.init.worktree
    assert git(worktree, "rev-parse", "HEAD") == git(full.root, "rev-parse", full.init.branch)
    assert git(worktree, "status", "--porcelain", "--untracked-files=no") == ""
    done = subprocess.run(
        TEST_COMMAND, cwd=worktree, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout
    assert "6 passed" in done.stdout


def test_phase_start_refs_mark_where_each_phase_began(full: Finished) -> None:
    attempts = {a.phase: a for a in full.attempts()}
    for phase in PHASES:
        ref = f"refs/tmops/{full.feature}/{full.init.run}/{phase}-start"
        sha = git(full.root, "rev-parse", "--verify", ref).strip()
        assert sha == attempts[phase].start_commit, phase
    main = git(full.root, "rev-parse", "main").strip()
    assert attempts["orchestrator"].start_commit == main


def test_agent_logs_hold_the_stream_json_lines_with_mode_0600(full: Finished) -> None:
    logs = full.init.run_dir / "logs"
    for phase in PHASES:
        path = logs / f"{phase}.log"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        messages = [json.loads(line) for line in path.read_text().splitlines()]
        assert messages[0]["type"] == "system"
        assert messages[0]["subtype"] == "init"
        assert messages[-1]["type"] == "result"


def test_the_claude_code_provider_drove_the_scripted_agent(full: Finished) -> None:
    init = json.loads((full.init.run_dir / "logs" / "tester.log").read_text().splitlines()[0])
    assert init["claude_code_version"] == "scripted"
    assert init["permissionMode"] == "bypassPermissions"
    assert Path(init["cwd"]) == full.init.worktree


def test_session_started_and_ended_events_are_recorded(full: Finished) -> None:
    started = full.events("session.started")
    ended_ = full.events("session.ended")
    assert [e["data"]["phase"] for e in started] == list(PHASES)
    assert [e["data"]["phase"] for e in ended_] == list(PHASES)
    assert all(e["data"]["pid"] > 0 for e in started)
    assert all(e["data"]["outcome"] == "succeeded" for e in ended_)
    sessions = {a.phase: a.session_id for a in full.attempts()}
    assert [e["data"]["session_id"] for e in ended_] == [sessions[p] for p in PHASES]


def test_checkpoint_detected_events_carry_the_detection_lag(full: Finished) -> None:
    detected = full.events("checkpoint.detected")
    assert [e["data"]["checkpoint"] for e in detected] == list(COMPLETIONS.values())
    assert all(e["data"]["detection_lag_ms"] >= 0 for e in detected)


def test_phase_transition_events_carry_the_duration(full: Finished) -> None:
    transitions = full.events("phase.transition")
    assert [(e["data"]["from"], e["data"]["to"]) for e in transitions] == [
        ("orchestrator", "tester"),
        ("tester", "implementer"),
        ("implementer", "verifier"),
        ("verifier", None),
    ]
    assert all(e["data"]["duration_s"] >= 0 for e in transitions)


def test_a_feature_completed_event_ends_the_run(full: Finished) -> None:
    events = full.events()
    assert events[-1]["event_type"] == "orchestration.feature.completed"
    assert events[-1]["data"]["duration_s"] > 0
    assert len(full.events("feature.completed")) == 1


def test_status_reports_the_run_id_provider_cost_and_sessions(full: Finished) -> None:
    status = full.status()
    assert status["run_id"] == full.answer["run_id"]
    assert status["provider"] == "claude-code"
    assert status["cost_usd"] == 0.0
    attempts = {a.phase: a for a in full.attempts()}
    for phase in PHASES:
        session = status["sessions"][phase]
        assert session["session_id"] == attempts[phase].session_id, phase
        assert session["session_id"], phase
        assert session["attempts"] == 1, phase
        assert session["state"] == "completed", phase


def test_the_jsonl_sink_receives_the_same_events(full: Finished) -> None:
    run_id = full.answer["run_id"]
    sent = jsonl_events(full.root.parent / "events.jsonl")
    mine = [e for e in sent if e["correlation_id"] == run_id]
    assert mine[0]["event_type"] == "orchestration.run.queued"
    stored = full.events()
    recorded = [e for e in mine if e["event_type"] != "orchestration.run.queued"]
    assert [e["event_type"] for e in recorded] == [e["event_type"] for e in stored]
    for sink_event, store_event in zip(recorded, stored, strict=True):
        assert store_event["data"].items() <= sink_event["data"].items()


def test_a_completed_run_is_not_started_again_without_resume(full: Finished) -> None:
    with pytest.raises(FeatureError, match="has completed") as caught:
        full.service.start(full.feature, workspace=full.root, spawn=False)
    assert caught.value.hint is not None
    assert "--retry" in caught.value.hint


# -- 2. the command provider ------------------------------------------------------------------


@pytest.fixture(scope="module")
def command_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("command")
    data: dict[str, Any] = scripted_agent_config()
    data["providers"]["command"]["env"] = {"TMOPS_SCRIPTED_STATE_DIR": str(base / "state")}
    finished = run_workflow(base, data)
    yield finished
    finished.close()


def test_a_run_through_the_command_provider_completes(command_run: Finished) -> None:
    status = command_run.status()
    assert status["status"] == "completed"
    assert status["provider"] == "command"
    assert by_phase(command_run.attempts()) == dict.fromkeys(PHASES, 1)
    assert {a.provider for a in command_run.attempts()} == {"command"}


def test_the_command_provider_run_commits_tests_then_code(command_run: Finished) -> None:
    lines = git(
        command_run.root, "log", "--reverse", "--format=%s", f"main..{command_run.init.branch}"
    ).splitlines()
    assert [line.split(":")[0] for line in lines] == ["test(slug)", "feat(slug)"]


# -- 3. gates and retries -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """The tester's first tests already pass; the orchestrator's first session crashes."""
    base = tmp_path_factory.mktemp("gated")
    data = scripted_config(base / "state", fault="orchestrator:crash,tester:passing-tests")
    finished = run_workflow(base, data)
    yield finished
    finished.close()


def test_a_tester_whose_tests_pass_is_rejected_by_the_tests_fail_gate(gated: Finished) -> None:
    first = gated.attempts("tester")[0]
    assert first.state == "retry"
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
    assert [a.state for a in rows] == ["retry", "completed"]
    assert rows[1].session_id == rows[0].session_id
    assert rejected.status()["status"] == "completed"


def test_an_agent_that_exits_without_a_checkpoint_is_retried(rejected: Finished) -> None:
    rows = rejected.attempts("orchestrator")
    assert [a.state for a in rows] == ["retry", "completed"]
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
    assert crashing.attempts()[-1].state != "retry"
    assert crashing.status()["sessions"]["orchestrator"]["state"] != "retry"


# -- 4. a checkpoint written by hand, a timeout ---------------------------------------------------


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
        (init.checkpoint_dir / COMPLETIONS["orchestrator"]).write_text(HAND_WRITTEN)

    finished = run_workflow(base, scripted_config(base / "state"), prepare=hand_write)
    yield finished
    finished.close()


def test_a_hand_written_checkpoint_is_adopted_without_running_the_agent(adopted: Finished) -> None:
    # the store records the adoption, with no agent process behind it
    [adoption] = adopted.attempts("orchestrator")
    assert (adoption.outcome, adoption.state, adoption.pid) == ("adopted", "completed", None)
    assert [e["data"]["phase"] for e in adopted.events("phase.adopted")] == ["orchestrator"]
    assert (adopted.init.checkpoint_dir / COMPLETIONS["orchestrator"]).read_text() == HAND_WRITTEN


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


def test_a_hand_written_checkpoint_goes_through_the_phases_gates(tmp_path: Path) -> None:
    def hand_write(init: InitResult) -> None:
        (init.checkpoint_dir / COMPLETIONS["orchestrator"]).write_text(HAND_WRITTEN)
        tests_done = HAND_WRITTEN.replace(COMPLETIONS["orchestrator"], COMPLETIONS["tester"])
        (init.checkpoint_dir / COMPLETIONS["tester"]).write_text(tests_done)

    finished = run_workflow(
        tmp_path, scripted_config(tmp_path / "state", max_retries=0), prepare=hand_write
    )
    try:
        checks = [e["data"] for e in finished.events("gate.checked")]
        assert ("tester", "tests-fail") in {(c["phase"], c["gate"]) for c in checks}
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


# -- 5. start: errors and repeats ----------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    """An initialised demo feature that nothing drives (no engine runs)."""
    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state"))
    new_feature(service, root)
    yield service, root
    service.close()


def test_start_of_an_unknown_feature_is_a_feature_error(fresh: tuple[Service, Path]) -> None:
    service, root = fresh
    with pytest.raises(FeatureError, match="'nothing-here' was not initialised"):
        service.start("nothing-here", workspace=root, spawn=False)


def test_start_with_an_unknown_provider_is_a_feature_error(fresh: tuple[Service, Path]) -> None:
    service, root = fresh
    with pytest.raises(FeatureError, match="no provider named 'no-such-agent'") as caught:
        service.start(DEMO_FEATURE, workspace=root, spawn=False, provider="no-such-agent")
    assert "claude-code" in (caught.value.hint or "")
    assert service.status(DEMO_FEATURE, workspace=root)["status"] == "initialized"


def test_a_second_start_while_queued_returns_the_same_run(fresh: tuple[Service, Path]) -> None:
    service, root = fresh
    first = service.start(DEMO_FEATURE, workspace=root, spawn=False)
    second = service.start(DEMO_FEATURE, workspace=root, spawn=False)
    assert second["run_id"] == first["run_id"]
    assert second["status"] == "queued"
    assert "already queued" in second["message"]


def test_resume_of_a_completed_run_is_refused(tmp_path: Path) -> None:
    data = scripted_config(tmp_path / "state", default_phases=SHORT_WORKFLOW)
    finished = run_workflow(tmp_path, data)
    try:
        assert finished.status()["status"] == "completed"
        with pytest.raises(FeatureError, match="has completed"):
            finished.service.start(
                finished.feature, workspace=finished.root, spawn=False, resume=True
            )
        assert finished.status()["status"] == "completed"
    finally:
        finished.close()


def test_start_with_a_disabled_provider_is_a_feature_error(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    data = scripted_config(tmp_path / "state", provider={"enabled": False})
    service = in_memory_service(data)
    try:
        new_feature(service, root)
        with pytest.raises(FeatureError, match="claude-code"):
            service.start(DEMO_FEATURE, workspace=root, spawn=False)
    finally:
        service.close()


def test_a_second_start_naming_another_provider_reports_the_runs_provider(
    fresh: tuple[Service, Path],
) -> None:
    service, root = fresh
    service.start(DEMO_FEATURE, workspace=root, spawn=False)
    second = service.start(DEMO_FEATURE, workspace=root, spawn=False, provider="command")
    assert service.status(DEMO_FEATURE, workspace=root)["provider"] == "claude-code"
    assert second["provider"] == "claude-code"


# -- 6. the background engine --------------------------------------------------------------------


@dataclass
class Spawned:
    service: Service
    root: Path
    answer: dict[str, Any]
    start_s: float
    status: dict[str, Any]
    #: what a second, in-process engine answered while the background one served the project
    second_engine: bool | None


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawned]:
    base = tmp_path_factory.mktemp("spawned")
    root = create_demo_project(base / "p").path
    service = file_service(
        write_config(base / "tmops.yaml", scripted_config(base / "state", max_retries=0))
    )
    new_feature(service, root)
    began = time.monotonic()
    answer = service.start(DEMO_FEATURE, workspace=root)
    start_s = time.monotonic() - began
    layout = Layout(root)
    deadline = time.monotonic() + 10
    while not engine_running(layout) and time.monotonic() < deadline:
        time.sleep(0.02)
    second = (
        service.serve_engine(workspace=root, idle_exit_s=0.1) if engine_running(layout) else None
    )
    status = wait_for(service, DEMO_FEATURE, root, done=ended, timeout=WAIT_S)
    yield Spawned(service, root, answer, start_s, status, second)
    service.close()


def test_start_with_spawn_returns_at_once(spawned: Spawned) -> None:
    assert spawned.start_s < 1.0
    assert spawned.answer["status"] == "queued"


def test_the_background_engine_completes_the_run(spawned: Spawned) -> None:
    assert spawned.status["status"] == "completed", spawned.status["last_error"]
    assert spawned.status["run_id"] == spawned.answer["run_id"]
    assert (spawned.root / ".tmops" / "logs" / "engine.log").is_file()


def test_a_second_engine_does_not_serve_a_project_already_served(spawned: Spawned) -> None:
    assert spawned.second_engine is False
    store = open_store(spawned.root)
    try:
        attempts = store.attempts(DEMO_FEATURE, "initial")
    finally:
        store.close()
    assert by_phase(attempts) == dict.fromkeys(PHASES, 1)


def test_the_background_engine_exits_when_idle(spawned: Spawned) -> None:
    layout = Layout(spawned.root)
    deadline = time.monotonic() + 15
    while engine_running(layout) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not engine_running(layout)


def test_a_run_queued_while_the_engine_shuts_down_is_not_stranded(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    data = scripted_config(tmp_path / "state", default_phases=["orchestrator"])
    service = file_service(write_config(tmp_path / "tmops.yaml", data))
    new_feature(service, root)
    layout = Layout(root)
    store = open_store(root)
    try:
        engine = Engine(
            config=service.config,
            plugins=service.plugins,
            events=service.events,
            store=store,
            layout=layout,
        )
        answers: list[dict[str, Any]] = []

        def start_now() -> None:  # called each time the idle engine has decided to exit
            if not answers:
                answers.append(service.start(DEMO_FEATURE, workspace=root))

        assert engine.serve(idle_exit_s=0.1, on_idle=start_now)
        assert answers[0]["status"] == "queued"
        deadline = time.monotonic() + 3
        served = False
        while time.monotonic() < deadline and not served:
            state = service.status(DEMO_FEATURE, workspace=root)["status"]
            served = state != "queued" or engine_running(layout)
            time.sleep(0.1)
        assert served, "the run stays queued and no engine serves the project"
        final = wait_for(service, DEMO_FEATURE, root, done=ended, timeout=WAIT_S)
        assert final["status"] == "completed"
    finally:
        store.close()
        service.close()


def test_start_after_the_engine_was_killed_brings_the_run_back(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    data = scripted_config(tmp_path / "state", fault="tester:slow=2", default_phases=SHORT_WORKFLOW)
    service = file_service(write_config(tmp_path / "tmops.yaml", data))
    new_feature(service, root)
    store = open_store(root)
    try:
        service.start(DEMO_FEATURE, workspace=root)
        deadline = time.monotonic() + WAIT_S
        while not any(
            a.phase == "tester" and a.pid for a in store.attempts(DEMO_FEATURE, "initial")
        ):
            status = service.status(DEMO_FEATURE, workspace=root)
            assert not ended(status["status"]), status
            assert time.monotonic() < deadline, f"the tester never started: {status}"
            time.sleep(0.05)
        run = store.run(DEMO_FEATURE, "initial")
        assert run is not None
        assert run.engine_pid is not None
        os.kill(run.engine_pid, signal.SIGKILL)  # tmops killed while an agent runs
        layout = Layout(root)
        while engine_running(layout):
            time.sleep(0.05)
        again = service.start(DEMO_FEATURE, workspace=root)
        assert again["run_id"] == run.run_id
        deadline = time.monotonic() + 3
        while not engine_running(layout) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine_running(layout), "start() left the run with no engine to serve it"
        final = wait_for(service, DEMO_FEATURE, root, done=ended, timeout=WAIT_S)
        assert final["status"] == "completed"
    finally:
        store.close()
        service.close()
