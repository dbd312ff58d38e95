"""Usage limits with a real ``tmops engine`` process and the scripted agent: a usage-limited
run pauses until the reset the agent reported and resumes by itself (not with
``features.resume_after_usage_limit: false``); the time is in the store, so an engine killed
while it waits loses nothing; and one limit holds the provider's other queued runs back instead
of failing them one by one."""

from __future__ import annotations

import signal
from pathlib import Path
from subprocess import Popen

import pytest

from tmops_core.orchestration.scheduler import held_providers
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.store import RunRecord

from .engine_support import (
    SHORT_WORKFLOW,
    WAIT_S,
    new_feature,
)
from .takeover_support import RUN, Project, make_project, wait_until

OTHER = "other-feature"


def _paused(project: Project, feature: str = DEMO_FEATURE) -> RunRecord | None:
    run = project.store.run(feature, RUN)
    return run if run is not None and run.status == "paused" else None


def _resumed_events(project: Project, feature: str = DEMO_FEATURE) -> list[dict[str, object]]:
    rows = project.service.events_since(feature, workspace=project.root)
    return [e["data"] for e in rows if e["event_type"] == "orchestration.run.resumed"]


def _started_until_paused(project: Project, *engine_args: str) -> tuple[Popen[bytes], RunRecord]:
    """Start the demo feature, serve it with a real engine; the engine and the paused run."""
    project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
    engine = project.engine(*engine_args)
    return engine, wait_until(lambda: _paused(project), timeout=WAIT_S, what="the usage limit")


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_a_usage_limited_run_resumes_by_itself_at_the_reset_and_completes(tmp_path: Path) -> None:
    # the reset is far enough ahead for two `tmops` commands to see the pause on a busy machine
    project = make_project(tmp_path, fault="tester:usage-limit=10", default_phases=SHORT_WORKFLOW)
    try:
        engine, paused = _started_until_paused(project)
        assert paused.pause_reason == "usage_limited"
        assert paused.resume_at is not None
        assert f"the run resumes by itself at {paused.resume_at}" in str(paused.last_error)
        status = project.service.status(DEMO_FEATURE, workspace=project.root)
        assert status["resume_at"] == paused.resume_at
        assert f"paused: usage limit, resumes at {paused.resume_at}" in status["next_action"]
        shown = project.cli("list").stdout
        assert f"paused (usage limit, resumes at {paused.resume_at})" in shown
        # nobody resumes it: the engine waits (it does not go idle) and queues it at the reset;
        # `tmops watch` follows the run on through the pause, to its end
        watched = project.cli("watch", DEMO_FEATURE, timeout=WAIT_S)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert f"resumes at {paused.resume_at}" in watched.stdout
        assert "following on (Ctrl-C stops it)" in watched.stdout
        finished = wait_until(
            lambda: project.run() if project.run().status == "completed" else None,
            timeout=WAIT_S, what="the run to complete after the reset",
        )  # fmt: skip
        assert finished.resume_at is None
        assert engine.wait(timeout=WAIT_S) == 0
        assert [a.state for a in project.attempts("tester")] == ["paused", "completed"]
        (resumed,) = _resumed_events(project)
        assert resumed["actor"] == "tmops"
        assert f"the usage limit lifted at {paused.resume_at}" in str(resumed["reason"])
    finally:
        project.close()


def test_with_resume_after_usage_limit_off_the_run_stays_paused(tmp_path: Path) -> None:
    project = make_project(
        tmp_path, fault="tester:usage-limit=1", default_phases=SHORT_WORKFLOW,
        resume_after_usage_limit=False,
    )  # fmt: skip
    try:
        engine, _ = _started_until_paused(project, "--idle-exit", "0.2")
        # nothing waits for the run, so the engine goes idle and leaves it paused
        assert engine.wait(timeout=WAIT_S) == 0
        run = project.run()
        assert (run.status, run.pause_reason) == ("paused", "usage_limited")
        assert run.resume_at is not None
        assert f"the limit lifts at {run.resume_at}; `tmops resume` goes on" in str(run.last_error)
        status = project.service.status(DEMO_FEATURE, workspace=project.root)
        assert "features.resume_after_usage_limit is off" in status["next_action"]
        assert _resumed_events(project) == []
        assert [a.state for a in project.attempts("tester")] == ["paused"]
    finally:
        project.close()


