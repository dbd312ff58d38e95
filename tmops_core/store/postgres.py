"""Durable state in PostgreSQL: one database that engines on several machines share.

The same :class:`~tmops_core.store.protocol.Store` as :mod:`tmops_core.store.sqlite`, from the
same modules (runs, leases, controls, trail, tallies, waits) over a psycopg 3 connection: their
SQL is written once with ``?`` placeholders, which :class:`_Connection` turns into psycopg's
``%s``, and :data:`~tmops_core.store.dialect.POSTGRES` says the rest (row locks, ids). The
schema is versioned like SQLite's: ``migrations/postgresql/NNNN_*.sql``, numbered as the SQLite
files, each applied in one transaction and recorded in ``schema_migrations``; engines that start
at once migrate one after the other (an advisory lock). Each workspace (``server.workspace_id``)
is a schema of its own, ``tmops_<workspace_id>``: several share one database without seeing
each other's features, runs, events or engine lease. Every row names its workspace too, and the
schema records whose it is (:mod:`tmops_core.store.workspace`): a schema holding another
workspace's rows (copied or renamed) is refused on open.

psycopg is imported here only, and this module only when ``store.url`` names PostgreSQL: a
single machine's tmops needs neither. The password is never part of a message: libpq reads it
from ``PGPASSWORD`` or ``~/.pgpass``, and one written in the URL is hidden (:mod:`tmops_core.
secrets`) wherever the URL is shown.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tmops_core.secrets import redact_text
from tmops_core.store.controls import RunControls
from tmops_core.store.dialect import POSTGRES, Cursor
from tmops_core.store.leases import EngineLeases
from tmops_core.store.records import StoreUnreachable
from tmops_core.store.runs import RunStore
from tmops_core.store.tallies import StoreTallies
from tmops_core.store.trail import AuditTrail
from tmops_core.store.waits import UsageWaits
from tmops_core.store.workspace import check_workspace
from tmops_hookspecs import WorkspaceError

__all__ = ["PostgresStore", "pg_migrations"]

_MIGRATIONS = Path(__file__).with_name("migrations") / "postgresql"
_MIGRATION_NAME = re.compile(r"([0-9]{4})_[a-z0-9_]+[.]sql")
#: the key of the advisory lock migrations take (any constant: "tmops" in ASCII)
_MIGRATION_LOCK = 0x746D6F7073
#: the longest name PostgreSQL keeps whole (NAMEDATALEN - 1)
_NAME_BYTES = 63


def pg_migrations() -> list[tuple[int, str, str]]:
    """``(version, file name, SQL text)`` of every PostgreSQL migration, in version order; a
    file runs whole (PostgreSQL takes several statements, and function bodies, in one go)."""
    found = []
    for entry in _MIGRATIONS.iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match is not None:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class _Row:
    """A row as sqlite3.Row hands it out: by column name, by position or slice, ``dict(row)``."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: Sequence[str], values: Sequence[Any]) -> None:
        self._names = names
        self._values = tuple(values)

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return self._values[self._names.index(key)]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _row_factory(cursor: Any) -> Any:
    names = [column.name for column in cursor.description] if cursor.description else []

    def make(values: Sequence[Any]) -> _Row:
        return _Row(names, values)

    return make


class _Connection:
    """The psycopg connection as the store's modules use it: ``?`` placeholders; ``live``
    hands out the store's connection (made anew after a drop, between transactions)."""

    def __init__(self, live: Callable[[], Any]) -> None:
        self._live = live
        self._queries: dict[str, str] = {}

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        query = self._queries.get(sql)
        if query is None:
            # the store's SQL holds no ? or % inside a literal: a plain replacement is exact
            query = self._queries[sql] = sql.replace("%", "%%").replace("?", "%s")
        cursor: Cursor = self._live().execute(query, tuple(parameters))
        return cursor


