"""The store's side of a usage limit: when a paused run may go on, and queueing it again then.

A run paused ``usage_limited`` carries ``resume_at`` (when its provider's limit lifts, UTC). The
time is in the store, not in an engine's memory, so whichever engine serves the project next
honours it. Like :mod:`tmops_core.store.controls`, a part of each store class (a mixin over its
connection and dialect).
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from tmops_core.lifecycle import PauseReason, RunState
from tmops_core.store.dialect import Dialect, SQLConnection
from tmops_core.store.records import RunRecord, from_row

__all__ = ["UsageWaits", "held_providers"]


class UsageWaits:
    """Runs waiting for a usage limit to lift, and their return to the queue."""

    _db: SQLConnection
    _lock: threading.RLock
    _dialect: Dialect

    if TYPE_CHECKING:

        def transaction(self) -> AbstractContextManager[SQLConnection]: ...

        def _move_run(
            self, db: SQLConnection, feature: str, run: str, target: RunState, now: str,
            error: str | None, pause_reason: str | None = None,
        ) -> None: ...  # fmt: skip

    def usage_limited_runs(self) -> list[RunRecord]:
        """The runs paused by a usage limit that know when it lifts, the soonest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM runs WHERE status = ? AND pause_reason = ? AND resume_at IS NOT "
                "NULL ORDER BY resume_at, queue_seq",
                (RunState.PAUSED, PauseReason.USAGE_LIMITED),
            ).fetchall()
        return [from_row(RunRecord, row) for row in rows]

    def resume_due(self, feature: str, run: str, *, now: str) -> bool:
        """Queue a run paused by a usage limit again, at its old place in the queue, if its
        time has come (``resume_at`` <= ``now``); False if it is not (any more) waiting."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT status, pause_reason, resume_at FROM runs WHERE feature = ? AND run = ?"  # noqa: S608 - the dialect's lock clause  # nosec B608
                + self._dialect.for_update,
                (feature, run),
            ).fetchone()
            if (
                row is None
                or row["status"] != RunState.PAUSED
                or row["pause_reason"] != PauseReason.USAGE_LIMITED
                or row["resume_at"] is None
                or row["resume_at"] > now
            ):
                return False
            self._move_run(db, feature, run, RunState.QUEUED, now, None)
            db.execute(
                "UPDATE runs SET last_error = NULL, pause_requested = 0 "
                "WHERE feature = ? AND run = ?",
                (feature, run),
            )
            return True


def held_providers(waits: list[RunRecord], now: str) -> dict[str, str]:
    """Provider -> until when its usage limit holds its queued runs back (ISO, UTC): the
    latest reset among its runs paused by a limit that has not lifted yet. A run's limit is
    its phase's provider's (the one that hit it), not every provider of the run."""
    held: dict[str, str] = {}
    for run in waits:
        provider = run.limited_provider or run.provider
        if provider and run.resume_at and run.resume_at > now:
            held[provider] = max(held.get(provider, ""), run.resume_at)
    return held