def test_an_engine_killed_while_a_run_waits_loses_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path, fault="tester:usage-limit=4", default_phases=SHORT_WORKFLOW)
    try:
        first, paused = _started_until_paused(project)
        first.send_signal(signal.SIGKILL)
        first.wait()
        # the next engine finds the time in the store and honours it
        second = project.engine()
        wait_until(
            lambda: project.run().status == "completed", timeout=WAIT_S, what="completed",
        )  # fmt: skip
        assert second.wait(timeout=WAIT_S) == 0
        (resumed,) = _resumed_events(project)
        assert f"lifted at {paused.resume_at}" in str(resumed["reason"])
    finally:
        project.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_one_usage_limit_holds_back_the_other_runs_of_its_provider(tmp_path: Path) -> None:
    project = make_project(tmp_path, fault="tester:usage-limit=4", default_phases=SHORT_WORKFLOW)
    new_feature(project.service, project.root, OTHER)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        project.service.start(OTHER, workspace=project.root, spawn=False)
        engine = project.engine()
        paused = wait_until(lambda: _paused(project), timeout=WAIT_S, what="the usage limit")
        # the slot is free, but the other run's provider is usage-limited: it stays queued
        other = project.service.status(OTHER, workspace=project.root)
        assert other["status"] == "queued"
        assert other["held_until"] == paused.resume_at
        assert f"usage-limited until {paused.resume_at}" in other["next_action"]
        assert project.store.attempts(OTHER, RUN) == []
        assert (
            f"queued #1 (held: usage limit until {paused.resume_at})" in project.cli("list").stdout
        )
        # at the reset both go on; neither fails
        project.wait_completed(DEMO_FEATURE, OTHER)
        assert engine.wait(timeout=WAIT_S) == 0
        first_of_other = project.store.attempts(OTHER, RUN)[0]
        assert first_of_other.started_at >= str(paused.resume_at)
    finally:
        project.close()


def _two_providers(base: Path, fault: str) -> Project:
    """The demo feature on ``claude-code`` (with ``fault``) and :data:`OTHER` to run on the
    ``command`` provider: the same scripted agent from an argv template, without the fault."""
    project = make_project(base, fault=fault, command_env={}, default_phases=SHORT_WORKFLOW)
    new_feature(project.service, project.root, OTHER)
    return project


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_a_usage_limit_holds_back_only_its_own_provider(tmp_path: Path) -> None:
    project = _two_providers(tmp_path, "tester:usage-limit=10")
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        project.service.start(OTHER, provider="command", workspace=project.root, spawn=False)
        engine = project.engine()
        paused = wait_until(lambda: _paused(project), timeout=WAIT_S, what="the usage limit")
        # the other provider's run goes on while claude-code's limit holds
        project.wait_completed(OTHER)
        first_of_other = project.store.attempts(OTHER, RUN)[0]
        assert first_of_other.provider == "command"
        assert first_of_other.started_at < str(paused.resume_at)
        wait_until(
            lambda: project.run().status == "completed", timeout=2 * WAIT_S, what="completed"
        )
        assert engine.wait(timeout=WAIT_S) == 0
    finally:
        project.close()


def test_only_the_limited_provider_is_held_and_only_until_its_reset() -> None:
    def paused(feature: str, provider: str, resume_at: str) -> RunRecord:
        return RunRecord(
            feature=feature, run=RUN, status="paused", created_at="", updated_at="",
            provider=provider, pause_reason="usage_limited", resume_at=resume_at,
        )  # fmt: skip

    waits = [
        paused("a", "claude-code", "2026-01-01T10:00:00Z"),
        paused("b", "claude-code", "2026-01-01T11:00:00Z"),
        paused("c", "command", "2026-01-01T09:00:00Z"),
    ]
    assert held_providers(waits, "2026-01-01T09:30:00Z") == {"claude-code": "2026-01-01T11:00:00Z"}
    assert held_providers(waits, "2026-01-01T08:00:00Z") == {
        "claude-code": "2026-01-01T11:00:00Z",
        "command": "2026-01-01T09:00:00Z",
    }
    assert held_providers(waits, "2026-01-01T11:00:00Z") == {}