class PostgresStore(RunStore, EngineLeases, RunControls, AuditTrail, StoreTallies, UsageWaits):
    """The :class:`~tmops_core.store.protocol.Store` in a PostgreSQL database; safe to share
    between threads of one process (one connection, one transaction at a time, as SQLite's)."""

    _dialect = POSTGRES
    _db: _Connection

    def __init__(self, url: str, *, workspace: str = "default") -> None:
        self.schema = f"tmops_{workspace}"
        if len(self.schema.encode()) > _NAME_BYTES:  # PostgreSQL would cut it: two could collide
            raise WorkspaceError(
                f"server.workspace_id {workspace[:32]!r}... is too long for a PostgreSQL store",
                hint=f"use at most {_NAME_BYTES - len('tmops_')} bytes",
            )
        self.url = url
        self.workspace = workspace
        self._lock = threading.RLock()
        self._depth = 0  # transactions open on this connection (a nested one is a savepoint)
        self._conn = self._connect()
        self._db = _Connection(self._live)
        try:
            self._migrate()
            check_workspace(
                self._db, workspace,
                store=f"the schema {self.schema} of the tmops store {redact_text(url)}",
                fix="the schema was copied or renamed from workspace {recorded}'s: set "
                "server.workspace_id to {recorded}, or give workspace {configured} a schema "
                "of its own (drop or rename this one)",
            )  # fmt: skip
        except BaseException:
            self._conn.close()
            raise

    def _connect(self, *, again: bool = False) -> Any:
        """A new connection to the workspace's schema (made, the first time). ``again``: the
        store worked before, so a refusal now is the server's outage, not the config's."""
        try:
            import psycopg
            from psycopg import sql
        except ImportError as exc:
            raise WorkspaceError(
                "store.url names a PostgreSQL database, but psycopg is not installed",
                hint="install tmops with its postgres extra: pip install 'tmops[postgres]'",
            ) from exc
        try:
            # autocommit: a read is its own statement; changes are explicit transactions
            conn = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory)
        except psycopg.Error as exc:
            problem = (f"cannot connect to the tmops store {redact_text(self.url)}: "
                       f"{redact_text(str(exc)).strip()}")  # fmt: skip
            if again:  # psycopg's exception may hold the connection string: never chained
                raise StoreUnreachable(problem) from None
            raise WorkspaceError(
                problem,
                hint="check store.url, that the server runs and the role may connect; the "
                "password comes from PGPASSWORD or ~/.pgpass",
            ) from None
        # A workspace is a schema of its own: its tables, functions and schema version, so the
        # workspaces sharing the database cannot see each other's rows, whatever a query says.
        name = sql.Identifier(self.schema)
        with conn.transaction():  # two engines making it at once: one waits
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
        conn.execute(sql.SQL("SET search_path TO {}").format(name))
        return conn

    def _live(self) -> Any:
        """The connection; one the server dropped (a restart, a failover) is made anew, but
        only between transactions: a transaction it cut is lost whole, never half-redone."""
        if (self._conn.broken or self._conn.closed) and not self._depth:
            self._conn.close()
            self._conn = self._connect(again=True)
        return self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        """One atomic unit of change: everything in the block commits together or not at all
        (READ COMMITTED; what a change checks, it locks: see :mod:`tmops_core.store.dialect`)."""
        with self._lock, self._live().transaction():
            self._depth += 1
            try:
                yield self._db
            finally:
                self._depth -= 1

    def _migrate(self) -> None:
        with self._lock:
            done = self._done_versions()
            if done >= {version for version, _, _ in pg_migrations()}:
                return
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)"
                )
            for version, _name, text in pg_migrations():
                with self._conn.transaction():  # one transaction per migration
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    if version in self._done_versions():  # another engine was first
                        continue
                    # 0010 stamps the rows there with the workspace: until the commit
                    self._conn.execute(
                        "SELECT set_config('tmops.workspace_id', %s, true)", (self.workspace,)
                    )
                    self._conn.execute(text)
                    self._conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
                    )

    def _done_versions(self) -> set[int]:
        exists = self._conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        if exists is None or exists[0] is None:
            return set()
        return {int(row[0]) for row in self._conn.execute("SELECT version FROM schema_migrations")}

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)
