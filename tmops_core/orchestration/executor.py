"""The built-in executor: one attempt run in the engine's own process tree through the
supervisor.

It builds the agent's invocation from the provider, starts the process, feeds every output line
to the provider, reports through the run's :class:`~tmops_hookspecs.AttemptHooks` (which fence
every change), and waits for BOTH the agent's exit and its completion checkpoint: a checkpoint
without an exit gets a grace period, then the agent is stopped. It waits on events (the
supervisor's end of the process, the hooks' checkpoint arrival and cancel), never on a poll.
A request the provider refuses (``ProviderError``) is a failed attempt in which no agent ran.
It never judges a checkpoint, never commits and never touches the store itself.
"""

from __future__ import annotations

import threading
import time

import attrs

from tmops_core.agents.env import build_env
from tmops_core.agents.supervisor import AgentProcess, Limits, ProcessOutcome
from tmops_core.orchestration.crashpoints import crash_point
from tmops_hookspecs import (
    AgentEvent,
    AgentResult,
    AttemptHooks,
    AttemptOutcome,
    AttemptSpec,
    Outcome,
    Provider,
    ProviderError,
)

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Runs attempts as child processes of this engine.

    ``wakeups`` counts how often an attempt's wait woke up (a test hook: a wait that spins
    shows up as a count, not as a time).
    """

    name = "local"

    def __init__(self) -> None:
        self.wakeups = 0

    def execute(self, spec: AttemptSpec, provider: Provider, hooks: AttemptHooks) -> AttemptOutcome:
        try:
            invocation = provider.build_invocation(spec.request)
        except ProviderError as exc:  # refused by the provider: a failed attempt, no agent ran
            result = AgentResult(outcome=Outcome.FAILED, message=str(exc))
            return AttemptOutcome(result=result, checkpoint_present=spec.checkpoint.exists())
        events: list[AgentEvent] = []
        session: dict[str, str | None] = {"id": spec.request.resume_session_id}

        def on_line(line: str) -> None:
            for event in provider.parse_line(line):
                events.append(event)
                hooks.event(event)
                if event.session_id and event.session_id != session["id"]:
                    session["id"] = event.session_id
                    hooks.session(event.session_id)

        process = AgentProcess(
            invocation.argv,
            cwd=spec.request.working_dir,
            env=build_env({**spec.env, **invocation.env}, allow=spec.env_allow),
            log_path=spec.log_path,
            limits=Limits(wall_clock_s=spec.wall_clock_s, idle_s=spec.idle_s),
            on_line=on_line,
            stdin=invocation.stdin,
        )
        pid = process.start()
        try:
            hooks.started(pid, process.start_time, process.mark)
        except BaseException:
            process.stop("cancelled")  # this attempt lost its run: its agent must not go on
            raise
        crash_point("after-spawn")
        outcome = self._await(process, spec, hooks)
        result = provider.finish(outcome.returncode, events, outcome.stderr_tail)
        if outcome.stop_reason in {"wall_clock", "idle"}:
            result = attrs.evolve(
                result, outcome=Outcome.TIMED_OUT,
                message=f"the agent was stopped: {outcome.stop_reason.replace('_', ' ')} timeout",
            )  # fmt: skip
        elif outcome.stop_reason == "cancelled":
            result = attrs.evolve(result, outcome=Outcome.CANCELLED, message="cancelled")
        return AttemptOutcome(
            result=result,
            checkpoint_present=spec.checkpoint.exists(),
            session_id=result.session_id or session["id"],
            stop_reason=outcome.stop_reason,
            returncode=outcome.returncode,
        )

    def _await(
        self, process: AgentProcess, spec: AttemptSpec, hooks: AttemptHooks
    ) -> ProcessOutcome:
        """Block until the agent exits, the attempt is cancelled, or the grace after its
        checkpoint runs out: woken by the process's end and the hooks' changes, never polled."""
        changed = threading.Event()
        process.add_done_callback(changed.set)
        unsubscribe = hooks.on_change(changed.set)
        try:
            grace_until: float | None = None
            while True:
                changed.clear()  # before looking: a change from here on wakes the wait below
                outcome = process.wait(timeout=0)
                if outcome is not None:
                    return outcome
                if hooks.cancelled():
                    return process.stop("cancelled")
                now = time.monotonic()
                if hooks.checkpoint_seen():
                    if grace_until is None:
                        grace_until = now + spec.checkpoint_grace_s
                    elif now >= grace_until:
                        return process.stop("stopped")
                changed.wait(None if grace_until is None else grace_until - now)
                self.wakeups += 1
        finally:
            unsubscribe()
