"""tmops' durable state: the :class:`Store` protocol, its records, and the SQLite backend.

Callers depend on the protocol and the records; :func:`open_store` picks the backend by the
config's ``store.url``: SQLite, the embedded default, in ``.tmops/tmops.db`` (or the file a
``sqlite:///`` URL names), or PostgreSQL (:mod:`tmops_core.store.postgres`, imported only then)
for a ``postgresql://`` URL.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from tmops_core.store.leases import EngineRecord, LeaseHeld
from tmops_core.store.protocol import Store
from tmops_core.store.records import (
    ACTIVE_STATES,
    STORE_NAME,
    AttemptRecord,
    FeatureRecord,
    LostOwnership,
    RunRecord,
    StoreUnreachable,
    since_reset,
)
from tmops_core.store.sqlite import SQLiteStore
from tmops_core.store.waits import held_providers
from tmops_hookspecs import WorkspaceError

__all__ = [
    "ACTIVE_STATES",
    "STORE_NAME",
    "AttemptRecord",
    "EngineRecord",
    "FeatureRecord",
    "LeaseHeld",
    "LostOwnership",
    "RunRecord",
    "SQLiteStore",
    "Store",
    "StoreUnreachable",
    "held_providers",
    "is_shared",
    "open_existing_store",
    "open_store",
    "refuse_shared",
    "since_reset",
    "sqlite_path",
    "store_errors",
    "store_outages",
]


def is_shared(url: str | None) -> bool:
    """Whether ``url`` names a PostgreSQL store (shared; no file of the project holds it)."""
    return url is not None and url.startswith(("postgresql://", "postgres://"))


def store_errors() -> tuple[type[Exception], ...]:
    """What a backend raises when its database is busy, unreachable or refuses a statement
    (sqlite3's, :class:`StoreUnreachable`, and psycopg's once a PostgreSQL store imported
    it)."""
    psycopg = sys.modules.get("psycopg")
    known = (sqlite3.Error, StoreUnreachable)
    return known if psycopg is None else (*known, psycopg.Error)


def store_outages() -> tuple[type[Exception], ...]:
    """What a backend raises when its database cannot be reached or is busy right now (not a
    statement it refuses): a run that meets one is given back and driven again once the
    store answers."""
    psycopg = sys.modules.get("psycopg")
    known = (sqlite3.OperationalError, StoreUnreachable)
    return known if psycopg is None else (*known, psycopg.OperationalError)


def refuse_shared(url: str | None, what: str) -> None:
    """Refuse ``what`` (an operation on the store file in ``.tmops/``) for a store elsewhere
    (PostgreSQL, or a ``sqlite:///`` file), saying what to do instead.

    :raises WorkspaceError: ``url`` names a store.
    """
    if is_shared(url):
        raise WorkspaceError(
            f"{what} works on a SQLite store, and this project's store is the PostgreSQL "
            "database of store.url",
            hint="back the database up with pg_dump and restore it with pg_restore (see "
            'docs/operations.md, "PostgreSQL"); the project\'s files and branches are in git',
        )
    if url is not None:
        raise WorkspaceError(
            f"{what} works on the store in .tmops/, and store.url names a SQLite file elsewhere",
            hint="unset store.url (move the file to .tmops/tmops.db), or copy the file with "
            "`sqlite3 FILE '.backup COPY'`",
        )


def sqlite_path(path: Path, url: str | None) -> Path:
    """The SQLite file of the store: the one a ``sqlite:///`` URL names, else ``path``."""
    return Path(url.removeprefix("sqlite://")) if url is not None else path


def open_store(path: Path, *, url: str | None = None, workspace: str = "default") -> Store:
    """The store ``url`` names (``store.url``), else the SQLite file at ``path``; created
    (0600, migrated) if it is not there yet. ``workspace`` (``server.workspace_id``): written
    into every row; the part of a PostgreSQL store that is this workspace's (a SQLite file is
    one project's). A store of another workspace is refused (:class:`WorkspaceError`)."""
    if is_shared(url):
        from tmops_core.store.postgres import PostgresStore

        assert url is not None  # noqa: S101 - is_shared said so
        return PostgresStore(url, workspace=workspace)
    return SQLiteStore(sqlite_path(path, url), workspace=workspace)


def open_existing_store(
    path: Path, *, url: str | None = None, workspace: str = "default"
) -> Store | None:
    """The store if there is one (readers must never create a file); a PostgreSQL store is a
    database someone made, so it is always there (connected, migrated)."""
    if is_shared(url):
        return open_store(path, url=url, workspace=workspace)
    return SQLiteStore.open_existing(sqlite_path(path, url), workspace=workspace)
