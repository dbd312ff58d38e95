"""The run's workflow: one execution per run (id ``tmops/<workspace>/<feature>/<run>``), each
phase attempt an update that runs the attempt activity on the workspace's task queue.

The workflow holds the one rule no engine can keep alone once machines fail: one attempt of a
run at a time. An attempt that arrives while another runs (the next engine's, after the one
that asked for the first died) stops the running one first, waiting until its worker says the
agent is gone; an attempt older than one already asked for is refused as superseded (older:
under a lower fencing token, which each engine taking the run over raises, or with a lower
attempt id, the store's record of it, which grows with every attempt). The
engine still judges every result; the workflow only schedules, cancels and answers.

Deterministic by construction: no clock, no I/O, only the SDK's scheduling, so its histories
replay (tests/data/temporal/). A retried activity is an attempt lost with its worker (its
heartbeat stopped): it runs again on whichever worker takes it; the agent's own failures are
not exceptions but results. The workflow ends once no attempt was asked for during
``idle_timeout_s`` (a run paused for a person, or finished); the run's next attempt starts it
again under the same id.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

__all__ = [
    "ATTEMPT_ACTIVITY",
    "ATTEMPT_UPDATE",
    "CANCELLED",
    "NOT_RETRIED",
    "SUPERSEDED",
    "RunWorkflow",
]

ATTEMPT_ACTIVITY = "tmops-attempt"
ATTEMPT_UPDATE = "attempt"
#: the activity's errors that a run on another worker would not cure (a bad job, a git refusal)
NOT_RETRIED = "TmopsError"
#: an attempt's answer when it was cancelled (by its engine, or by a newer attempt)
CANCELLED = "cancelled"
SUPERSEDED = "superseded"


@workflow.defn(name="tmops-run")
class RunWorkflow:
    def __init__(self) -> None:
        #: (fencing token, attempt id) of the newest attempt asked for: the only one to run
        self._newest: tuple[int, int] = (-1, -1)
        self._running: workflow.ActivityHandle[dict[str, Any]] | None = None
        self._running_key: tuple[int, int] | None = None
        self._cancelled: set[tuple[int, int]] = set()
        self._asked = 0
        self._asked_before = 0

    @workflow.run
    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        idle = timedelta(seconds=params["idle_timeout_s"])
        while True:  # idle time counts from the end of the last attempt
            await workflow.wait_condition(self._idle)
            self._asked_before = self._asked
            try:
                await workflow.wait_condition(self._asked_since, timeout=idle)
            except TimeoutError:
                if self._idle():
                    break
        return {"attempts": self._asked}

    def _idle(self) -> bool:
        return self._running is None and workflow.all_handlers_finished()

    def _asked_since(self) -> bool:
        return self._asked != self._asked_before

    @workflow.update(name=ATTEMPT_UPDATE)
    async def attempt(self, order: dict[str, Any]) -> dict[str, Any]:
        job = order["job"]
        key = (int(job["fencing"]), int(job["attempt_id"]))
        self._asked += 1
        if key <= self._newest:
            return {"outcome": SUPERSEDED}
        self._newest = key
        if self._running is not None:  # a stale attempt still runs: its agent stops first
            self._running.cancel()
        await workflow.wait_condition(lambda: self._running is None)
        if self._newest != key:
            return {"outcome": SUPERSEDED}
        if key in self._cancelled:
            return {"outcome": CANCELLED}
        handle = workflow.start_activity(
            ATTEMPT_ACTIVITY,
            order["job"],
            start_to_close_timeout=timedelta(seconds=order["attempt_timeout_s"]),
            schedule_to_start_timeout=timedelta(seconds=order["schedule_timeout_s"]),
            heartbeat_timeout=timedelta(seconds=order["heartbeat_timeout_s"]),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=1.0,
                maximum_attempts=order["max_attempts"],
                non_retryable_error_types=[NOT_RETRIED],
            ),
            # the answer waits until the worker has stopped the agent: never two at once
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            result_type=dict,
        )
        self._running, self._running_key = handle, key
        try:
            result: dict[str, Any] = await handle
            return {"outcome": "done", "result": result}
        except (ActivityError, asyncio.CancelledError) as exc:
            if key in self._cancelled:
                return {"outcome": CANCELLED}
            if self._newest != key:
                return {"outcome": SUPERSEDED}
            raise ApplicationError(_root_cause(exc), type=NOT_RETRIED) from exc
        finally:
            self._running = self._running_key = None

    @workflow.signal(name="cancel")
    def cancel(self, key: list[int]) -> None:
        """Stop the attempt ``key`` (fencing token, attempt id; its engine's cancel): at its
        worker's next heartbeat."""
        wanted = (int(key[0]), int(key[1]))
        self._cancelled.add(wanted)
        if self._running is not None and self._running_key == wanted:
            self._running.cancel()


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of an activity's failure (the worker's own error), as text."""
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[attr-defined]
    return str(exc) or type(exc).__name__
