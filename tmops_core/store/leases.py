"""The store's engines and the project's lease: which engine process serves the project.

The ``engines`` table (migration ``0003_engine_lease.sql``) names every engine by pid, process
start time and boot id; at most one row is ``serving`` (a unique index says so), and that row
is the project's lease, renewed by the engine's heartbeat. Judging whether an engine is alive
is the caller's (:func:`tmops_core.orchestration.daemon.engine_alive`): this module only keeps
the records, each change in one transaction. It is a part of each store class (a mixin over its
connection and dialect) and the only place that writes these tables.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import attrs

from tmops_core.lifecycle import EngineState, RunState
from tmops_core.store.dialect import Dialect, SQLConnection
from tmops_core.store.records import from_row

__all__ = ["EngineLeases", "EngineRecord", "LeaseHeld"]

#: Engines that no run names are forgotten, but for this many of the newest (for diagnosis).
_ENGINES_KEPT = 20


@attrs.frozen
class EngineRecord:
    """An engine process: its identity (pid, process start time, boot id) and its lease."""

    id: int
    pid: int
    start_time: int
    boot_id: str
    state: str
    #: the lease ends then (seconds of the boot clock) unless the heartbeat renews it
    lease_until: float
    started_at: str
    heartbeat_at: str
    stopped_at: str | None = None
    #: the lease ends then by the database's clock (seconds since the epoch); None: not given
    lease_expires_at: float | None = None
    #: seconds of the lease left when the record was read, by the database's clock: what an
    #: engine on another machine (which cannot see its process) is judged by
    lease_left_s: float | None = attrs.field(default=None, eq=False)


class LeaseHeld(Exception):
    """A live engine holds the project's lease: this process must not serve the project."""

    def __init__(self, holder: EngineRecord) -> None:
        super().__init__(f"engine pid {holder.pid} holds the lease of this project")
        self.holder = holder


class EngineLeases:
    """The engine and lease operations of the store."""

    _db: SQLConnection
    _lock: threading.RLock
    _dialect: Dialect
    workspace: str

    if TYPE_CHECKING:

        def transaction(self) -> AbstractContextManager[SQLConnection]: ...

    def acquire_lease(
        self,
        *,
        pid: int,
        start_time: int,
        boot_id: str,
        lease_until: float,
        now: str,
        alive: Callable[[EngineRecord], bool],
        lease_s: float | None = None,
    ) -> tuple[EngineRecord, list[EngineRecord]]:
        """Make this process the project's serving engine, in one transaction.

        The serving engine, if any, is judged by ``alive``: a live one keeps the lease and
        :class:`LeaseHeld` is raised; a dead one is marked taken over, and its running runs
        get a new fencing token in the same transaction, so that nothing it might still write
        lands (an engine judged dead by its lease alone may wake up). Returns the new
        engine's record and the records of the engines it took over from. ``lease_s``: the
        lease's length, also kept by the database's clock (``lease_expires_at``) for engines
        on other machines to judge it by.
        """
        with self.transaction() as db:
            if self._dialect.lock_engines:  # two takers on two machines: one waits for the other
                db.execute(self._dialect.lock_engines)
            rows = db.execute(self._engines_where("state = ?"), (EngineState.SERVING,)).fetchall()
            serving = [from_row(EngineRecord, row) for row in rows]
            for engine in serving:
                if alive(engine):
                    raise LeaseHeld(engine)
            for engine in serving:
                db.execute(
                    "UPDATE engines SET state = ?, stopped_at = ? WHERE id = ?",
                    (EngineState.TAKEN_OVER, now, engine.id),
                )
                db.execute(
                    "UPDATE runs SET fencing = fencing + 1 WHERE engine_id = ? AND status = ?",
                    (engine.id, RunState.RUNNING),
                )
            engine_id = self._dialect.insert_id(
                db,
                "INSERT INTO engines (pid, start_time, boot_id, state, lease_until, "  # noqa: S608 - the dialect's clock  # nosec B608
                "started_at, heartbeat_at, lease_expires_at, workspace_id) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, {self._dialect.epoch_now} + ?, ?)",
                (
                    pid,
                    start_time,
                    boot_id,
                    EngineState.SERVING,
                    lease_until,
                    now,
                    now,
                    lease_s,
                    self.workspace,
                ),
            )
            db.execute(
                """
                DELETE FROM engines WHERE state != ? AND id <= ?
                    AND id NOT IN (SELECT engine_id FROM runs WHERE engine_id IS NOT NULL)
                """,
                (EngineState.SERVING, engine_id - _ENGINES_KEPT),
            )
            row = db.execute(self._engines_where("id = ?"), (engine_id,)).fetchone()
        taken = [
            attrs.evolve(e, state=EngineState.TAKEN_OVER.value, stopped_at=now) for e in serving
        ]
        return from_row(EngineRecord, row), taken

    def renew_lease(
        self, engine_id: int, *, lease_until: float, now: str, lease_s: float | None = None
    ) -> bool:
        """Extend the lease of a serving engine; False if it is no longer serving (taken over)."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE engines SET lease_until = ?, heartbeat_at = ?, "  # noqa: S608 - the dialect's clock  # nosec B608
                f"lease_expires_at = {self._dialect.epoch_now} + ? WHERE id = ? AND state = ?",
                (lease_until, now, lease_s, engine_id, EngineState.SERVING),
            )
            return cursor.rowcount == 1

    def release_lease(self, engine_id: int, *, now: str) -> None:
        """Give the lease back (the engine stops); nothing if it was taken over meanwhile."""
        with self.transaction() as db:
            db.execute(
                "UPDATE engines SET state = ?, stopped_at = ? WHERE id = ? AND state = ?",
                (EngineState.STOPPED, now, engine_id, EngineState.SERVING),
            )

    def engine(self, engine_id: int) -> EngineRecord | None:
        with self._lock:
            row = self._db.execute(self._engines_where("id = ?"), (engine_id,)).fetchone()
        return from_row(EngineRecord, row) if row else None

    def serving_engine(self) -> EngineRecord | None:
        """The engine that holds the lease, dead or alive (judging that is the caller's)."""
        with self._lock:
            row = self._db.execute(
                self._engines_where("state = ?"), (EngineState.SERVING,)
            ).fetchone()
        return from_row(EngineRecord, row) if row else None

    def _engines_where(self, condition: str) -> str:
        """A query of the engines matching ``condition`` (placeholders only), each with the
        seconds its lease has left by the database's clock."""
        return (
            f"SELECT *, lease_expires_at - {self._dialect.epoch_now} AS lease_left_s "  # noqa: S608 - the dialect's clock, a fixed condition  # nosec B608
            f"FROM engines WHERE {condition}"
        )
