"""The store's tallies for metrics (``tmops metrics``, ``/metrics``): counts and sums computed by
the database in one pass over a table, so a scrape costs a few queries however many runs there
are.

Reads only: nothing here writes, and none of it runs on a run's path (a scrape reads the store
when Prometheus asks, from another process or thread; WAL lets it read while the engine writes).
Like :mod:`tmops_core.store.leases`, a part of each store class (a mixin over its connection and
dialect).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import attrs

from tmops_core.lifecycle import LIVE_ATTEMPT_STATES, AttemptState
from tmops_core.store.dialect import Dialect, SQLConnection

__all__ = ["AttemptTally", "OpenRun", "RunTally", "StoreTallies"]

#: a key of an event's data that a tally may read (a JSON path is built from it)
_DATA_KEY = re.compile(r"[a-z_][a-z0-9_]{0,63}")


@attrs.frozen
class RunTally:
    """How many runs are in ``status`` (and, paused, for ``pause_reason``)."""

    status: str
    pause_reason: str | None
    count: int


@attrs.frozen
class AttemptTally:
    """The ended attempts of one (phase, state, provider): how many, what they cost, and how
    long their agents ran, as counts at or under each bound of the caller's buckets."""

    phase: str
    state: str
    provider: str
    count: int
    cost_usd: float
    #: attempts with a recorded duration (an agent ran: adoptions and abandoned ones have none)
    timed: int
    duration_s: float
    #: cumulative: attempts whose duration is at most each bound, in the bounds' order
    at_most: tuple[int, ...]


@attrs.frozen
class OpenRun:
    """A run that has not ended, with its cost so far and its last recorded event."""

    feature: str
    run: str
    status: str
    cost_usd: float
    updated_at: str
    #: the time of the run's newest event (ISO, as the store writes them), if it has one
    last_event_at: str | None


class StoreTallies:
    """Aggregates over runs, attempts and events, for the metrics' collector."""

    _db: SQLConnection
    _lock: threading.RLock
    _dialect: Dialect

    def run_tallies(self) -> list[RunTally]:
        """Runs counted by state and pause reason."""
        with self._lock:
            rows = self._db.execute(
                "SELECT status, pause_reason, COUNT(*) FROM runs GROUP BY status, pause_reason"
            ).fetchall()
        return [RunTally(row[0], row[1], int(row[2])) for row in rows]

    def attempt_tallies(self, bounds: Sequence[float]) -> list[AttemptTally]:
        """The ended attempts (not a person's ``reset`` marks) by phase, state and provider,
        with their durations counted under each of ``bounds`` (seconds, ascending)."""
        # An adoption (attempt 0) ran no agent: its duration of 0 would say nothing.
        under = "".join(
            ", SUM(CASE WHEN attempt > 0 AND duration_s <= ? THEN 1 ELSE 0 END)" for _ in bounds
        )
        skipped = (*sorted(LIVE_ATTEMPT_STATES), AttemptState.RESET)
        query = (
            "SELECT phase, state, provider, COUNT(*), COALESCE(SUM(cost_usd), 0), "  # noqa: S608 - placeholders only  # nosec B608
            "SUM(CASE WHEN attempt > 0 AND duration_s IS NOT NULL THEN 1 ELSE 0 END), "
            "COALESCE(SUM(CASE WHEN attempt > 0 THEN duration_s END), 0)"
            f"{under} FROM attempts WHERE state NOT IN (?, ?, ?) "
            "GROUP BY phase, state, provider ORDER BY phase, state, provider"
        )
        with self._lock:
            rows = self._db.execute(query, (*bounds, *skipped)).fetchall()
        return [
            AttemptTally(
                phase=row[0],
                state=row[1],
                provider=row[2],
                count=int(row[3]),
                cost_usd=float(row[4]),
                timed=int(row[5]),
                duration_s=float(row[6]),
                at_most=tuple(int(value) for value in row[7:]),
            )
            for row in rows
        ]

    def open_runs(self, states: Sequence[str]) -> list[OpenRun]:
        """The runs in ``states``, each with its newest event's time."""
        marks = ",".join("?" for _ in states)
        query = (
            "SELECT r.feature, r.run, r.status, r.cost_usd, r.updated_at, "  # noqa: S608 - placeholders only  # nosec B608
            "(SELECT e.timestamp FROM events e WHERE e.feature = r.feature AND e.run = r.run "
            f"ORDER BY e.id DESC LIMIT 1) FROM runs r WHERE r.status IN ({marks}) "
            "ORDER BY r.feature, r.run"
        )
        with self._lock:
            rows = self._db.execute(query, tuple(states)).fetchall()
        return [OpenRun(row[0], row[1], row[2], float(row[3]), row[4], row[5]) for row in rows]

    def event_numbers(
        self, event_type: str, key: str, *, after_id: int = 0
    ) -> list[tuple[int, float]]:
        """``(event id, number)`` of every ``event_type`` event after ``after_id`` whose data
        holds a number at ``key``, oldest first (the audit trail is append-only, so a reader
        may go on from the last id it saw)."""
        if not _DATA_KEY.fullmatch(key):
            raise ValueError(f"not a data key: {key!r}")
        with self._lock:
            query, values = self._dialect.event_numbers(key, after_id, event_type)
            rows = self._db.execute(query, values).fetchall()
        return [(int(row[0]), float(row[1])) for row in rows]

    def last_event_id(self) -> int:
        """The newest event's id (0 without one): a reader that saw a higher one reads a
        different database now (restored from a backup, made anew)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)
