"""The store's side of a person in control: stopping a run (cancel, pause now), asking a
running run to pause before its next phase, sending phases back (retry, rollback), and the
approvals the approval gates wait for.

Each change is one transaction, its states checked against :mod:`tmops_core.lifecycle` by the
store's one mover of run states. Like :mod:`tmops_core.store.leases`, a part of each store class
(a mixin over its connection and dialect).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from tmops_core.lifecycle import (
    ACTIVE_RUN_STATES,
    LIVE_ATTEMPT_STATES,
    AttemptState,
    PauseReason,
    RunState,
)
from tmops_core.secrets import redact_text
from tmops_core.store.dialect import Dialect, SQLConnection
from tmops_core.store.records import AttemptRecord, from_row
from tmops_hookspecs import FeatureError

__all__ = ["RunControls"]


class RunControls:
    """Stop, pause, reset and approve: the changes a person's commands make to a run."""

    _db: SQLConnection
    _lock: threading.RLock
    _dialect: Dialect
    workspace: str

    if TYPE_CHECKING:

        def transaction(self) -> AbstractContextManager[SQLConnection]: ...

        def _status(self, db: SQLConnection, feature: str, run: str) -> RunState: ...

        def _move_run(
            self, db: SQLConnection, feature: str, run: str, target: RunState, now: str,
            error: str | None, pause_reason: str | None = None,
        ) -> None: ...  # fmt: skip

    def stop_run(
        self, feature: str, run: str, *, state: RunState, pause_reason: PauseReason | None,
        attempts: AttemptState, message: str, now: str,
    ) -> list[AttemptRecord]:  # fmt: skip
        """A person's cancel or pause-now: the run moves to ``state`` and gets a new fencing
        token (whatever its engine writes next is refused), its live attempts end as
        ``attempts``; in one transaction. Returns those attempts, whose agents the caller
        stops.

        :raises IllegalTransition: the run cannot move to ``state``.
        """
        message = redact_text(message)
        reason = pause_reason.value if pause_reason else None
        with self.transaction() as db:
            self._move_run(db, feature, run, state, now, message, reason)
            db.execute(
                "UPDATE runs SET fencing = fencing + 1, engine_pid = NULL, engine_id = NULL, "
                "pause_requested = 0 WHERE feature = ? AND run = ?",
                (feature, run),
            )
            live = (feature, run, *sorted(LIVE_ATTEMPT_STATES))
            rows = db.execute(
                "SELECT * FROM attempts WHERE feature = ? AND run = ? AND state IN (?, ?)", live
            ).fetchall()
            db.execute(
                "UPDATE attempts SET state = ?, outcome = ?, message = ?, finished_at = ? "
                "WHERE feature = ? AND run = ? AND state IN (?, ?)",
                (attempts, attempts.value, message, now, *live),
            )
        return [from_row(AttemptRecord, row) for row in rows]

    def request_pause(self, feature: str, run: str, *, now: str) -> RunState:
        """Pause a run before its next phase; returns the state it is in afterwards.

        A queued run pauses at once (no engine has it yet; its fencing token changes so an
        engine admitting it meanwhile loses it). A running run is marked: its engine pauses
        it once the phase at hand is judged (:meth:`pause_requested`).
        """
        with self.transaction() as db:
            state = self._status(db, feature, run)
            if state is RunState.QUEUED:
                self._move_run(
                    db, feature, run, RunState.PAUSED, now, "paused by a person",
                    PauseReason.REQUESTED.value,
                )  # fmt: skip
                db.execute(
                    "UPDATE runs SET fencing = fencing + 1 WHERE feature = ? AND run = ?",
                    (feature, run),
                )
                return RunState.PAUSED
            if state is RunState.RUNNING:
                db.execute(
                    "UPDATE runs SET pause_requested = 1, updated_at = ? "
                    "WHERE feature = ? AND run = ?",
                    (now, feature, run),
                )
            return state

    def pause_requested(self, feature: str, run: str) -> bool:
        """Whether a person asked this run to pause before its next phase."""
        with self._lock:
            row = self._db.execute(
                "SELECT pause_requested FROM runs WHERE feature = ? AND run = ?", (feature, run)
            ).fetchone()
        return bool(row and row["pause_requested"])

    def reset_phases(
        self, feature: str, run: str, phases: Iterable[str], *, message: str, now: str,
        branch_head: str | None = None, pause: PauseReason | None = None,
    ) -> None:  # fmt: skip
        """Send ``phases`` back: each gets a ``reset`` attempt (the attempts before it no longer
        count) and loses its approval; the run's branch head becomes ``branch_head`` when
        given, and with ``pause`` the run pauses for that reason; in one transaction.

        :raises FeatureError: the run is queued or running (an engine owns it).
        """
        message = redact_text(message)  # a reviewer's refusal is quoted in it
        names = list(phases)
        with self.transaction() as db:
            state = self._status(db, feature, run)
            if state in ACTIVE_RUN_STATES:
                raise FeatureError(
                    f"run '{run}' of '{feature}' is {state}: an engine owns it",
                    hint=f"pause it first (`tmops pause {feature} --now`) or cancel it",
                )
            for phase in names:
                db.execute(
                    """
                    INSERT INTO attempts (feature, run, phase, attempt, state, provider, fencing,
                        outcome, message, duration_s, started_at, finished_at, workspace_id)
                    VALUES (?, ?, ?, 0, ?, 'none',
                        (SELECT fencing FROM runs WHERE feature = ? AND run = ?),
                        'reset', ?, 0, ?, ?, ?)
                    """,
                    (
                        feature,
                        run,
                        phase,
                        AttemptState.RESET,
                        feature,
                        run,
                        message,
                        now,
                        now,
                        self.workspace,
                    ),
                )
                db.execute(
                    "DELETE FROM approvals WHERE feature = ? AND run = ? AND phase = ?",
                    (feature, run, phase),
                )
            db.execute(
                "UPDATE runs SET current_phase = ?, branch_head = COALESCE(?, branch_head), "
                "updated_at = ? WHERE feature = ? AND run = ?",
                (names[0] if names else None, branch_head, now, feature, run),
            )
            if pause is not None:
                self._move_run(db, feature, run, RunState.PAUSED, now, message, pause.value)

    def approve(self, feature: str, run: str, phase: str, *, now: str) -> bool:
        """Record a person's approval of ``phase``; False if it was approved already."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO approvals (feature, run, phase, approved_at, workspace_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (feature, run, phase, now, self.workspace),
            )
            return cursor.rowcount > 0

    def approved(self, feature: str, run: str) -> frozenset[str]:
        """The phases of the run a person has approved."""
        with self._lock:
            rows = self._db.execute(
                "SELECT phase FROM approvals WHERE feature = ? AND run = ?", (feature, run)
            ).fetchall()
        return frozenset(row["phase"] for row in rows)
