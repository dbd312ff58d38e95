"""One run of one feature through its workflow: the phase loop.

For each phase: take a completion checkpoint already on disk exactly like a live one
(adoption), or write the trigger checkpoint, mark the phase-start commit and hand an attempt to
the executor; the judge checks what came back (validators, gates, the reviewer's verdict);
accepted work is committed under the phase's name and the transition recorded in one store
transaction. A rejected or failed attempt is retried up to ``features.max_retries`` (resuming
the session where the provider can, afresh with the whole prompt where it cannot); a verdict of
NO sends the work back for rework, then ends the run ``needs_review``. Every change is fenced:
store rows and events by the run's fencing token, the branch by a compare-and-swap against the
head tmops left it at (the branch guard), so an engine that lost the run never moves it on.
States come only from :mod:`tmops_core.lifecycle`.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from tmops_core.agents.env import provider_allow
from tmops_core.checkpoints.watch import Arrivals, CheckpointWatcher
from tmops_core.config import Config
from tmops_core.events import EventBus
from tmops_core.git import BranchMoved, Git
from tmops_core.lifecycle import AttemptState, PauseReason, RunState, Verdict
from tmops_core.log import logger
from tmops_core.orchestration import limits, prompts, rework
from tmops_core.orchestration.attempts import HandoffClock, attempt_spec
from tmops_core.orchestration.crashpoints import crash_point
from tmops_core.orchestration.endings import Accepted, Ending, LiveAttempt, announce_ending
from tmops_core.orchestration.executors import make_executor
from tmops_core.orchestration.hooks import FencedHooks
from tmops_core.orchestration.judge import Judge
from tmops_core.orchestration.progress import AgentProgress
from tmops_core.orchestration.providers import PhaseProviders
from tmops_core.orchestration.run_mirror import run_mirror
from tmops_core.orchestration.summary import write_summary
from tmops_core.orchestration.wakeup import Flag
from tmops_core.orchestration.worktree_setup import run_worktree_setup
from tmops_core.plugins import Plugins
from tmops_core.store import LostOwnership, Store, since_reset, store_outages
from tmops_core.workspace.layout import Layout, check_run_paths, iso, utc_now
from tmops_core.workspace.project_files import FeatureLine, write_feature_line
from tmops_hookspecs import (
    AgentResult,
    AttemptOutcome,
    Executor,
    FeatureContext,
    Outcome,
    PhaseSpec,
    Provider,
    TmopsError,
)

__all__ = ["STALLED", "RunDriver"]

#: what :meth:`RunDriver.drive` returns when the store stopped answering mid-run
STALLED = "stalled"

_TRANSIENT_BACKOFF_S = (1.0, 4.0, 15.0)
#: the longest ``retry_after_s`` honoured before a retry; longer ones are usage limits
_MAX_RETRY_AFTER_S = 300.0


class RunDriver:
    """Drives one queued-and-admitted run to its end (or to a pause)."""

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
        cancel: Flag,
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
        #: the provider of each phase (the run's, the config's per phase, or the default)
        self.providers = PhaseProviders(config, plugins, run_record)
        self.correlation_id = run_record.run_id or f"{feature}/{run}"
        self.checkpoint_dir = layout.checkpoint_dir(feature, run)
        self.git = Git(self.worktree)
        self.arrivals = Arrivals()
        self.handoff = HandoffClock()
        self.executor: Executor = make_executor(config, plugins, layout)
        self.mirror = run_mirror(config, layout, feature, run)  # None: a local executor
        self.judge = Judge(
            config=config, plugins=plugins, worktree=self.worktree,
            logs_dir=layout.logs_dir(feature, run), context=self.context, emit=self.emit,
            forget=self.arrivals.forget,
        )  # fmt: skip
        self.workflow: list[str] = list(config.features.default_phases)
        #: the head tmops left the feature branch at (the branch guard compares it)
        self.head: str | None = run_record.branch_head
        #: set once this engine accepted a phase and so knows the branch head first hand
        self._strict = False
        self._pending_ref: tuple[str, str] | None = None

    # -- telemetry ---------------------------------------------------------------------------

    def emit(self, event_type: str, **data: Any) -> None:
        event = self.events.emit(event_type, {"run": self.run, **data}, feature=self.feature,
                                 correlation_id=self.correlation_id)  # fmt: skip
        try:
            self.store.add_event(
                self.feature, self.run, event_type, json.dumps(dict(event.data), default=str),
                iso(event.timestamp), fencing=self.fencing,
            )  # fmt: skip
        except Exception as exc:  # the event log must never stop a run
            logger.warning("could not record event {}: {}", event_type, exc)

    def context(self, phase: str | None = None) -> FeatureContext:
        return FeatureContext(
            feature=self.feature, run=self.run, workspace=self.config.server.workspace_id,
            project_root=self.layout.project_root, worktree=self.worktree, branch=self.branch,
            run_dir=self.layout.run_dir(self.feature, self.run),
            checkpoint_dir=self.checkpoint_dir, phase=phase,
        )  # fmt: skip

    def _fence(self) -> AbstractContextManager[object]:
        return self.store.fenced(self.feature, self.run, self.fencing)

    # -- the run -----------------------------------------------------------------------------

    def drive(self) -> str:
        """Run every remaining phase; return the state the run stopped in (or ``lost``)."""
        started = time.monotonic()
        try:
            ending = self._drive()
        except LostOwnership as exc:
            logger.warning("{}/{}: {}", self.feature, self.run, exc)
            return "lost"
        except BranchMoved as exc:
            ending = self._branch_moved(exc)
        except TmopsError as exc:
            ending = Ending(RunState.FAILED, str(exc))
        except store_outages() as exc:  # nothing can be recorded: the engine queues it again
            logger.warning("{}/{}: the store stopped answering: {}", self.feature, self.run, exc)
            return STALLED
        except Exception as exc:  # a bug must end the run visibly, never silently
            logger.opt(exception=exc).error("{}/{} crashed", self.feature, self.run)
            ending = Ending(RunState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        now = iso(utc_now())
        duration = time.monotonic() - started
        # Events first: whoever sees the run ended must find its last events recorded.
        if ending.state is RunState.COMPLETED:
            self.emit("orchestration.feature.completed", duration_s=round(duration, 3))
        elif ending.reason:
            self.emit("orchestration.error", status=ending.state.value, message=ending.reason,
                      pause_reason=ending.pause.value if ending.pause else None)  # fmt: skip
        try:
            self.store.end_run(
                self.feature, self.run, self.fencing, status=ending.state, now=now,
                error=ending.reason, pause_reason=ending.pause.value if ending.pause else None,
                resume_at=ending.resume_at,
            )  # fmt: skip
        except LostOwnership:
            return "lost"
        self._publish()
        write_feature_line(
            self.layout, FeatureLine(self.feature, ending.state.value, now, self.branch),
            replace=True,
        )  # fmt: skip
        announce_ending(self.plugins, self.context(), ending, duration)
        return ending.state.value

    def _drive(self) -> Ending:
        if self.mirror is not None:  # left by an engine on another machine: fetch what is not here
            self.worktree = self.judge.worktree = self.mirror.restore(self.worktree, self.branch)
            self.git = Git(self.worktree)
        check_run_paths(self.layout, self.feature, self.run, self.worktree)  # no link, or fail
        for name in self.workflow:  # every phase's provider installed, before the first agent
            self.providers.spec(name)
        phases = self.plugins.phases()
        missing = [name for name in self.workflow if name not in phases]
        if missing:
            names = ", ".join(missing)
            return Ending(RunState.FAILED, f"the workflow names phases no plugin provides: {names}")
        specs = [phases[name].spec for name in self.workflow]
        failed = run_worktree_setup(
            self.config, self.layout, feature=self.feature, run=self.run, worktree=self.worktree,
            emit=self.emit, cancel=self.cancel, store=self.store, fencing=self.fencing,
        )  # fmt: skip
        if failed:  # before the first agent, once per worktree
            return Ending(RunState.FAILED, failed)
        if self.head is None:
            self.head = self.git.head()
            if self.head:
                self.store.set_branch_head(self.feature, self.run, self.fencing, self.head)
        with CheckpointWatcher(self.checkpoint_dir, self.arrivals):
            index = 0
            while index < len(specs):
                spec = specs[index]
                if self.cancel.is_set():
                    return Ending(RunState.CANCELLED, "cancelled")
                if self._accepted(spec):
                    # Accepted by this run already: its gates held then, and later phases
                    # changed the code on purpose (the tester's red is green now).
                    self.emit("orchestration.phase.adopted", phase=spec.name, accepted=True)
                    index += 1
                    continue
                accepted = self._step(spec)
                if isinstance(accepted, Ending):
                    return accepted
                if accepted is Accepted.REWORK:
                    index = self.workflow.index(self.config.features.rework_phase)
                    continue
                index += 1
        with self._fence():  # a runner that lost the run writes no summary of it
            write_summary(self, specs)
        return Ending(RunState.COMPLETED)

    def _step(self, spec: PhaseSpec) -> Accepted | Ending:
        """One phase not yet accepted: a pause asked for, a checkpoint to adopt, an approval
        gate, or an agent to run."""
        if self.store.pause_requested(self.feature, self.run):
            return Ending(
                RunState.PAUSED, f"paused by a person before {spec.name}", PauseReason.REQUESTED
            )
        self._guard_branch()
        adopted = self._adopt(spec)
        if adopted is not None:
            return adopted
        return self._awaiting_approval(spec) or self._run_phase(spec)

    def _accepted(self, spec: PhaseSpec) -> bool:
        """Whether this run accepted ``spec`` and nothing sent it back since."""
        if not (self.checkpoint_dir / spec.completion_checkpoint).exists():
            return False
        attempts = self.store.attempts(self.feature, self.run)
        mine = [a for a in attempts if a.phase == spec.name]
        if not mine or mine[-1].state != AttemptState.COMPLETED:
            return False
        reworks = [a.id for a in attempts if a.state == AttemptState.REWORK]
        if reworks and rework.reworks(self.config, self.workflow, spec.name):
            # A rework round after this phase's acceptance sends it back.
            return mine[-1].id > max(reworks)
        return True

    def _awaiting_approval(self, spec: PhaseSpec) -> Ending | None:
        """An approval gate (``features.approve_before``): pause until a person approves."""
        if spec.name not in self.config.features.approve_before:
            return None
        if spec.name in self.store.approved(self.feature, self.run):
            return None
        self.emit("orchestration.phase.awaiting_approval", phase=spec.name)
        return Ending(
            RunState.PAUSED,
            f"awaiting approval before {spec.name}: `tmops approve {self.feature}` lets it go on",
            PauseReason.AWAITING_APPROVAL,
        )

    def _guard_branch(self) -> None:
        """Refuse to go on when the branch is not where tmops left it (or, after a restart,
        on top of it: an agent of the dead engine may have committed).

        Within one engine the next phase starts a moment after the last commit, which the
        compare-and-swap in :meth:`Git.commit_work` checked, and every acceptance checks
        again; so the handoff path pays for no git call here."""
        if self.head is None or self._strict:
            return
        found = self.git.rev(f"refs/heads/{self.branch}")
        if found == self.head:
            return
        if found is not None and self.git.is_ancestor(self.head, found):
            return
        raise BranchMoved(self.branch, self.head, found)

    def _branch_moved(self, exc: BranchMoved) -> Ending:
        """Pause the run, naming both commits, with a backup ref of what was found."""
        backup = None
        if exc.found:
            backup = f"refs/tmops/{self.feature}/{self.run}/moved-{time.time_ns()}"
            with self._fence():
                self.git.set_ref(backup, exc.found)
        self.emit("orchestration.branch.moved", branch=self.branch, expected=exc.expected,
                  found=exc.found, backup=backup)  # fmt: skip
        reason = (
            f"branch moved: {self.branch} is at {exc.found or 'nothing'}, tmops left it at "
            f"{exc.expected}" + (f" (backup ref {backup})" if backup else "")
        )
        return Ending(RunState.PAUSED, reason, PauseReason.BRANCH_MOVED)

    def _adopt(self, spec: PhaseSpec) -> Accepted | Ending | None:
        """Take a completion checkpoint already on disk (by hand, or written while tmops was
        down) exactly like an agent's: validators, gates, verdict, commit under this phase,
        transition. ``None`` when there is none to take (a rejected one is set aside)."""
        path = self.checkpoint_dir / spec.completion_checkpoint
        if not os.path.lexists(path):
            return None
        verdict, reason = self.judge.check_checkpoint(spec, path)
        if verdict is not Verdict.ACCEPT:
            self.emit("orchestration.phase.not_adopted", phase=spec.name, reason=reason)
            return None
        accepted = self._accept(spec, attempt=None, started=time.monotonic())
        self.emit("orchestration.phase.adopted", phase=spec.name, checkpoint=path.name)
        return accepted

    def _accept(
        self, spec: PhaseSpec, *, attempt: LiveAttempt | None, started: float
    ) -> Accepted | Ending:
        """Commit the phase's work under its name and record the transition (or the rework)."""
        path = self.checkpoint_dir / spec.completion_checkpoint
        refusal = self.judge.review(spec, path)
        start = self.head
        crash_point("before-commit")
        head, commit = self.git.commit_work(
            f"tmops({self.feature}): {spec.name} work left uncommitted",
            branch=self.branch, expected=self.head, guard=self._fence,
        )  # fmt: skip
        crash_point("after-commit")
        self.head = head
        self._publish()  # before the transition: the remote has every head the store names
        now = iso(utc_now())
        duration = time.monotonic() - started
        if refusal is not None:
            return self._refuse(spec, attempt, refusal, head, duration, start)
        next_phase = self._next_phase(spec.name)
        transition = json.dumps({"from": spec.name, "to": next_phase,
                                 "duration_s": round(duration, 3)})  # fmt: skip
        crash_point("before-transition")
        if attempt is None:
            self.store.record_adoption(
                self.feature, self.run, self.fencing, phase=spec.name, now=now,
                next_phase=next_phase, branch_head=head, start_commit=start,
                event=("orchestration.phase.transition", transition),
            )  # fmt: skip
            number = 0
        else:
            result = attempt.outcome.result
            self.store.finish_attempt(
                attempt.id, self.feature, self.run, self.fencing, state=AttemptState.COMPLETED,
                outcome=result.outcome.value, message=result.message,
                session_id=attempt.outcome.session_id, **self._spent(result, spec.name), now=now,
                duration_s=time.monotonic() - attempt.started,
                next_phase=next_phase, branch_head=head,
                event=("orchestration.phase.transition", transition),
            )  # fmt: skip
            number = attempt.number
        crash_point("after-transition")
        self._strict = True
        self.events.emit(
            "orchestration.phase.transition",
            {"run": self.run, "from": spec.name, "to": next_phase,
             "duration_s": round(duration, 3), "attempts": number, "commit": commit},
            feature=self.feature, correlation_id=self.correlation_id,
        )  # fmt: skip
        self.plugins.phase_finished(
            self.context(spec.name), spec.name, number, AttemptState.COMPLETED.value, duration
        )
        return Accepted.HANDED_OFF

    def _refuse(
        self, spec: PhaseSpec, attempt: LiveAttempt | None, refusal: str, head: str | None,
        duration: float, start: str | None,
    ) -> Accepted | Ending:  # fmt: skip
        """The reviewer said NO: send the work back for rework, or end ``needs_review``."""
        path = self.checkpoint_dir / spec.completion_checkpoint
        rounds = sum(
            a.state == AttemptState.REWORK
            for a in since_reset(self.store.attempts(self.feature, self.run), spec.name)
        )
        target = self.config.features.rework_phase
        can_rework = (
            rounds < self.config.features.rework_rounds
            and target in self.workflow
            and self.workflow.index(target) <= self.workflow.index(spec.name)
        )
        if can_rework:
            phases = self.plugins.phases()
            earlier = self.workflow[self.workflow.index(target) : self.workflow.index(spec.name)]
            done = [self.checkpoint_dir / phases[n].spec.completion_checkpoint for n in earlier]
            review = rework.set_aside_for_rework(
                refused=path, earlier=done, round_=rounds + 1, root=self.layout.project_root,
                forget=self.arrivals.forget,
            )  # fmt: skip
            state, message = AttemptState.REWORK, f"{refusal}{rework.REVIEW}{review}"
        else:
            state = AttemptState.REFUSED
            message = f"{refusal}; read {path} and decide"
        self._record_verdict(spec, attempt, state, message, head, start)
        self.emit("orchestration.phase.refused", phase=spec.name, reason=refusal,
                  rework=can_rework, round=rounds + 1, duration_s=round(duration, 3))  # fmt: skip
        if can_rework:
            return Accepted.REWORK
        return Ending(RunState.NEEDS_REVIEW, message)

    def _record_verdict(
        self, spec: PhaseSpec, attempt: LiveAttempt | None, state: AttemptState, message: str,
        head: str | None, start: str | None,
    ) -> None:  # fmt: skip
        now = iso(utc_now())
        if attempt is None:
            self.store.record_adoption(
                self.feature, self.run, self.fencing, phase=spec.name, now=now,
                branch_head=head, state=state, message=message, start_commit=start,
            )  # fmt: skip
            return
        result = attempt.outcome.result
        self.store.finish_attempt(
            attempt.id, self.feature, self.run, self.fencing, state=state,
            outcome=result.outcome.value, message=message,
            session_id=attempt.outcome.session_id, **self._spent(result, spec.name), now=now,
            duration_s=time.monotonic() - attempt.started, branch_head=head,
        )  # fmt: skip

    # -- one phase ---------------------------------------------------------------------------

    def _run_phase(self, spec: PhaseSpec) -> Accepted | Ending:
        # Nothing the agent is handed, nor a file written for it, may be a link (else: failed).
        check_run_paths(
            self.layout, self.feature, self.run, self.worktree,
            logs=(f"{spec.role}.log", f"gate-{spec.name}.log"),
            checkpoints=[spec.trigger_checkpoint] if spec.trigger_checkpoint else [],
        )  # fmt: skip
        with self._fence():  # nor a trigger
            prompts.write_trigger(spec, self.context(spec.name))
        attempts_so_far = self.store.attempts(self.feature, self.run)
        # A phase resumed after a failure keeps the start it had: a rollback must undo all of it.
        earlier = [a.start_commit for a in since_reset(attempts_so_far, spec.name)
                   if a.start_commit]  # fmt: skip
        start_commit = earlier[0] if earlier else (self.head or self.git.head())
        if start_commit:
            # Set once the agent runs: the marker is for rollbacks, not for the handoff.
            ref = f"refs/tmops/{self.feature}/{self.run}/{spec.name}-start"
            self._pending_ref = (ref, start_commit)
        started = time.monotonic()
        # One provider for all of the phase's attempts: a session resumes only within it.
        provider, provider_name = self.providers.provider(spec.name), self.providers.name(spec.name)
        resumable = bool(getattr(provider, "can_resume", False))
        session_id: str | None = None
        note = rework.rework_note(self.config, spec, attempts_so_far, self.checkpoint_dir)
        attempts = self.config.features.max_retries + 1
        last_error = "no attempt was made"
        for number in range(1, attempts + 1):
            so_far = self.store.attempts(self.feature, self.run)
            exhausted = limits.budget_ending(self.config, so_far, self.feature, spec.name)
            if exhausted is not None:  # checked before each attempt, so after each one too
                return exhausted
            attempt_id = self.store.start_attempt(
                self.feature, self.run, self.fencing, phase=spec.name, attempt=number,
                provider=provider_name, start_commit=start_commit, now=iso(utc_now()),
            )  # fmt: skip
            self.plugins.phase_started(self.context(spec.name), spec.name, number)
            attempt_started = time.monotonic()
            resume = session_id if resumable else None
            budget = limits.budget_left(self.config, so_far, spec.name)
            outcome = self._attempt(spec, provider, attempt_id, number, resume, note, budget)
            live = LiveAttempt(attempt_id, number, outcome, attempt_started)
            if resumable:
                session_id = outcome.session_id or session_id
                if outcome.result.resume_failed:  # the provider says: start afresh
                    session_id = None
            checkpoint = self.checkpoint_dir / spec.completion_checkpoint
            verdict, reason = self.judge.judge(spec, outcome, checkpoint)
            if verdict is Verdict.ACCEPT:
                try:
                    return self._accept(spec, attempt=live, started=started)
                except BranchMoved:
                    self._finish_attempt(spec, live, AttemptState.PAUSED, "branch moved")
                    raise
            last_error = f"{spec.name}: {reason}"
            final = verdict is not Verdict.RETRY or number == attempts
            state = {
                Verdict.FAIL: AttemptState.FAILED, Verdict.PAUSE: AttemptState.PAUSED,
                Verdict.CANCEL: AttemptState.CANCELLED,
            }.get(verdict, AttemptState.FAILED if final else AttemptState.REJECTED)  # fmt: skip
            self._finish_attempt(spec, live, state, reason)
            self.emit(
                "orchestration.phase.attempt_failed", phase=spec.name, attempt=number,
                verdict=verdict.value, reason=reason,
            )  # fmt: skip
            self.plugins.phase_finished(
                self.context(spec.name), spec.name, number, outcome.result.outcome.value,
                time.monotonic() - started,
            )  # fmt: skip
            if final:
                if verdict is Verdict.PAUSE:
                    return limits.pause_ending(
                        self.config, outcome.result, last_error,
                        self.store.attempts(self.feature, self.run), self.feature, spec.name,
                    )  # fmt: skip
                if verdict is Verdict.CANCEL:
                    return Ending(RunState.CANCELLED, last_error)
                return Ending(RunState.FAILED, last_error)
            self._back_off(outcome, number)
            note = prompts.retry_note(spec, checkpoint, reason)
        return Ending(RunState.FAILED, last_error)

    def _back_off(self, outcome: AttemptOutcome, number: int) -> None:
        """Wait before a retry: what the API asked for (429/529), else the transient backoff."""
        asked = outcome.result.retry_after_s
        if asked is not None and asked > 0:
            self.cancel.wait(min(asked, _MAX_RETRY_AFTER_S))
        elif outcome.result.outcome is Outcome.TRANSIENT_ERROR:
            self.cancel.wait(self.backoff[min(number - 1, len(self.backoff) - 1)])

    def _finish_attempt(
        self, spec: PhaseSpec, live: LiveAttempt, state: AttemptState, reason: str
    ) -> None:
        result = live.outcome.result
        self.store.finish_attempt(
            live.id, self.feature, self.run, self.fencing, state=state,
            outcome=result.outcome.value, message=reason, session_id=live.outcome.session_id,
            **self._spent(result, spec.name), now=iso(utc_now()),
            duration_s=time.monotonic() - live.started,
        )  # fmt: skip

    def _spent(self, result: AgentResult, phase: str) -> dict[str, Any]:
        return limits.spent(result, self.providers.settings(phase))

    def _session_started(
        self, phase: str, number: int, pid: int, *, resumed: bool, note: str | None
    ) -> None:
        """The agent runs: set the phase-start marker (fenced) and say so in the audit trail."""
        if self._pending_ref is not None:
            with self._fence():
                self.git.set_ref(*self._pending_ref)
            self._pending_ref = None
        self.emit("orchestration.session.started", phase=phase, attempt=number, pid=pid,
                  resumed=resumed, told=note, handoff_ms=self.handoff.take_ms())  # fmt: skip

    def _publish(self) -> None:
        """The branch and the run's folder to the shared remote (a distributed executor's)."""
        if self.mirror is not None:
            self.mirror.publish(self.worktree, self.branch)

    def _next_phase(self, name: str) -> str | None:
        index = self.workflow.index(name)
        return self.workflow[index + 1] if index + 1 < len(self.workflow) else None

    def _attempt(
        self,
        spec: PhaseSpec,
        provider: Provider,
        attempt_id: int,
        number: int,
        resume: str | None,
        note: str | None,
        budget: float | None,
    ) -> AttemptOutcome:
        completion = spec.completion_checkpoint
        self.arrivals.forget(completion)
        attempt = attempt_spec(
            config=self.config, layout=self.layout, context=self.context(spec.name), spec=spec,
            provider=self.providers.name(spec.name), fencing=self.fencing, number=number,
            attempt_id=attempt_id, resume=resume, note=note, budget=budget,
            env_allow=provider_allow(self.providers.spec(spec.name),
                                     self.config.features.env_allowlist),
        )  # fmt: skip
        progress = AgentProgress(
            self.emit, spec, number, roots=(self.worktree, self.checkpoint_dir)
        )
        hooks = FencedHooks(
            store=self.store, feature=self.feature, run=self.run, fencing=self.fencing,
            attempt_id=attempt_id, arrivals=self.arrivals, completion=completion,
            cancel=self.cancel, on_started=lambda pid: self._session_started(
                spec.name, number, pid, resumed=resume is not None, note=note),
            progress=progress,
        )  # fmt: skip
        outcome = self.executor.execute(attempt, provider, hooks)
        progress.flush()
        if outcome.checkpoint_present:
            lag_ms = self.handoff.detected(self.arrivals.seen_at(completion), attempt.checkpoint)
            self.emit("orchestration.checkpoint.detected", phase=spec.name, checkpoint=completion,
                      detection_lag_ms=round(lag_ms, 2))  # fmt: skip
            crash_point("checkpoint-detected")
        self.emit("orchestration.session.ended", phase=spec.name, attempt=number,
                  outcome=outcome.result.outcome.value, returncode=outcome.returncode,
                  session_id=outcome.session_id, provider=attempt.provider,
                  cost_usd=limits.price(outcome.result, self.providers.settings(spec.name)),
                  )  # fmt: skip
        return outcome
