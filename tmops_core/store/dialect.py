"""The few places the store's SQL differs between SQLite and PostgreSQL, in one object.

The store's modules write one SQL text for both backends (``?`` placeholders; the PostgreSQL
connection turns them into ``%s``) and ask the backend's :class:`Dialect` for the rest: row
locks, the id of an inserted row, and reading a number out of an event's JSON data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

__all__ = ["POSTGRES", "SQLITE", "Cursor", "Dialect", "Row", "SQLConnection"]

#: a row: its columns by name and by position (sqlite3.Row, or the PostgreSQL store's own)
Row = Any


class Cursor(Protocol):
    """What the store reads from a statement's cursor, whatever the backend."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SQLConnection(Protocol):
    """A connection as the store's modules use it: one ``execute`` with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...


@attrs.frozen
class Dialect:
    """One backend's spelling of what the shared SQL cannot say the same way."""

    name: str
    #: appended to a SELECT whose rows the transaction goes on to change (a check-and-change):
    #: PostgreSQL locks them until the commit; SQLite's BEGIN IMMEDIATE already locks it all
    for_update: str
    #: appended to a SELECT of rows that must not change until the commit (read, not written)
    for_share: str
    #: run first in the transaction that takes the engine lease: one taker at a time
    lock_engines: str | None
    #: the database's clock, in seconds since the epoch (the shared lease is judged by it)
    epoch_now: str
    #: run first in the transaction that gives a run the next place in the queue
    lock_queue: str | None = None

    def insert_id(self, db: Any, sql: str, parameters: Sequence[Any]) -> int:
        """Run the INSERT ``sql``; the id of the row it made."""
        if self.name == "sqlite":
            return int(db.execute(sql, parameters).lastrowid or 0)
        return int(db.execute(sql + " RETURNING id", parameters).fetchone()[0])

    def event_numbers(self, key: str, after_id: int, event_type: str) -> tuple[str, list[Any]]:
        """A query of ``(id, number)`` of the events of ``event_type`` after ``after_id`` whose
        JSON data holds a number at ``key`` (a checked word), and its parameters."""
        if self.name == "sqlite":
            return (
                "SELECT id, json_extract(data, ?) FROM events WHERE id > ? AND event_type = ? "
                "AND json_valid(data) AND json_type(data, ?) IN ('integer', 'real') ORDER BY id",
                [f"$.{key}", after_id, event_type, f"$.{key}"],
            )
        # tmops_jsonb (migration 0006): NULL for data that is not JSON, where a cast would fail
        return (
            "SELECT id, (tmops_jsonb(data) ->> ?)::double precision FROM events WHERE id > ? "
            "AND event_type = ? AND jsonb_typeof(tmops_jsonb(data) -> ?) = 'number' ORDER BY id",
            [key, after_id, event_type, key],
        )


SQLITE = Dialect(
    "sqlite",
    for_update="",
    for_share="",
    lock_engines=None,
    epoch_now="((julianday('now') - 2440587.5) * 86400.0)",
)
# Row locks (SELECT ... FOR UPDATE) rather than SERIALIZABLE with retries: a fenced
# transaction yields to its caller (a git commit runs inside it), and a caller's block cannot
# be run again, so a conflict must wait, not fail. Every change of a run's fencing token
# updates the run's row, so the fenced check holds that row until the commit: a stale writer
# on another machine waits, then reads the new token and is refused.
POSTGRES = Dialect(
    "postgres",
    for_update=" FOR UPDATE",
    for_share=" FOR SHARE",
    lock_engines="LOCK TABLE engines IN EXCLUSIVE MODE",
    epoch_now="EXTRACT(EPOCH FROM clock_timestamp())::double precision",
    # the transaction's own advisory lock (a constant key: "queue" in ASCII): only queueing
    # runs waits for it
    lock_queue="SELECT pg_advisory_xact_lock(487300887909)",
)
