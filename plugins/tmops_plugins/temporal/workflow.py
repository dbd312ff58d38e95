"""The run's workflow: one attempt of the run as an activity on the workspace's task queue.

Deterministic by construction: it only schedules the activity with the options the engine
chose (timeouts, the retry policy from ``features.max_retries``) and returns its result, so
its histories replay (tests/data/temporal/). A retried activity is an attempt lost with its
worker (its heartbeat stopped): it runs again on whichever worker takes it; the agent's own
failures are not exceptions but results, judged by the engine.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

__all__ = ["ATTEMPT_ACTIVITY", "NOT_RETRIED", "RunWorkflow"]

ATTEMPT_ACTIVITY = "tmops-attempt"
#: the activity's errors that a run on another worker would not cure (a bad job, a git refusal)
NOT_RETRIED = "TmopsError"


@workflow.defn(name="tmops-run")
class RunWorkflow:
    @workflow.run
    async def run(self, order: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
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
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            result_type=dict,
        )
        return result
