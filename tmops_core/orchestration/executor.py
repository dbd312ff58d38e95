"""The built-in executor: one attempt run in the engine's own process tree through the
supervisor.

It builds the agent's invocation from the provider, starts the process, feeds every output line
to the provider, reports through the run's :class:`~tmops_hookspecs.AttemptHooks` (which fence
every change), and waits for BOTH the agent's exit and its completion checkpoint: a checkpoint
without an exit gets a grace period, then the agent is stopped. It never judges a checkpoint,
never commits and never touches the store itself.
"""

from __future__ import annotations

import time

import attrs

from tmops_core.agents.env import build_env
from tmops_core.agents.supervisor import AgentProcess, Limits
from tmops_core.orchestration.crashpoints import crash_point
from tmops_hookspecs import (
    AgentEvent,
    AttemptHooks,
    AttemptOutcome,
    AttemptSpec,
    Outcome,
    Provider,
)

__all__ = ["LocalExecutor"]

_POLL_S = 0.005


class LocalExecutor:
    """Runs attempts as child processes of this engine."""

    name = "local"

    def execute(self, spec: AttemptSpec, provider: Provider, hooks: AttemptHooks) -> AttemptOutcome:
        invocation = provider.build_invocation(spec.request)
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
        outcome = None
        grace_until: float | None = None
        while outcome is None:
            outcome = process.wait(timeout=_POLL_S)
            if outcome is not None:
                break
            if hooks.cancelled():
                outcome = process.stop("cancelled")
            elif hooks.checkpoint_seen():
                if grace_until is None:
                    grace_until = time.monotonic() + spec.checkpoint_grace_s
                elif time.monotonic() > grace_until:
                    outcome = process.stop("stopped")
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
