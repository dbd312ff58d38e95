"""A person in control of a live run: pause [--now], resume, retry [--phase], approve; each a
CLI command with --json, an honest exit code and an event in the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tmops_core.agents.processes import process_alive
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_hookspecs import ConfigError, FeatureError

from .engine_support import (
    SHORT_WORKFLOW,
    WAIT_S,
    in_memory_service,
    run_workflow,
    scripted_config,
    serve,
    write_config,
)
from .takeover_support import Project, make_project, wait_until

#: what a verb that queues a run answers: an engine still serving may admit the run at once
QUEUED_OR_TAKEN = ("queued", "running")


def _json(project: Project, *args: str) -> dict[str, object]:
    done = project.cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def _events(project: Project, kind: str) -> list[dict[str, object]]:
    rows = project.service.events_since(DEMO_FEATURE, workspace=project.root)
    return [e["data"] for e in rows if e["event_type"] == kind]


def _without_faults(project: Project, **features: object) -> None:
    """The config the next engine reads: the same agent, no fault injected."""
    write_config(project.config, scripted_config(project.state, **features))


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_pause_stops_before_the_next_phase_and_resume_goes_on(tmp_path: Path) -> None:
    project = make_project(tmp_path, fault="orchestrator:slow=5", default_phases=SHORT_WORKFLOW)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine = project.engine()
        wait_until(lambda: project.live_agent("orchestrator"), timeout=WAIT_S, what="agent")
        answer = _json(project, "pause", DEMO_FEATURE)
        assert (answer["status"], answer["pause_requested"]) == ("running", True)
        assert "pauses before its next phase" in str(answer["message"])
        # the phase at hand finishes and is accepted; the next one never starts
        wait_until(lambda: project.run().status == "paused", timeout=WAIT_S, what="paused")
        assert engine.wait(timeout=WAIT_S) == 0
        assert [a.state for a in project.attempts("orchestrator")] == ["completed"]
        assert project.attempts("tester") == []
        assert project.run().pause_reason == "requested"
        assert project.cli("watch", DEMO_FEATURE).returncode == 3
        assert _events(project, "orchestration.run.paused")[0]["now"] is False
        again = project.cli("pause", DEMO_FEATURE)
        assert again.returncode == 0
        assert "was paused already" in again.stdout

        resumed = _json(project, "resume", DEMO_FEATURE)
        assert resumed["status"] in QUEUED_OR_TAKEN  # an engine still up may admit it at once
        assert project.cli("watch", DEMO_FEATURE, timeout=WAIT_S).returncode == 0
        assert [a.state for a in project.attempts("tester")] == ["completed"]
        assert _events(project, "orchestration.run.resumed")
    finally:
        project.close()


def test_pause_now_stops_the_agent_tree_and_records_the_attempt_interrupted(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, fault="tester:slow=60", default_phases=SHORT_WORKFLOW)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine = project.engine()
        agent = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S, what="tester")
        answer = _json(project, "pause", DEMO_FEATURE, "--now")
        assert (answer["status"], answer["agents_stopped"]) == ("paused", 1)
        assert not process_alive(agent.pid or 0, agent.start_time or 0)
        assert engine.wait(timeout=WAIT_S) == 0  # its driver lost the run; nothing it wrote
        assert [a.state for a in project.attempts("tester")] == ["interrupted"]
        assert project.run().status == "paused"
        assert project.cli("watch", DEMO_FEATURE).returncode == 3
        assert _events(project, "orchestration.run.paused")[0]["agents_stopped"] == 1

        _without_faults(project, default_phases=SHORT_WORKFLOW)
        resumed = project.cli("resume", DEMO_FEATURE, "--wait", timeout=WAIT_S)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        # --wait follows this run only: the tester again, not what came before the pause
        assert "session.started phase=tester attempt=1" in resumed.stdout
        assert "phase=orchestrator attempt=1" not in resumed.stdout
        assert "run.paused" not in resumed.stdout
        assert [a.state for a in project.attempts("tester")] == ["interrupted", "completed"]
    finally:
        project.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_a_queued_run_pauses_at_once_and_a_stopped_one_says_there_is_nothing_to_pause(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, default_phases=SHORT_WORKFLOW)
    try:
        not_started = project.cli("pause", DEMO_FEATURE)
        assert not_started.returncode == 1
        assert "is initialized: there is nothing to pause" in not_started.stderr
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        assert _json(project, "pause", DEMO_FEATURE)["status"] == "paused"
        assert project.run().pause_reason == "requested"
        running = project.cli("resume", DEMO_FEATURE)
        assert running.returncode == 0, running.stderr
        assert project.cli("watch", DEMO_FEATURE, timeout=WAIT_S).returncode == 0
        done = project.cli("pause", DEMO_FEATURE)
        assert done.returncode == 1
        assert "is completed: there is nothing to pause" in done.stderr
        assert project.cli("resume", DEMO_FEATURE).returncode == 1
    finally:
        project.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_an_approval_gate_pauses_before_its_phase_until_approved(tmp_path: Path) -> None:
    project = make_project(tmp_path, default_phases=SHORT_WORKFLOW, approve_before=["tester"])
    try:
        assert project.cli("start", DEMO_FEATURE).returncode == 0
        assert project.cli("watch", DEMO_FEATURE, timeout=WAIT_S).returncode == 3
        run = project.run()
        assert (run.status, run.pause_reason, run.current_phase) == (
            "paused", "awaiting_approval", "tester",
        )  # fmt: skip
        assert project.attempts("tester") == []
        status = project.service.status(DEMO_FEATURE, workspace=project.root)
        assert f"tmops approve {DEMO_FEATURE}" in status["next_action"]
        refused = project.cli("resume", DEMO_FEATURE)
        assert refused.returncode == 1
        assert f"`tmops approve {DEMO_FEATURE}`" in refused.stderr
        wrong = project.cli("approve", DEMO_FEATURE, "--phase", "orchestrator")
        assert wrong.returncode == 1
        assert "has no approval gate" in wrong.stderr

        approved = _json(project, "approve", DEMO_FEATURE)
        assert approved["status"] in QUEUED_OR_TAKEN
        assert approved["approved"] == "tester"
        assert project.cli("watch", DEMO_FEATURE, timeout=WAIT_S).returncode == 0
        assert _events(project, "orchestration.phase.approved")[0]["phase"] == "tester"
    finally:
        project.close()


def test_approve_before_must_name_phases_of_the_workflow() -> None:
    service = in_memory_service(
        {"features": {"default_provider": "scripted", "approve_before": ["implementor"]}}
    )
    with pytest.raises(ConfigError) as caught:
        service.check_config()
    assert "$.features.approve_before[0]" in str(caught.value)


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_retry_runs_a_failed_run_again_from_its_phase(tmp_path: Path) -> None:
    failing = scripted_config(
        tmp_path / "state", fault="implementer:broken-code:always", max_retries=0
    )
    done = run_workflow(tmp_path, failing)
    try:
        assert done.status()["status"] == "failed"
        service = in_memory_service(scripted_config(tmp_path / "state"))
        answer = service.retry(done.feature, workspace=done.root, spawn=False)
        assert (answer["status"], answer["retry_from"]) == ("queued", "implementer")
        serve(service, done.root)
        assert done.status()["status"] == "completed"
        assert [a.state for a in done.attempts("implementer")] == ["failed", "reset", "completed"]
        assert [a.state for a in done.attempts("tester")] == ["completed"]
        retried = [e for e in done.events() if e["event_type"] == "orchestration.run.retried"]
        assert retried[0]["data"]["phases"] == ["implementer", "verifier"]
        service.close()
    finally:
        done.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_retry_of_a_run_that_needs_review_sets_the_refused_work_aside(tmp_path: Path) -> None:
    refusing = scripted_config(tmp_path / "state", fault="verifier:refuse:always", rework_rounds=0)
    done = run_workflow(tmp_path, refusing)
    try:
        assert done.status()["status"] == "needs_review"
        with pytest.raises(FeatureError, match="not a phase of the workflow"):
            done.service.retry(done.feature, phase="reviewer", workspace=done.root)
        service = in_memory_service(scripted_config(tmp_path / "state"))
        answer = service.retry(done.feature, phase="verifier", workspace=done.root, spawn=False)
        assert [Path(p).name for p in answer["set_aside"]] == ["007-verify-complete.md"]
        assert Path(answer["set_aside"][0]).is_file()
        serve(service, done.root)
        assert done.status()["status"] == "completed"
        assert [a.state for a in done.attempts("verifier")] == ["refused", "reset", "completed"]
        assert [a.state for a in done.attempts("implementer")] == ["completed"]
        with pytest.raises(FeatureError, match="only a failed, paused, cancelled"):
            service.retry(done.feature, workspace=done.root)
        service.close()
    finally:
        done.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_retry_of_refused_work_tells_the_implementer_what_the_reviewer_found(
    tmp_path: Path,
) -> None:
    refusing = scripted_config(tmp_path / "state", fault="verifier:refuse:always", rework_rounds=0)
    done = run_workflow(tmp_path, refusing)
    try:
        assert done.status()["status"] == "needs_review"
        service = in_memory_service(scripted_config(tmp_path / "state"))
        answer = service.retry(done.feature, workspace=done.root, spawn=False)
        assert answer["retry_from"] == "implementer"
        review = answer["set_aside"][-1]
        serve(service, done.root)
        service.close()
        assert done.status()["status"] == "completed"
        told = [
            e["data"]["told"] for e in done.events("session.started")
            if e["data"]["phase"] == "implementer"
        ]  # fmt: skip
        assert told[0] is None
        assert f"Read the review in {review}" in told[-1]
        assert "Feature ready for merge: NO" in Path(review).read_text()
        assert str(done.init.checkpoint_dir / "005-impl-complete.md") in told[-1]
    finally:
        done.close()
