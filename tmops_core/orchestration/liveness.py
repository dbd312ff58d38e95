"""Whether an engine serves a project: an engine's identity and lease in the store, and the
lock file ``.tmops/engine.lock`` (only a fast path: the lease decides).

Kept apart from :mod:`tmops_core.orchestration.daemon` so that reading a status (which asks
whether a run's engine is alive) never imports the engine itself. It never signals a process
and never writes the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from tmops_core.agents.processes import boot_clock, boot_id, process_alive
from tmops_core.lifecycle import EngineState
from tmops_core.store import EngineRecord, RunRecord, Store
from tmops_core.workspace.layout import Layout, lstat_checked, open_file

__all__ = [
    "ENGINE_LOCK",
    "HEARTBEAT_S",
    "LEASE_S",
    "engine_alive",
    "engine_lock",
    "engine_running",
    "open_lock",
    "run_engine_alive",
    "serving_engine_alive",
    "serving_engine_hung",
    "try_lock",
]

ENGINE_LOCK = "engine.lock"
#: How often the serving engine renews its lease, and how far ahead.
HEARTBEAT_S = 1.0
LEASE_S = 5.0


# -- identity and liveness -----------------------------------------------------------------------


def engine_alive(engine: EngineRecord) -> bool:
    """Whether ``engine`` still serves: its row is serving, its lease has not expired, and, of
    this boot, its process runs with the recorded start time (a zombie or a reused pid does
    not count).

    An engine of another boot id is of another machine sharing a PostgreSQL store (or of an
    earlier boot of this one, whose lease has long run out): its process cannot be seen from
    here, so its lease by the database's clock alone decides (``lease_left_s``; none: dead).
    """
    if engine.state != EngineState.SERVING:
        return False
    if engine.boot_id != boot_id():
        return engine.lease_left_s is not None and engine.lease_left_s > 0
    return boot_clock() <= engine.lease_until and process_alive(engine.pid, engine.start_time)


def run_engine_alive(store: Store, run: RunRecord) -> bool:
    """Whether the engine that owns ``run`` is alive (False when no engine owns it)."""
    engine = store.engine(run.engine_id) if run.engine_id is not None else None
    return engine is not None and engine_alive(engine)


def serving_engine_alive(store: Store) -> bool:
    """Whether the engine that holds the project's lease is alive."""
    engine = store.serving_engine()
    return engine is not None and engine_alive(engine)


def serving_engine_hung(store: Store) -> bool:
    """Whether the engine that holds the lease runs but let its lease expire (stopped with
    SIGSTOP, or stuck): dead for tmops, though it may still hold the lock file."""
    engine = store.serving_engine()
    return (
        engine is not None
        and engine.boot_id == boot_id()
        and boot_clock() > engine.lease_until
        and process_alive(engine.pid, engine.start_time)
    )


# -- the lock file: the fast path -----------------------------------------------------------------


def open_lock(layout: Layout) -> int:
    # never through a link, in any folder on the way
    return open_file(layout.tmops_dir / ENGINE_LOCK, os.O_RDWR | os.O_CREAT)


def try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def engine_lock(layout: Layout, *, inherited: int | None = None) -> Iterator[bool]:
    """Hold the engine lock for the block (True), or say another process holds it (False).

    ``inherited`` is a descriptor of the lock file already locked by the process that started
    this one (:func:`spawn_engine`): the lock was never free in between.
    """
    if inherited is not None:
        os.set_inheritable(inherited, False)  # the agents must not hold it
        fd = inherited
    else:
        fd = open_lock(layout)
    try:
        yield try_lock(fd)  # a no-op on the inherited lock, which this process holds already
    finally:
        os.close(fd)


def engine_running(layout: Layout, store: Store | None = None) -> bool:
    """Whether an engine serves this project: a process holds the engine lock or, with
    ``store``, the store names a live engine (its lock file may have been removed)."""
    if lstat_checked(layout.tmops_dir / ENGINE_LOCK) is not None:
        with engine_lock(layout) as acquired:
            if not acquired:
                return True
    return store is not None and serving_engine_alive(store)
