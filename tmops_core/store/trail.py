"""The store's audit trail: the ``events`` table, append-only.

Every event is appended with its data redacted (:mod:`tmops_core.secrets`); nothing in tmops
changes or deletes one, and since migration 0006 the database itself refuses to (triggers that
abort any UPDATE or DELETE of the table, in SQLite and in PostgreSQL), so a record of who did what
cannot be rewritten through tmops' database connection. Like :mod:`tmops_core.store.leases`, a
part of each store class (a mixin over its connection and dialect).
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from tmops_core.secrets import redact_json_text
from tmops_core.store.dialect import Dialect, Row, SQLConnection

__all__ = ["AuditTrail"]


class AuditTrail:
    """Appending to and reading the events table."""

    _db: SQLConnection
    _lock: threading.RLock
    _dialect: Dialect
    workspace: str

    if TYPE_CHECKING:

        def transaction(self) -> AbstractContextManager[SQLConnection]: ...

        def fenced(
            self, feature: str, run: str, fencing: int
        ) -> AbstractContextManager[SQLConnection]: ...

    def add_event(
        self, feature: str | None, run: str | None, event_type: str, data: str, now: str, *,
        fencing: int | None = None,
    ) -> None:  # fmt: skip
        """Append to the audit trail; with ``fencing``, only while that token owns the run."""
        context = (
            self.fenced(feature, run, fencing)
            if fencing is not None and feature is not None and run is not None
            else self.transaction()
        )
        with context as db:
            self._append_event(db, feature, run, event_type, data, now)

    def _append_event(
        self, db: SQLConnection, feature: str | None, run: str | None, event_type: str,
        data: str, now: str,
    ) -> None:  # fmt: skip
        """The one INSERT of the trail: redacted data, the store's workspace."""
        db.execute(
            "INSERT INTO events (feature, run, event_type, timestamp, data, workspace_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (feature, run, event_type, now, redact_json_text(data), self.workspace),
        )

    def events_for(self, feature: str, *, after_id: int = 0) -> list[Row]:
        return self.audit_trail(feature, after_id=after_id)

    def audit_trail(
        self, feature: str | None = None, *, after_id: int = 0, since: str | None = None
    ) -> list[Row]:
        """The events after ``after_id`` (of ``feature``, else of every feature), oldest first;
        with ``since`` (an ISO time as the store writes them), those at or after it."""
        query = "SELECT * FROM events WHERE id > ?"
        values: list[object] = [after_id]
        if feature is not None:
            query += " AND feature = ?"
            values.append(feature)
        if since is not None:
            query += " AND timestamp >= ?"
            values.append(since)
        with self._lock:
            return self._db.execute(query + " ORDER BY id", values).fetchall()
