"""One run of one feature through its workflow: the per-run state machine.

For each phase: write the trigger checkpoint (unless present), mark the phase-start commit,
start the agent in the feature's worktree, wait for BOTH its completion checkpoint and its
exit, validate the checkpoint, run the gates, commit what the agent left, and record the
transition in one store transaction. A rejected or failed attempt is retried (resuming the
same agent session, told why) up to ``features.max_retries``. Every store write carries the
run's fencing token, so an engine that lost the run can never move it on.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from loguru import logger

from tmops_core.agents.env import build_env
from tmops_core.agents.supervisor import AgentProcess, Limits
from tmops_core.checkpoints.parse import parse_checkpoint
from tmops_core.checkpoints.validate import run_validators
from tmops_core.checkpoints.watch import CheckpointWatcher
from tmops_core.config import Config, ProviderConfig
from tmops_core.events import EventBus
from tmops_core.git import Git
from tmops_core.orchestration.crashpoints import crash_point
from tmops_core.orchestration.gates import run_gates
from tmops_core.orchestration.summary import write_summary
from tmops_core.plugins import Plugins
from tmops_core.store.sqlite import LostOwnership, Store
from tmops_core.workspace.layout import (
    FeatureLine,
    Layout,
    atomic_write,
    check_run_paths,
    iso,
    rename_checked,
    utc_now,
    write_feature_line,
)
from tmops_hookspecs import (
    AgentEvent,
    AgentRequest,
    AgentResult,
    FeatureContext,
    Outcome,
    PhaseSpec,
    Provider,
    Severity,
    TmopsError,
)

__all__ = ["RunDriver", "provider_settings"]

_TRANSIENT_BACKOFF_S = (1.0, 4.0, 15.0)


def provider_settings(config: Config, name: str) -> dict[str, Any]:
    """The config section of provider ``name`` (the seed spells ``claude-code`` ``claude_code``)."""
    section = config.providers.get(name) or config.providers.get(name.replace("-", "_"))
    return attrs.asdict(section or ProviderConfig(), recurse=False)


@attrs.define
class _Attempt:
    """What one agent attempt produced, for the decision that follows it."""

    result: AgentResult
    stop_reason: str | None
    checkpoint: bool
    session_id: str | None


class _Arrivals:
    """Checkpoint files seen by the watcher, with the time each was seen."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._condition = threading.Condition()

    def __call__(self, path: Path) -> None:
        with self._condition:
            self._seen.setdefault(path.name, time.time())
            self._condition.notify_all()

    def seen_at(self, name: str) -> float | None:
        with self._condition:
            return self._seen.get(name)

    def forget(self, name: str) -> None:
        with self._condition:
            self._seen.pop(name, None)

    def wait(self, name: str, timeout: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: name in self._seen, timeout)


