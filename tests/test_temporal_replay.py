"""The run workflow replays a history recorded from a real four-phase run against the dev server
(tests/data/temporal/run-attempt.json; recorded again by the slow test's
TMOPS_RECORD_TEMPORAL_HISTORY=1): a change that would break running workflows fails here."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

if os.environ.get("TMOPS_REQUIRE_TEMPORAL") != "1":
    pytest.importorskip("temporalio", reason="the temporal extra is not installed")

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tmops_plugins.temporal.workflow import ATTEMPT_ACTIVITY, RunWorkflow

HISTORY = Path(__file__).parent / "data" / "temporal" / "run-attempt.json"


def _replay(history: str) -> BaseException | None:
    replayer = Replayer(workflows=[RunWorkflow])
    result = asyncio.run(replayer.replay_workflow(WorkflowHistory.from_json("recorded", history),
                                                  raise_on_replay_failure=False))  # fmt: skip
    return result.replay_failure


def test_the_recorded_history_replays() -> None:
    text = HISTORY.read_text()
    events = json.loads(text)["events"]
    kinds = [event["eventType"] for event in events]
    # the whole run: its four attempts as updates, each one activity, then idle to the end
    assert kinds.count("EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED") == 4
    assert kinds.count("EVENT_TYPE_ACTIVITY_TASK_COMPLETED") == 4
    assert kinds[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    assert _replay(text) is None


def test_a_workflow_that_schedules_something_else_does_not_replay() -> None:
    # The replay is a real check: the same history with another activity name is refused.
    text = HISTORY.read_text().replace(f'"{ATTEMPT_ACTIVITY}"', '"tmops-other"')
    assert "tmops-other" in text
    failure = _replay(text)
    assert failure is not None
    assert "nondetermin" in str(failure).lower()
