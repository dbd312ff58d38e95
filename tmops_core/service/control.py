"""A person in control of a run: pause, resume, retry, approve, roll back.

A part of :class:`~tmops_core.service.operations.Service` (a mixin over its store, config and
``start``). Every verb checks the run's state and says what to do when it cannot act, changes
the store in one transaction through :mod:`tmops_core.store`, and leaves an event in the run's
audit trail naming what it did and who did it (the actor, see :mod:`tmops_core.service.actor`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmops_core.agents.processes import reap_orphans
from tmops_core.lifecycle import ACTIVE_RUN_STATES, AttemptState, PauseReason, RunState
from tmops_core.orchestration.limits import budget_ending
from tmops_core.service.actor import current_actor
from tmops_core.service.rollback import apply_rollback, plan_rollback, stamp_now
from tmops_core.workspace.layout import (
    ensure_private_dir,
    iso,
    lstat_checked,
    rename_checked,
    shown,
    utc_now,
)
from tmops_hookspecs import FeatureError

if TYPE_CHECKING:
    from tmops_core.config import Config
    from tmops_core.events import EventBus
    from tmops_core.plugins import Plugins
    from tmops_core.store import FeatureRecord, RunRecord, Store
    from tmops_core.workspace.layout import Layout

__all__ = ["Controls"]


class Controls:
    """The verbs a person takes control of a run with."""

    config: Config
    plugins: Plugins
    #: who acts when no surface said otherwise for this call (see tmops_core.service.actor)
    actor: str

    if TYPE_CHECKING:

        @property
        def events(self) -> EventBus: ...

        def _tracked(
            self, feature: str, workspace: Path | None
        ) -> tuple[Layout, Store, FeatureRecord]: ...

        def start(
            self, feature: str, *, provider: str | None = None, resume: bool = False,
            accept_branch: bool = False, workspace: Path | None = None, spawn: bool = True,
        ) -> dict[str, Any]: ...  # fmt: skip

    # -- pause and resume --------------------------------------------------------------------

    def pause(self, feature: str, *, now: bool = False, workspace: Path | None = None
              ) -> dict[str, Any]:  # fmt: skip
        """Pause the run before its next phase; ``now`` stops its agent at once (TERM, then
        KILL of its tree) and records the attempt ``interrupted``. Resumable."""
        _, store, record = self._tracked(feature, workspace)
        run = self._current_run(store, record)
        state = RunState(run.status)
        if state is RunState.PAUSED:
            return self._answer(run, f"was paused already ({run.pause_reason})")
        if state not in ACTIVE_RUN_STATES:
            raise FeatureError(
                f"run '{run.run}' of '{feature}' is {state}: there is nothing to pause",
                hint=f"`tmops status {feature}` says what it needs",
            )
        stopped = processes = 0
        if now:
            interrupted = store.stop_run(
                feature, run.run, state=RunState.PAUSED, pause_reason=PauseReason.REQUESTED,
                attempts=AttemptState.INTERRUPTED, message="paused now by a person",
                now=iso(utc_now()),
            )  # fmt: skip
            processes = len(_stop_agents(interrupted))
            stopped = sum(1 for a in interrupted if a.pid)
            state = RunState.PAUSED
        else:
            state = store.request_pause(feature, run.run, now=iso(utc_now()))
        self._audit(store, run, "orchestration.run.paused", now=now, agents_stopped=stopped,
                    processes_stopped=processes, status=state.value)  # fmt: skip
        after = self._current_run(store, record)
        if state is RunState.PAUSED:
            message = "paused" + (
                f"; {stopped} agent(s) stopped ({processes} process(es) in all)" if now else ""
            )
        else:
            message = (
                f"pauses before its next phase (the {after.current_phase or 'current'} phase "
                f"finishes first; `tmops pause {feature} --now` stops it at once)"
            )
        return self._answer(after, message, agents_stopped=stopped, processes_stopped=processes)

    def resume(
        self, feature: str, *, accept_branch: bool = False, provider: str | None = None,
        workspace: Path | None = None, spawn: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        """Queue a paused (or failed, cancelled, needs_review) run again where it stopped."""
        _, store, record = self._tracked(feature, workspace)
        run = self._current_run(store, record)
        state = RunState(run.status)
        if state in ACTIVE_RUN_STATES:
            raise FeatureError(
                f"run '{run.run}' of '{feature}' is {state}: there is nothing to resume",
                hint=f"`tmops watch {feature}` follows it",
            )
        if run.pause_reason == PauseReason.AWAITING_APPROVAL:
            raise FeatureError(
                f"run '{run.run}' of '{feature}' waits for an approval before {run.current_phase}",
                hint=f"`tmops approve {feature}` lets it go on (or `tmops cancel {feature}`)",
            )
        if run.pause_reason == PauseReason.BUDGET_EXHAUSTED:
            self._check_budget(store, run)
        self._audit(store, run, "orchestration.run.resumed", status=state.value)
        return self.start(
            feature, provider=provider, resume=True, accept_branch=accept_branch,
            workspace=workspace, spawn=spawn,
        )  # fmt: skip

    def _check_budget(self, store: Store, run: RunRecord) -> None:
        """Refuse to resume a run whose budget is still spent under the config as it is now:
        it would pause again before its first attempt."""
        attempts = store.attempts(run.feature, run.run)
        spent = budget_ending(self.config, attempts, run.feature, run.current_phase or "")
        if spent is not None:
            raise FeatureError(
                f"run '{run.run}' of '{run.feature}' cannot resume: {spent.reason}",
                hint="raise the limit in the config (`tmops config show` shows it), then "
                f"`tmops resume {run.feature}`",
            )

    # -- retry and approve -------------------------------------------------------------------

    def retry(
        self, feature: str, *, phase: str | None = None, workspace: Path | None = None,
        spawn: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        """Run a stopped run again from ``phase`` (default: where it stopped; for a run that
        needs review, the rework phase): that phase and every one after it run again, their
        checkpoints set aside first. The branch stays (``rollback`` moves it)."""
        layout, store, record = self._tracked(feature, workspace)
        run = self._current_run(store, record)
        state = RunState(run.status)
        if state in ACTIVE_RUN_STATES or state in {RunState.INITIALIZED, RunState.COMPLETED}:
            hint = {
                RunState.INITIALIZED: f"`tmops start {feature}` starts it",
                RunState.COMPLETED: f"`tmops rollback {feature} --phase P` sends phases back, "
                f"`tmops init {feature} --retry` starts a new run",
            }.get(state, f"pause it first (`tmops pause {feature} --now`)")
            raise FeatureError(
                f"run '{run.run}' of '{feature}' is {state}: only a failed, paused, cancelled "
                "or needs_review run can be retried",
                hint=hint,
            )
        workflow = list(self.config.features.default_phases)
        phase = phase or self._retry_phase(run, workflow)
        if phase not in workflow:
            raise FeatureError(
                f"{shown(phase)} is not a phase of the workflow",
                hint=f"the workflow: {', '.join(workflow)}",
            )
        phases = workflow[workflow.index(phase) :]
        set_aside = self._set_aside_checkpoints(layout, run, phases)
        message = f"sent back by a person: retry from {phase}"
        review = self._refused_review(store, run, set_aside)
        if review is not None:  # the phase that runs again is told what the reviewer found
            message += f": {review[0]}; review: {review[1]}"
        store.reset_phases(feature, run.run, phases, message=message, now=iso(utc_now()))
        self._audit(store, run, "orchestration.run.retried", phase=phase, phases=phases,
                    set_aside=set_aside)  # fmt: skip
        answer = self.start(feature, resume=True, workspace=workspace, spawn=spawn)
        answer["retry_from"] = phase
        answer["set_aside"] = set_aside
        answer["message"] += f"; from {phase} again"
        return answer

    def _refused_review(
        self, store: Store, run: RunRecord, set_aside: list[str]
    ) -> tuple[str, str] | None:
        """For a run that needs review: the reviewer's refusal and where its checkpoint went."""
        if run.status != RunState.NEEDS_REVIEW:
            return None
        refused = [
            a for a in store.attempts(run.feature, run.run) if a.state == AttemptState.REFUSED
        ]
        installed = self.plugins.phases()
        if not refused or refused[-1].phase not in installed:
            return None
        name = installed[refused[-1].phase].spec.completion_checkpoint
        moved = next((path for path in set_aside if Path(path).name == name), None)
        if moved is None:
            return None
        return (refused[-1].message or "refused").partition("; read ")[0], moved

    def _retry_phase(self, run: RunRecord, workflow: list[str]) -> str:
        if run.status == RunState.NEEDS_REVIEW and self.config.features.rework_phase in workflow:
            return self.config.features.rework_phase
        if run.current_phase in workflow:
            return str(run.current_phase)
        return workflow[0]

    def _set_aside_checkpoints(self, layout: Layout, run: RunRecord, phases: list[str]
                               ) -> list[str]:  # fmt: skip
        """Move the phases' completion checkpoints into a backup folder of the run, so the
        next engine runs them instead of adopting them."""
        installed = self.plugins.phases()
        folder = layout.checkpoint_dir(run.feature, run.run)
        found = [
            folder / installed[name].spec.completion_checkpoint
            for name in phases
            if name in installed
        ]
        found = [path for path in found if _exists(path, layout)]
        if not found:
            return []
        backups = layout.run_dir(run.feature, run.run) / "backups"
        target = backups / f"retry-{stamp_now()}"
        ensure_private_dir(backups, root=layout.project_root)
        ensure_private_dir(target, root=layout.project_root)
        for path in found:
            rename_checked(path, target / path.name, root=layout.project_root)
        return [str(target / path.name) for path in found]

    def approve(
        self, feature: str, *, phase: str | None = None, workspace: Path | None = None,
        spawn: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        """Approve the phase an approval gate holds the run before (or ``phase``, ahead of
        time); a run waiting for it is queued again."""
        _, store, record = self._tracked(feature, workspace)
        run = self._current_run(store, record)
        waiting = run.pause_reason == PauseReason.AWAITING_APPROVAL
        phase = phase or (run.current_phase if waiting else None)
        gated = self.config.features.approve_before
        if phase is None:
            raise FeatureError(
                f"run '{run.run}' of '{feature}' waits for no approval (it is {run.status})",
                hint=f"name the phase to approve ahead of time: --phase "
                f"{'/'.join(gated) or 'P'} (features.approve_before lists the gated phases)",
            )
        if phase not in gated:
            raise FeatureError(
                f"{shown(phase)} has no approval gate (features.approve_before: "
                f"{', '.join(gated) or 'none'})",
                hint="add it to features.approve_before in the config to gate it",
            )
        new = store.approve(feature, run.run, phase, now=iso(utc_now()))
        self._audit(store, run, "orchestration.phase.approved", phase=phase, new=new)
        if waiting and phase == run.current_phase:
            answer = self.start(feature, resume=True, workspace=workspace, spawn=spawn)
            answer["approved"] = phase
            answer["message"] += f"; {phase} approved"
            return answer
        state = "approved" if new else "was approved already"
        return self._answer(run, f"{phase} {state}", approved=phase)

    # -- rollback ----------------------------------------------------------------------------

    def rollback(
        self, feature: str, *, phase: str, dry_run: bool = False, workspace: Path | None = None
    ) -> dict[str, Any]:
        """Send ``phase`` and every phase after it back, by the phase's preserve rules, after a
        backup; the run pauses ``rolled_back`` (``tmops resume`` runs them again). With
        ``dry_run``, say what would change and change nothing."""
        layout, store, record = self._tracked(feature, workspace)
        run = self._current_run(store, record)
        plan = plan_rollback(
            config=self.config, plugins=self.plugins, layout=layout, store=store,
            record=record, run=run, phase=phase, stamp=stamp_now(),
        )  # fmt: skip
        answer = plan.as_dict()
        answer["dry_run"] = dry_run
        where = (
            f"the branch {plan.branch} goes from {plan.head[:12]} back to {plan.target[:12]} "
            f"({len(plan.undone)} commit(s), {len(plan.reverted)} path(s) reverted, "
            f"{len(plan.kept)} kept)"
            if plan.target
            else f"the branch {plan.branch} and every file stay"
        )
        if dry_run:
            answer["message"] = f"dry run, nothing changed: {where}; " + (
                f"{len(plan.set_aside)} checkpoint/output file(s) would be set aside"
            )
            return answer
        apply_rollback(plan, layout=layout, store=store, now=iso(utc_now()))
        self._audit(
            store, run, "orchestration.run.rolled_back", phase=phase, phases=list(plan.phases),
            head=plan.head, target=plan.target, backup_ref=plan.backup_ref,
            backup_dir=plan.backup_dir, kept=list(plan.kept), reverted=list(plan.reverted),
        )  # fmt: skip
        answer["status"] = RunState.PAUSED.value
        answer["message"] = (
            f"{feature} run {plan.run} rolled back to before {phase}: {where}; backup ref "
            f"{plan.backup_ref}; `tmops resume {feature}` runs {', '.join(plan.phases)} again"
        )
        return answer

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _current_run(store: Store, record: FeatureRecord) -> RunRecord:
        run = store.run(record.name, record.current_run)
        if run is None:
            raise FeatureError(f"feature '{record.name}' has no run '{record.current_run}'")
        return run

    @property
    def acting(self) -> str:
        """The actor of the operation running now: the surface's for this call, else ours."""
        return current_actor(self.actor)

    def _audit(self, store: Store, run: RunRecord, event_type: str, **data: Any) -> None:
        """A person's operation on a run, in its audit trail."""
        self._record(store, run.feature, run.run, event_type, {"run": run.run, **data},
                     correlation_id=run.run_id)  # fmt: skip

    def _record(
        self, store: Store, feature: str, run: str, event_type: str, data: dict[str, Any],
        *, correlation_id: str | None = None,
    ) -> None:  # fmt: skip
        """The event, naming its actor, on the bus and in the store's audit trail (both get
        the same redacted data and time)."""
        event = self.events.emit(event_type, {**data, "actor": self.acting}, feature=feature,
                                 correlation_id=correlation_id)  # fmt: skip
        store.add_event(feature, run, event_type, json.dumps(dict(event.data), default=str),
                        iso(event.timestamp))  # fmt: skip

    @staticmethod
    def _answer(run: RunRecord, state: str, **extra: Any) -> dict[str, Any]:
        return {
            "feature": run.feature,
            "run": run.run,
            "status": run.status,
            "pause_reason": run.pause_reason,
            "pause_requested": run.pause_requested,
            **extra,
            "message": f"{run.feature} run {run.run}: {state}",
        }


def _stop_agents(attempts: list[Any]) -> list[int]:
    """Stop the agents of attempts whose run was taken from its engine, trees and all."""
    return reap_orphans(
        [(a.pid, a.start_time) for a in attempts if a.pid and a.start_time is not None],
        marks=[a.mark for a in attempts if a.mark],
    )


def _exists(path: Path, layout: Layout) -> bool:
    return lstat_checked(path, root=layout.project_root) is not None
