"""Durable state in SQLite (WAL) under ``.tmops/``: features, their runs and attempts, events.

Every change is one transaction. The schema is versioned from the first release: the migration
files in ``migrations/`` run in order and are recorded in ``schema_migrations``. A file is one
project's and one workspace's (``server.workspace_id``, in every row): a config naming another
workspace is refused when it opens the file (:mod:`tmops_core.store.workspace`). The database
file is created 0600, and it (with its ``-wal``, ``-shm`` and ``-journal`` files) is never opened
through a symlink: the path is checked component by component before SQLite gets it. This module
owns SQL, with :mod:`tmops_core.store.runs` (features, runs, attempts),
:mod:`tmops_core.store.leases` (the engines and the project's lease),
:mod:`tmops_core.store.controls` (a person's changes to a run), :mod:`tmops_core.store.trail`
(the append-only audit trail) and :mod:`tmops_core.store.tallies` (the aggregates metrics
read), parts of :class:`Store` shared with :mod:`tmops_core.store.postgres`; nothing else writes
to the database.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tmops_core.store.controls import RunControls
from tmops_core.store.dialect import SQLITE
from tmops_core.store.leases import EngineLeases
from tmops_core.store.runs import RunStore
from tmops_core.store.tallies import StoreTallies
from tmops_core.store.trail import AuditTrail
from tmops_core.store.waits import UsageWaits
from tmops_core.store.workspace import check_workspace
from tmops_core.workspace.layout import lstat_checked, open_file
from tmops_hookspecs import WorkspaceError

__all__ = ["SQLiteStore", "migrations"]

# A folder next to this module (tmops is never run from a zip): listing it costs a scandir,
# where importlib.resources costs 50 ms of imports on every command that opens the store.
_MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"([0-9]{4})_[a-z0-9_]+[.]sql")


def migrations() -> list[tuple[int, str, list[str]]]:
    """``(version, file name, statements)`` of every migration file, in version order.

    A migration is a file ``NNNN_what.sql`` of statements separated by ``;`` (a ``;`` inside
    a statement, as in a trigger's body, stays: a statement ends where SQLite says it is
    complete); ``--`` comment lines are dropped (a comment must not hold a ``;``).
    """
    found = []
    for version, entry in _migration_files():
        text = "\n".join(
            line for line in entry.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("--")
        )  # fmt: skip
        statements, pending = [], ""
        for part in text.split(";"):
            pending += part + ";"
            if sqlite3.complete_statement(pending):
                if pending.strip(" \n;"):
                    statements.append(pending.strip().removesuffix(";").strip())
                pending = ""
        found.append((version, entry.name, statements))
    return sorted(found)


def _migration_files() -> list[tuple[int, Path]]:
    """``(version, path)`` of every migration file, by name only (nothing is read)."""
    found = []
    for entry in _MIGRATIONS.iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match is not None:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _check_files(path: Path) -> None:
    """Refuse a symlink on the way to the database or at one of the files SQLite opens beside
    it; SQLite itself would follow one."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        lstat_checked(path.with_name(path.name + suffix))


class SQLiteStore(RunStore, EngineLeases, RunControls, AuditTrail, StoreTallies, UsageWaits):
    """The :class:`~tmops_core.store.protocol.Store` in one SQLite database (WAL); safe to share
    between threads of one process."""

    _dialect = SQLITE
    _db: sqlite3.Connection

    def __init__(self, path: Path, *, workspace: str = "default") -> None:
        self.path = path
        self.workspace = workspace
        _check_files(path)
        if lstat_checked(path) is None:
            # Create the file ourselves so it is private from the first byte (and not a link).
            # Only when it is missing: closing any descriptor of a database this process has
            # open drops the POSIX locks SQLite holds on it (another Store of this process).
            with contextlib.suppress(FileExistsError):
                os.close(open_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
            self._db = sqlite3.connect(
                path, timeout=10, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise WorkspaceError(f"cannot open the tmops store {path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL still never corrupts the store and survives a crash of tmops; only
        # a power cut can lose the last transactions, which reconciliation at start-up redoes.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=10000")
        try:
            self._migrate()
            check_workspace(
                self._db, workspace, store=f"the tmops store {path}",
                fix="set server.workspace_id back to {recorded}, or point store.url at another "
                "file (sqlite:///PATH) for workspace {configured}",
            )  # fmt: skip
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open_existing(cls, path: Path, *, workspace: str = "default") -> SQLiteStore | None:
        """The store at ``path`` if there is one (readers must never create it).

        :raises WorkspaceError: it, or a folder on the way to it, is a symlink; it is another
            workspace's.
        """
        return cls(path, workspace=workspace) if lstat_checked(path) is not None else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of change: everything in the block commits together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        # Up to date (the common case): a read, no write lock. A reader such as `tmops status`
        # or `start` then never waits behind the engine's transactions to learn that.
        with self._lock, contextlib.suppress(sqlite3.OperationalError):  # no table yet
            done = {row[0] for row in self._db.execute("SELECT version FROM schema_migrations")}
            if done >= {version for version, _ in _migration_files()}:
                return
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
            for version, _name, statements in migrations():
                if version in done:
                    continue
                for statement in statements:  # 0010 stamps the rows there with the workspace
                    db.execute(statement, {"workspace_id": self.workspace})
                db.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)
