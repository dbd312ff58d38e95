"""Durable state in SQLite (WAL) under ``.tmops/``: features and their runs.

Every change is one transaction. The schema is versioned from the first release: migrations
run in order and are recorded in ``schema_migrations``. The database file is created 0600.
This module owns SQL; nothing else writes to the database.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from tmops_hookspecs import WorkspaceError

__all__ = ["FeatureRecord", "RunRecord", "Store"]

STORE_NAME = "tmops.db"

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE features (
        name        TEXT PRIMARY KEY,
        branch      TEXT NOT NULL,
        worktree    TEXT NOT NULL,
        isolation   TEXT NOT NULL,
        current_run TEXT NOT NULL,
        status      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE runs (
        feature     TEXT NOT NULL REFERENCES features(name),
        run         TEXT NOT NULL,
        status      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (feature, run)
    );
    """,
)


@attrs.frozen
class FeatureRecord:
    name: str
    branch: str
    worktree: str
    isolation: str
    current_run: str
    status: str
    created_at: str
    updated_at: str


@attrs.frozen
class RunRecord:
    feature: str
    run: str
    status: str
    created_at: str
    updated_at: str


class Store:
    """One SQLite database; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            # Create the file ourselves so it is private from the first byte.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        try:
            self._db = sqlite3.connect(path, timeout=10, check_same_thread=False)
        except sqlite3.Error as exc:
            raise WorkspaceError(f"cannot open the tmops store {path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    @classmethod
    def open_existing(cls, path: Path) -> Store | None:
        """The store at ``path`` if there is one (readers must never create it)."""
        return cls(path) if path.is_file() else None

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
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
            for version, script in enumerate(_MIGRATIONS, start=1):
                if version in done:
                    continue
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # -- features and runs -------------------------------------------------------------------

    def record_init(self, feature: FeatureRecord, run: RunRecord) -> None:
        """Record an initialised feature and its run in one transaction."""
        with self.transaction() as db:
            db.execute(
                """
                INSERT INTO features
                    (name, branch, worktree, isolation, current_run, status, created_at,
                     updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET
                    branch = excluded.branch, worktree = excluded.worktree,
                    isolation = excluded.isolation, current_run = excluded.current_run,
                    status = excluded.status, updated_at = excluded.updated_at
                """,
                attrs.astuple(feature),
            )
            db.execute(
                """
                INSERT INTO runs (feature, run, status, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(feature, run) DO NOTHING
                """,
                attrs.astuple(run),
            )

    def feature(self, name: str) -> FeatureRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM features WHERE name = ?", (name,)).fetchone()
        return FeatureRecord(**dict(row)) if row else None

    def features(self) -> list[FeatureRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM features ORDER BY name").fetchall()
        return [FeatureRecord(**dict(row)) for row in rows]

    def runs(self, feature: str) -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM runs WHERE feature = ? ORDER BY created_at, run", (feature,)
            ).fetchall()
        return [RunRecord(**dict(row)) for row in rows]