class RunDriver:
    """Drives one queued-and-admitted run to its end (completed, failed, paused, cancelled)."""

    def __init__(
        self,
        *,
        config: Config,
        plugins: Plugins,
        events: EventBus,
        store: Store,
        layout: Layout,
        feature: str,
        run: str,
        fencing: int,
        cancel: threading.Event,
        retry_backoff_s: tuple[float, ...] = _TRANSIENT_BACKOFF_S,
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.events = events
        self.store = store
        self.layout = layout
        self.feature = feature
        self.run = run
        self.fencing = fencing
        self.cancel = cancel
        self.backoff = retry_backoff_s
        record = store.feature(feature)
        run_record = store.run(feature, run)
        if record is None or run_record is None:
            raise TmopsError(f"feature {feature} run {run} is not in the store")
        self.worktree = Path(record.worktree)
        self.branch = record.branch
        self.provider_name = run_record.provider or config.features.default_provider
        self.correlation_id = run_record.run_id or f"{feature}/{run}"
        self.checkpoint_dir = layout.checkpoint_dir(feature, run)
        self.git = Git(self.worktree)
        self.arrivals = _Arrivals()
        self._head: str | None = None  # the worktree's HEAD after the last handoff
        self._pending_ref: tuple[str, str] | None = None

    # -- telemetry ---------------------------------------------------------------------------

    def emit(self, event_type: str, **data: Any) -> None:
        event = self.events.emit(
            event_type,
            {"run": self.run, **data},
            feature=self.feature,
            correlation_id=self.correlation_id,
        )
        try:
            self.store.add_event(
                self.feature, self.run, event_type, json.dumps(dict(event.data), default=str),
                iso(event.timestamp),
            )  # fmt: skip
        except Exception as exc:  # the event log must never stop a run
            logger.warning("could not record event {}: {}", event_type, exc)

    def context(self, phase: str | None = None) -> FeatureContext:
        return FeatureContext(
            feature=self.feature,
            run=self.run,
            workspace=self.config.server.workspace_id,
            project_root=self.layout.project_root,
            worktree=self.worktree,
            branch=self.branch,
            run_dir=self.layout.run_dir(self.feature, self.run),
            checkpoint_dir=self.checkpoint_dir,
            phase=phase,
        )

    # -- the run -----------------------------------------------------------------------------

    def drive(self) -> str:
        """Run every remaining phase; return the run's final status."""
        started = time.monotonic()
        try:
            status, error = self._drive()
        except LostOwnership as exc:
            logger.warning("{}/{}: {}", self.feature, self.run, exc)
            return "lost"
        except TmopsError as exc:
            status, error = "failed", str(exc)
        except Exception as exc:  # a bug must end the run visibly, never silently
            logger.opt(exception=exc).error("{}/{} crashed", self.feature, self.run)
            status, error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        now = iso(utc_now())
        duration = time.monotonic() - started
        # Events first: whoever sees the run ended must find its last events recorded.
        if status == "completed":
            self.emit("orchestration.feature.completed", duration_s=round(duration, 3))
        elif error:
            self.emit("orchestration.error", status=status, message=error)
        try:
            self.store.end_run(self.feature, self.run, self.fencing, status=status, now=now,
                               error=error)  # fmt: skip
        except LostOwnership:
            return "lost"
        write_feature_line(
            self.layout, FeatureLine(self.feature, status, now, self.branch), replace=True
        )
        if status in {"completed", "failed", "cancelled"}:
            self.plugins.workflow_finished(self.context(), status, duration)
        return status

    def _drive(self) -> tuple[str, str | None]:
        check_run_paths(self.layout, self.feature, self.run, self.worktree)  # no link, or fail
        providers = self.plugins.providers()
        registered = providers.get(self.provider_name)
        if registered is None:
            known = ", ".join(sorted(providers)) or "none"
            return "failed", f"no provider named {self.provider_name!r} (installed: {known})"
        provider = registered.spec.factory(provider_settings(self.config, self.provider_name))
        phases = self.plugins.phases()
        workflow = list(self.config.features.default_phases)
        missing = [name for name in workflow if name not in phases]
        if missing:
            return "failed", f"the workflow names phases no plugin provides: {', '.join(missing)}"
        specs = [phases[name].spec for name in workflow]
        accepted = {
            a.phase for a in self.store.attempts(self.feature, self.run) if a.state == "completed"
        }
        with CheckpointWatcher(self.checkpoint_dir, self.arrivals):
            for spec in specs:
                if self.cancel.is_set():
                    return "cancelled", "cancelled"
                # A phase this run already accepted stays accepted: its gates held then, and
                # later phases changed the code on purpose (the tester's red is green now).
                if (
                    spec.name in accepted
                    and (self.checkpoint_dir / spec.completion_checkpoint).exists()
                ):
                    self.emit("orchestration.phase.adopted", phase=spec.name, accepted=True)
                    continue
                if self._adopt(spec):
                    continue
                status, error = self._run_phase(spec, provider)
                if status != "completed":
                    return status, error
        write_summary(self, specs)
        return "completed", None

    def _adopt(self, spec: PhaseSpec) -> bool:
        """Take a completion checkpoint already on disk (by hand, or written while tmops was
        down) exactly like an agent's: validators and gates; if it fails, set it aside."""
        path = self.checkpoint_dir / spec.completion_checkpoint
        if not os.path.lexists(path):
            return False
        verdict, reason = self._check_checkpoint(spec, path)
        if verdict != "completed":
            self.emit("orchestration.phase.not_adopted", phase=spec.name, reason=reason)
            return False
        self.store.record_adoption(
            self.feature, self.run, self.fencing, phase=spec.name, now=iso(utc_now())
        )
        self.emit("orchestration.phase.adopted", phase=spec.name, checkpoint=path.name)
        return True

    # -- one phase ---------------------------------------------------------------------------

    def _run_phase(self, spec: PhaseSpec, provider: Provider) -> tuple[str, str | None]:
        # Nothing the agent is handed, nor a file written for it, may be a link (else: failed).
        check_run_paths(
            self.layout, self.feature, self.run, self.worktree,
            logs=(f"{spec.role}.log", f"gate-{spec.name}.log"),
            checkpoints=[spec.trigger_checkpoint] if spec.trigger_checkpoint else [],
        )  # fmt: skip
        self._write_trigger(spec)
        # A phase resumed after a failure keeps the start it had: a rollback must undo all of it.
        earlier = [a.start_commit for a in self.store.attempts(self.feature, self.run)
                   if a.phase == spec.name and a.start_commit]  # fmt: skip
        start_commit = earlier[0] if earlier else (self._head or self.git.head())
        if start_commit:
            # Set once the agent runs: the marker is for rollbacks, not for the handoff.
            ref = f"refs/tmops/{self.feature}/{self.run}/{spec.name}-start"
            self._pending_ref = (ref, start_commit)
        started = time.monotonic()
        session_id: str | None = None
        nudge: str | None = None
        attempts = self.config.features.max_retries + 1
        last_error = "no attempt was made"
        for number in range(1, attempts + 1):
            attempt_id = self.store.start_attempt(
                self.feature, self.run, self.fencing, phase=spec.name, attempt=number,
                provider=self.provider_name, start_commit=start_commit, now=iso(utc_now()),
            )  # fmt: skip
            self.plugins.phase_started(self.context(spec.name), spec.name, number)
            attempt_started = time.monotonic()
            outcome = self._attempt(spec, provider, attempt_id, number, session_id, nudge)
            session_id = outcome.session_id or session_id
            verdict, reason = self._judge(spec, outcome)
            now = iso(utc_now())
            if verdict == "completed":
                crash_point("before-commit")
                self._head, committed = self.git.commit_all(
                    f"tmops({self.feature}): {spec.name} work left uncommitted"
                )
                crash_point("after-commit")
                commit = self._head if committed else None
                duration = time.monotonic() - started
                next_phase = self._next_phase(spec.name)
                crash_point("before-transition")
                self.store.finish_attempt(
                    attempt_id, self.feature, self.run, self.fencing, state="completed",
                    outcome=outcome.result.outcome.value, message=outcome.result.message,
                    session_id=session_id, cost_usd=outcome.result.cost_usd,
                    turns=outcome.result.turns, now=now,
                    duration_s=time.monotonic() - attempt_started, next_phase=next_phase,
                    event=("orchestration.phase.transition", json.dumps(
                        {"from": spec.name, "to": next_phase, "duration_s": round(duration, 3)})),
                )  # fmt: skip
                crash_point("after-transition")
                self.events.emit(
                    "orchestration.phase.transition",
                    {"run": self.run, "from": spec.name, "to": next_phase,
                     "duration_s": round(duration, 3), "attempts": number,
                     "commit": commit},
                    feature=self.feature, correlation_id=self.correlation_id,
                )  # fmt: skip
                self.plugins.phase_finished(
                    self.context(spec.name), spec.name, number, "completed", duration
                )
                return "completed", None
            last_error = f"{spec.name}: {reason}"
            final = verdict in {"failed", "paused", "cancelled"} or number == attempts
            self.store.finish_attempt(
                attempt_id, self.feature, self.run, self.fencing,
                state="failed" if final and verdict == "retry" else verdict,
                outcome=outcome.result.outcome.value, message=reason, session_id=session_id,
                cost_usd=outcome.result.cost_usd, turns=outcome.result.turns, now=now,
                duration_s=time.monotonic() - attempt_started,
            )  # fmt: skip
            self.emit(
                "orchestration.phase.attempt_failed", phase=spec.name, attempt=number,
                verdict=verdict, reason=reason,
            )  # fmt: skip
            self.plugins.phase_finished(
                self.context(spec.name), spec.name, number, outcome.result.outcome.value,
                time.monotonic() - started,
            )  # fmt: skip
            if final:
                status = verdict if verdict in {"paused", "cancelled"} else "failed"
                return status, last_error
            if outcome.result.outcome is Outcome.TRANSIENT_ERROR:
                self.cancel.wait(self.backoff[min(number - 1, len(self.backoff) - 1)])
            if "could not be resumed" in outcome.result.message:
                session_id = None
            nudge = (
                f"Your previous attempt at the {spec.role} role did not complete: {reason}. "
                f"Fix that, then write {self.checkpoint_dir / spec.completion_checkpoint} again."
            )
        return "failed", last_error

    def _next_phase(self, name: str) -> str | None:
        workflow = list(self.config.features.default_phases)
        index = workflow.index(name)
        return workflow[index + 1] if index + 1 < len(workflow) else None

    def _write_trigger(self, spec: PhaseSpec) -> None:
        if not spec.trigger_checkpoint:
            return
        path = self.checkpoint_dir / spec.trigger_checkpoint
        if os.path.lexists(path):
            return
        atomic_write(
            path,
            f"# Checkpoint: {spec.trigger_checkpoint}\n"
            f"**From:** tmops (orchestration)\n"
            f"**To:** {spec.role.capitalize()}\n"
            f"**Timestamp:** {utc_now():%Y-%m-%d %H:%M:%S}\n"
            f"**Feature:** {self.feature}\n"
            f"**Run:** {self.run}\n"
            f"**Status:** trigger\n\n"
            f"## Action Required\n{spec.description or spec.name}\n\n"
            f"## Expected Response\nWrite {spec.completion_checkpoint} in this folder.\n",
        )

    def _prompt(self, spec: PhaseSpec) -> str:
        try:
            return self._format_prompt(spec)
        except (KeyError, IndexError, ValueError) as exc:
            raise TmopsError(
                f"the prompt of phase {spec.name!r} cannot be filled in: {exc!r}",
                hint="a phase prompt may use {feature}, {run}, {task_spec}, {checkpoint_dir}, "
                "{trigger_checkpoint}, {completion_checkpoint}, {worktree} and {branch}",
            ) from exc

    def _format_prompt(self, spec: PhaseSpec) -> str:
        return spec.prompt.format(
            feature=self.feature,
            run=self.run,
            task_spec=self.layout.task_spec(self.feature, self.run),
            checkpoint_dir=self.checkpoint_dir,
            trigger_checkpoint=spec.trigger_checkpoint or "",
            completion_checkpoint=spec.completion_checkpoint,
            worktree=self.worktree,
            branch=self.branch,
        )

    def _instructions(self, spec: PhaseSpec, settings: Mapping[str, Any]) -> str:
        folder = settings.get("instructions_dir") or self.config.paths.instructions
        if folder:
            path = Path(folder).expanduser()
            if not path.is_absolute():
                path = self.layout.project_root / path
            candidate = path / f"{spec.role}.md"
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8")
        return spec.instructions

    def _attempt(
        self,
        spec: PhaseSpec,
        provider: Provider,
        attempt_id: int,
        number: int,
        resume: str | None,
        nudge: str | None,
    ) -> _Attempt:
        settings = provider_settings(self.config, self.provider_name)
        completion = spec.completion_checkpoint
        self.arrivals.forget(completion)
        request = AgentRequest(
            feature=self.feature,
            run=self.run,
            phase=spec.name,
            role_instructions=self._instructions(spec, settings),
            prompt=nudge
            if (nudge and resume)
            else self._prompt(spec) + (f"\n{nudge}" if nudge else ""),
            working_dir=self.worktree,
            extra_dirs=(self.checkpoint_dir,),
            resume_session_id=resume,
            max_turns=settings.get("max_turns"),
            allowed_tools=spec.allowed_tools,
        )
        invocation = provider.build_invocation(request)
        env = build_env(
            {**settings.get("env", {}), **invocation.env},
            allow=self.config.features.env_allowlist,
        )
        events: list[AgentEvent] = []
        session: dict[str, str | None] = {"id": resume}

        def on_line(line: str) -> None:
            for event in provider.parse_line(line):
                events.append(event)
                if event.session_id and event.session_id != session["id"]:
                    session["id"] = event.session_id
                    self.store.attempt_session(attempt_id, event.session_id)

        process = AgentProcess(
            invocation.argv,
            cwd=self.worktree,
            env=env,
            log_path=self.layout.logs_dir(self.feature, self.run) / f"{spec.role}.log",
            limits=Limits(
                wall_clock_s=float(settings.get("timeout_s") or 3600),
                idle_s=float(settings.get("idle_timeout_s") or 600),
            ),
            on_line=on_line,
            stdin=invocation.stdin,
        )
        pid = process.start()
        self.store.attempt_process(
            attempt_id, self.feature, self.run, self.fencing, pid=pid,
            start_time=process.start_time, mark=process.mark,
        )  # fmt: skip
        crash_point("after-spawn")
        if self._pending_ref is not None:
            self.git.set_ref(*self._pending_ref)
            self._pending_ref = None
        self.emit("orchestration.session.started", phase=spec.name, attempt=number, pid=pid,
                  resumed=resume is not None)  # fmt: skip
        outcome = None
        grace_until: float | None = None
        while outcome is None:
            outcome = process.wait(timeout=0.005)
            if outcome is not None:
                break
            if self.cancel.is_set():
                outcome = process.stop("cancelled")
            elif self.arrivals.seen_at(completion) is not None:
                if grace_until is None:
                    grace_until = time.monotonic() + self.config.features.checkpoint_timeout
                elif time.monotonic() > grace_until:
                    outcome = process.stop("stopped")
        present = (self.checkpoint_dir / completion).exists()
        if present:
            seen = self.arrivals.seen_at(completion) or time.time()
            try:
                lag_ms = max(
                    0.0, (seen - (self.checkpoint_dir / completion).stat().st_mtime) * 1000
                )
            except OSError:
                lag_ms = 0.0
            self.emit("orchestration.checkpoint.detected", phase=spec.name, checkpoint=completion,
                      detection_lag_ms=round(lag_ms, 2))  # fmt: skip
            crash_point("checkpoint-detected")
        result = provider.finish(outcome.returncode, events, outcome.stderr_tail)
        if outcome.stop_reason in {"wall_clock", "idle"}:
            result = attrs.evolve(
                result, outcome=Outcome.TIMED_OUT,
                message=f"the agent was stopped: {outcome.stop_reason.replace('_', ' ')} timeout",
            )  # fmt: skip
        elif outcome.stop_reason == "cancelled":
            result = attrs.evolve(result, outcome=Outcome.CANCELLED, message="cancelled")
        self.emit("orchestration.session.ended", phase=spec.name, attempt=number,
                  outcome=result.outcome.value, returncode=outcome.returncode,
                  session_id=session["id"], cost_usd=result.cost_usd)  # fmt: skip
        return _Attempt(result, outcome.stop_reason, present, result.session_id or session["id"])

    def _judge(self, spec: PhaseSpec, attempt: _Attempt) -> tuple[str, str]:
        """``completed``, ``retry``, ``failed``, ``paused`` or ``cancelled``, and why."""
        outcome = attempt.result.outcome
        if outcome is Outcome.CANCELLED:
            return "cancelled", "cancelled"
        if outcome is Outcome.AUTH_ERROR:
            return "failed", f"authentication failed: {attempt.result.message}"
        if outcome is Outcome.USAGE_LIMITED:
            return "paused", f"usage limit reached: {attempt.result.message}"
        if not attempt.checkpoint:
            if outcome is Outcome.SUCCEEDED:
                return "retry", f"the agent ended without writing {spec.completion_checkpoint}"
            return "retry", attempt.result.message or outcome.value
        return self._check_checkpoint(spec, self.checkpoint_dir / spec.completion_checkpoint)

    def _check_checkpoint(self, spec: PhaseSpec, path: Path) -> tuple[str, str]:
        """Validators, then the phase's gates; a rejected checkpoint is set aside."""
        checkpoint = parse_checkpoint(path)
        problems = run_validators(checkpoint, self.context(spec.name), self.plugins.validators())
        errors = [p for p in problems if p.severity is Severity.ERROR]
        for problem in problems:
            self.emit("orchestration.checkpoint.problem", phase=spec.name, file=str(path),
                      validator=problem.validator, severity=problem.severity.value,
                      message=problem.message)  # fmt: skip
        if errors:
            self._set_aside(path)
            first = errors[0]
            return "retry", f"checkpoint {path.name} rejected by {first.validator}: {first.message}"
        log = self.layout.logs_dir(self.feature, self.run) / f"gate-{spec.name}.log"
        for gate in run_gates(
            spec.gates,
            command=self.config.features.test_command,
            cwd=self.worktree,
            env=build_env({}, allow=self.config.features.env_allowlist),
            timeout_s=self.config.features.test_timeout,
            log_path=log,
        ):
            self.emit("orchestration.gate.checked", phase=spec.name, gate=gate.gate.value,
                      passed=gate.passed, reason=gate.reason)  # fmt: skip
            crash_point("during-gate")
            if not gate.passed:
                self._set_aside(path)
                return "retry", f"gate {gate.gate.value} failed: {gate.reason}"
        return "completed", "ok"

    def _set_aside(self, path: Path) -> None:
        """Move a rejected checkpoint out of the way so its rewrite is seen as new."""
        target = path.with_name(f".{path.name}.rejected-{time.time_ns()}")
        try:
            rename_checked(path, target)
        except (OSError, TmopsError) as exc:
            logger.warning("could not set aside rejected checkpoint {}: {}", path, exc)
        self.arrivals.forget(path.name)
