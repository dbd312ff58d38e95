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

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from tmops_hookspecs import (
    AgentResult,
    AttemptHooks,
    AttemptOutcome,
    AttemptSpec,
    ExecutorHost,
    Outcome,
    Provider,
)

from .settings import TemporalSettings, task_queue, workflow_id
from .workflow import RunWorkflow

__all__ = ["REMOTE_START_TIME", "TemporalExecutor"]

#: the start time a worker's agent is recorded with: no process of this machine has it
REMOTE_START_TIME = -1
#: how often the engine reads the workflow's heartbeat details and its own run's token
_POLL_S = 0.5


class TemporalExecutor:
    name = "temporal"

    def __init__(self, settings: TemporalSettings, host: ExecutorHost) -> None:
        self.settings = settings
        self.host = host

    def execute(self, spec: AttemptSpec, provider: Provider, hooks: AttemptHooks) -> AttemptOutcome:
        try:
            result = asyncio.run(self._run(spec, hooks))
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
        """The workflow's input: the job and the activity's options."""
        return {
            "job": job,
            "heartbeat_timeout_s": self.settings.heartbeat_timeout_s,
            "attempt_timeout_s": self.settings.attempt_timeout_s,
            "schedule_timeout_s": self.settings.schedule_timeout_s,
            "max_attempts": self.host.max_retries + 1,
        }

    async def _run(self, spec: AttemptSpec, hooks: AttemptHooks) -> dict[str, Any] | None:
        try:
            client = await Client.connect(self.settings.address, namespace=self.settings.namespace)
        except RuntimeError as exc:  # the SDK's "Failed client connect: ..."
            raise _Unreachable(
                f"cannot reach the Temporal server at {self.settings.address}: {exc}"
            ) from exc
        job = self.host.job(spec)  # published only once there is someone to hand it to
        workspace = self.host.workspace_id
        handle = await client.start_workflow(
            RunWorkflow.run, self.order(job),
            id=workflow_id(workspace, spec.feature, spec.run),
            task_queue=task_queue(self.settings, workspace),
            # a run has one attempt at a time: one left running by a dead engine goes
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(changed.set)

        stop_watching = hooks.on_change(wake)
        ending = asyncio.ensure_future(handle.result())
        seen: dict[str, Any] = {}
        try:
            while not ending.done():
                if hooks.cancelled():
                    await handle.cancel()
                    break
                await self._relay(client, handle, hooks, seen)
                changed.clear()
                waiter = asyncio.ensure_future(changed.wait())
                await asyncio.wait({ending, waiter}, timeout=_POLL_S,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                waiter.cancel()
            try:
                result: dict[str, Any] = await ending
            except WorkflowFailureError as exc:
                if hooks.cancelled():
                    return None
                return {"error": f"the worker failed the attempt: {_root_cause(exc)}"}
        except RPCError as exc:  # the server went away mid-attempt: the run tries again
            raise _Unreachable(
                f"lost the Temporal server at {self.settings.address}: {exc}"
            ) from exc
        except BaseException:
            with contextlib.suppress(Exception):  # the engine lost the run: its worker stops
                await handle.cancel()
            raise
        finally:
            stop_watching()
        if "pid" not in seen:  # ended before a heartbeat said so: say it now
            hooks.started(0, REMOTE_START_TIME, None)
        return result

    async def _relay(
        self, client: Client, handle: WorkflowHandle[Any, Any], hooks: AttemptHooks,
        seen: dict[str, Any],
    ) -> None:  # fmt: skip
        """The agent's pid and session from the latest heartbeat, into the run's records."""
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if not pending.heartbeat_details.payloads:
                continue
            details = await client.data_converter.decode(pending.heartbeat_details.payloads)
            progress = details[0] if details and isinstance(details[0], dict) else {}
            pid = progress.get("pid")
            if pid and seen.get("pid") != (pid, pending.attempt):
                seen["pid"] = (pid, pending.attempt)
                hooks.started(int(pid), REMOTE_START_TIME, None)
            session = progress.get("session_id")
            if session and seen.get("session") != session:
                seen["session"] = session
                hooks.session(str(session))


class _Unreachable(Exception):
    """The Temporal server does not answer."""


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of a workflow's failure (the activity's own error)."""
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[attr-defined]
    return exc
