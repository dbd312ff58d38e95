"""The engine's side of the temporal executor: an attempt handed to the run's workflow, the
worker's progress read from its heartbeats, a cancel sent when the run is taken, the result
settled by the core (the worker's work into the engine's worktree, fenced by the run).

The agent runs on a worker's machine: it is recorded with start time -1, which matches no
process here, so nothing on the engine's machine signals it; it is stopped through Temporal.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from tmops_hookspecs import (
    AgentResult,
    AttemptHooks,
    AttemptOutcome,
    AttemptSpec,
    ExecutorHost,
    Outcome,
    Provider,
    TmopsError,
)

from .progress import REMOTE_START_TIME, Progress
from .runtime import run_with_own_runtime
from .settings import TemporalSettings, task_queue, workflow_id
from .workflow import ATTEMPT_UPDATE, RunWorkflow

__all__ = ["REMOTE_START_TIME", "TemporalExecutor"]

#: how often the engine reads the workflow's heartbeat details and its own run's token
_POLL_S = 0.5


class TemporalExecutor:
    name = "temporal"

    def __init__(self, settings: TemporalSettings, host: ExecutorHost) -> None:
        self.settings = settings
        self.host = host

    def execute(self, spec: AttemptSpec, provider: Provider, hooks: AttemptHooks) -> AttemptOutcome:
        try:
            # a runtime of the attempt's own: the SDK's default one may abort the engine as
            # it exits (see runtime.py)
            result = run_with_own_runtime(lambda runtime: self._run(spec, hooks, runtime))
        except _Unreachable as exc:  # retried by the run with its backoff, like a 529
            failed = AgentResult(outcome=Outcome.TRANSIENT_ERROR, message=str(exc))
            return AttemptOutcome(result=failed, checkpoint_present=spec.checkpoint.exists())
        if result is None:
            cancelled = AgentResult(outcome=Outcome.CANCELLED, message="cancelled")
            return AttemptOutcome(result=cancelled, checkpoint_present=False,
                                  stop_reason="cancelled")  # fmt: skip
        if "error" in result:
            failed = AgentResult(outcome=Outcome.FAILED, message=result["error"])
            return AttemptOutcome(result=failed, checkpoint_present=spec.checkpoint.exists())
        return self.host.settle(spec, result, hooks)

    def order(self, job: dict[str, Any]) -> dict[str, Any]:
        """The attempt update's input: the job and the activity's options."""
        return {
            "job": job,
            "heartbeat_timeout_s": self.settings.heartbeat_timeout_s,
            "attempt_timeout_s": self.settings.attempt_timeout_s,
            "schedule_timeout_s": self.settings.schedule_timeout_s,
            "max_attempts": self.host.max_retries + 1,
        }

    async def _run(
        self, spec: AttemptSpec, hooks: AttemptHooks, runtime: Runtime
    ) -> dict[str, Any] | None:
        try:
            client = await Client.connect(
                self.settings.address, namespace=self.settings.namespace, runtime=runtime
            )
        except RuntimeError as exc:  # the SDK's "Failed client connect: ..."
            raise _Unreachable(
                f"cannot reach the Temporal server at {self.settings.address}: {exc}"
            ) from exc
        try:  # published only once there is someone to hand it to
            job = self.host.job(spec)
        except TmopsError as exc:  # the remote away a moment: retried with the run's backoff
            raise _Unreachable(f"cannot publish the run to the shared remote: {exc}") from exc
        run_id = workflow_id(self.host.workspace_id, spec.feature, spec.run)
        handle = client.get_workflow_handle(run_id)
        key = [spec.fencing, spec.attempt_id]
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(changed.set)

        stop_watching = hooks.on_change(wake)
        progress = Progress(hooks)
        ending = asyncio.ensure_future(self._ask(client, run_id, job, progress))
        cancel_sent_at: float | None = None
        try:
            while not ending.done():
                if hooks.cancelled() and cancel_sent_at is None:
                    cancel_sent_at = loop.time()
                    with contextlib.suppress(RPCError):  # not started yet: nothing runs
                        await handle.signal(RunWorkflow.cancel, key)
                if cancel_sent_at is not None and (
                    not progress.accepted or loop.time() - cancel_sent_at > self._stop_bound_s
                ):
                    ending.cancel()  # no worker has it, or its worker is gone: nothing runs
                    return None
                await progress.relay(client, handle)
                changed.clear()
                waiter = asyncio.ensure_future(changed.wait())
                await asyncio.wait({ending, waiter}, timeout=_POLL_S,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                waiter.cancel()
            try:
                answer: dict[str, Any] = await ending
            except WorkflowUpdateFailedError as exc:
                return {"error": f"the worker failed the attempt: {_root_cause(exc)}"}
        except RPCError as exc:  # the server went away mid-attempt: the run tries again
            raise _Unreachable(
                f"lost the Temporal server at {self.settings.address}: {exc}"
            ) from exc
        except BaseException:
            ending.cancel()
            with contextlib.suppress(Exception):  # the engine lost the run: its worker stops
                await handle.signal(RunWorkflow.cancel, key)
            raise
        finally:
            stop_watching()
        if answer.get("outcome") != "done":  # cancelled, or superseded by a newer attempt
            return None
        if not progress.started:  # ended before a heartbeat said so: say it now
            hooks.started(0, REMOTE_START_TIME, None)
        return progress.unrelayed(answer["result"])

    @property
    def _stop_bound_s(self) -> float:
        """How long a cancelled attempt's worker has to confirm its agent stopped."""
        return 2 * self.settings.heartbeat_timeout_s + 5.0

    async def _ask(
        self, client: Client, run_id: str, job: dict[str, Any], progress: Progress
    ) -> dict[str, Any]:
        """The attempt as an update of the run's workflow (started if it is not running),
        answered once the attempt ended on a worker."""
        for tries_left in (1, 0):
            start = WithStartWorkflowOperation(
                RunWorkflow.run, {"idle_timeout_s": self.settings.run_idle_timeout_s},
                id=run_id, task_queue=task_queue(self.settings, self.host.workspace_id),
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )  # fmt: skip
            try:
                update = await client.start_update_with_start_workflow(
                    ATTEMPT_UPDATE, self.order(job), start_workflow_operation=start,
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=dict,
                    # one id per attempt: a repeat of the call gets the same answer
                    id=f"attempt-f{job['fencing']}-{job['attempt_id']}",
                )  # fmt: skip
            except RPCError as exc:
                # the workflow was ending (idle) as the attempt arrived: start the next one
                if tries_left and exc.status == RPCStatusCode.NOT_FOUND:
                    continue
                raise
            progress.accepted = True
            answer: dict[str, Any] = await update.result()
            return answer
        raise AssertionError("unreachable")  # pragma: no cover


class _Unreachable(Exception):
    """The Temporal server does not answer."""


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of a workflow's failure (the activity's own error)."""
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[attr-defined]
    return exc
