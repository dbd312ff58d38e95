"""The engine, end to end: ``start`` queues, the engine drives the four phases with REAL processes.

A full run through the ``claude-code`` provider (and one through the ``command`` provider), and
everything it leaves behind: checkpoints, commits, metrics, logs, events and status. The agent
is the scripted stand-in for ``claude -p`` (``tmops-scripted-agent``): it writes tests, code and
checkpoints in the feature's worktree and commits them, so a whole run takes a few seconds.

Runs that several tests read are module-scoped and run once; each test checks one behaviour.
The helpers are in ``engine_support.py``.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import (
    COMPLETIONS,
    FEAT_SUBJECT,
    PHASES,
    TEST_COMMAND,
    TEST_SUBJECT,
    TRIGGERS,
    Finished,
    by_phase,
    git,
    jsonl_events,
    run_workflow,
    scripted_config,
)
from tmops_core.surfaces.demo import scripted_agent_config
from tmops_hookspecs import FeatureError
from tmops_plugins.scripted_provider import SCRIPTED_ARGS

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
    # the store's trail also holds the init (another correlation id: it is not the run's)
    stored = [e for e in full.events() if e["event_type"] != "orchestration.feature.initialized"]
    assert [e["event_type"] for e in mine] == [e["event_type"] for e in stored]
    for sink_event, store_event in zip(mine, stored, strict=True):
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
    # the scripted agent as any program is run: through the command provider's argv template
    data: dict[str, Any] = scripted_agent_config(default_provider="command")
    data["providers"] = {"command": {
        "command": sys.executable, "args": list(SCRIPTED_ARGS),
        "env": {"TMOPS_SCRIPTED_STATE_DIR": str(base / "state")}}}  # fmt: skip
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
