"""tmops' durable state: the :class:`Store` protocol, its records, and the SQLite backend.

Callers depend on the protocol and the records; :func:`open_store` picks the backend (SQLite,
the embedded default, in ``.tmops/tmops.db``).
"""

from __future__ import annotations

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
    since_reset,
)
from tmops_core.store.sqlite import SQLiteStore
from tmops_core.store.waits import held_providers

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
    "held_providers",
    "open_existing_store",
    "open_store",
    "since_reset",
]


def open_store(path: Path) -> Store:
    """The store at ``path``, created (0600, migrated) if it is not there yet."""
    return SQLiteStore(path)


def open_existing_store(path: Path) -> Store | None:
    """The store at ``path`` if there is one (readers must never create it)."""
    return SQLiteStore.open_existing(path)
