"""The Store protocol and its SQLite backend: migrations as files, one protocol for callers."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path

from tmops_core.store import SQLiteStore, Store, open_existing_store, open_store
from tmops_core.store.protocol import Store as ProtocolStore
from tmops_core.store.sqlite import migrations


def test_the_sqlite_store_satisfies_the_protocol(tmp_path: Path) -> None:
    store = open_store(tmp_path / "tmops.db")
    try:
        assert isinstance(store, SQLiteStore)
        assert isinstance(store, Store)
    finally:
        store.close()


def test_every_public_method_of_the_backend_is_in_the_protocol() -> None:
    public = {
        name for name, _ in inspect.getmembers(SQLiteStore, inspect.isfunction)
        if not name.startswith("_")
    }  # fmt: skip
    declared = {name for name in dir(ProtocolStore) if not name.startswith("_")}
    assert public - {"open_existing"} <= declared


def test_migrations_are_numbered_files_applied_in_order(tmp_path: Path) -> None:
    found = migrations()
    versions = [version for version, _, _ in found]
    assert versions == list(range(1, len(found) + 1))
    assert all(name.endswith(".sql") and statements for _, name, statements in found)
    store = open_store(tmp_path / "tmops.db")
    try:
        assert store.schema_version == len(found)
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "tmops.db") as db:
        done = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert done == versions


def test_reopening_migrates_nothing_twice_and_a_reader_never_creates(tmp_path: Path) -> None:
    assert open_existing_store(tmp_path / "tmops.db") is None
    assert not (tmp_path / "tmops.db").exists()
    for _ in range(2):
        store = open_store(tmp_path / "tmops.db")
        store.close()
    assert (tmp_path / "tmops.db").stat().st_mode & 0o777 == 0o600
