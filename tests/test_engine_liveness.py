"""An engine's identity and lease: when it counts as alive, and what the store's lease allows.

Real processes (this one, a child left as a zombie, a child that exited and was reaped) and a
real store of each backend: SQLite in ``tmp_path``, and a PostgreSQL database. The engines
themselves run in ``test_engine_takeover.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.pg_support import integrity_errors
from tests.takeover_support import is_zombie, wait_until
from tmops_core.agents.processes import boot_clock, boot_id, process_start_time
from tmops_core.lifecycle import AttemptState, EngineState
from tmops_core.orchestration.daemon import engine_alive
from tmops_core.store import (
    EngineRecord,
    FeatureRecord,
    LeaseHeld,
    LostOwnership,
    RunRecord,
    Store,
    open_store,
)

NOW = "2026-01-01T00:00:00Z"


def me(**changes: object) -> EngineRecord:
    """A serving engine record naming this process, its lease 60 s ahead."""
    start = process_start_time(os.getpid())
    assert start is not None
    record = EngineRecord(
        id=1, pid=os.getpid(), start_time=start, boot_id=boot_id(), state="serving",
        lease_until=boot_clock() + 60, started_at=NOW, heartbeat_at=NOW,
    )  # fmt: skip
    return attrs.evolve(record, **changes)


# -- engine_alive -------------------------------------------------------------------------------


def test_a_serving_engine_whose_process_runs_is_alive() -> None:
    assert engine_alive(me())


def test_a_pid_now_used_by_another_process_is_a_dead_engine() -> None:
    # this process's pid with another start time: the recorded engine is gone, its pid reused
    assert not engine_alive(me(start_time=me().start_time - 1))


def test_an_engine_of_another_boot_is_dead() -> None:
    assert not engine_alive(me(boot_id="00000000-0000-0000-0000-000000000000"))


def test_an_engine_of_another_machine_lives_while_its_lease_by_the_database_clock_runs() -> None:
    other = "11111111-1111-1111-1111-111111111111"
    assert engine_alive(me(boot_id=other, pid=1, start_time=1, lease_left_s=4.0))
    assert not engine_alive(me(boot_id=other, lease_left_s=-0.001))
    assert not engine_alive(me(boot_id=other, lease_left_s=4.0, state="taken_over"))


def test_an_engine_whose_lease_expired_is_dead_though_its_process_runs() -> None:
    assert not engine_alive(me(lease_until=boot_clock() - 0.001))


@pytest.mark.parametrize("state", [EngineState.STOPPED, EngineState.TAKEN_OVER])
def test_an_engine_that_gave_up_its_lease_is_dead(state: EngineState) -> None:
    assert not engine_alive(me(state=state.value))


def test_an_engine_that_is_a_zombie_is_dead() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        start = process_start_time(child.pid)
        assert start is not None
        record = me(pid=child.pid, start_time=start)
        assert engine_alive(record)  # while it runs
        assert child.stdin is not None
        child.stdin.close()  # it exits; never reaped (no wait, no poll), it stays a zombie
        wait_until(lambda: is_zombie(child.pid), timeout=10, what="the child to be a zombie")
        assert process_start_time(child.pid) == start  # same pid, same start time: only Z
        assert not engine_alive(record)
    finally:
        child.wait()


# -- the lease in the store ----------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, store_url: str) -> Iterator[Store]:
    store = open_store(tmp_path / "tmops.db", url=store_url)
    store.record_init(
        FeatureRecord("slug", "feature/slug", "/w", "worktree", "initial", "initialized", NOW,
                      NOW),
        RunRecord("slug", "initial", "initialized", NOW, NOW),
    )  # fmt: skip
    store.queue_run("slug", "initial", run_id="r1", provider="scripted", now=NOW)
    yield store
    store.close()


def acquire(store: Store, record: EngineRecord) -> tuple[EngineRecord, list[EngineRecord]]:
    return store.acquire_lease(
        pid=record.pid, start_time=record.start_time, boot_id=record.boot_id,
        lease_until=record.lease_until, now=NOW, alive=engine_alive,
    )  # fmt: skip


def exited_child() -> tuple[int, int]:
    """The pid and start time of a process that ran and was reaped: gone for good."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start_time(child.pid)
    child.wait()
    assert start is not None
    return child.pid, start


def test_the_store_schema_has_the_engines_table(store: Store) -> None:
    with store.transaction() as db:
        versions = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    assert 3 in versions  # 0003_engine_lease.sql
    insert = (
        "INSERT INTO engines (pid, start_time, boot_id, state, lease_until, started_at, "
        "heartbeat_at, workspace_id) VALUES (1, 1, 'b', 'serving', 0, ?, ?, 'default')"
    )
    with store.transaction() as db:
        db.execute(insert, (NOW, NOW))
    with pytest.raises(integrity_errors()), store.transaction() as db:
        db.execute(insert, (NOW, NOW))  # at most one serving engine, by construction


def test_a_live_engine_keeps_the_lease(store: Store) -> None:
    first, taken = acquire(store, me())
    assert (first.state, taken) == ("serving", [])
    with pytest.raises(LeaseHeld) as held:
        acquire(store, me())
    assert held.value.holder == first
    assert store.serving_engine() == first


def test_a_dead_engines_lease_is_taken_over(store: Store) -> None:
    pid, start = exited_child()
    dead, _ = acquire(store, me(pid=pid, start_time=start))
    fencing = store.admit_run("slug", "initial", engine_id=dead.id, engine_pid=pid, now=NOW)

    new, taken = acquire(store, me())

    assert [(t.id, t.state) for t in taken] == [(dead.id, "taken_over")]
    assert store.serving_engine() == new
    assert not store.renew_lease(dead.id, lease_until=boot_clock() + 60, now=NOW)
    with pytest.raises(LostOwnership):  # at once, its fencing token no longer owns the run
        store.end_run("slug", "initial", fencing, status="failed", now=NOW)
    assert store.requeue("slug", "initial", now=NOW)
    with pytest.raises(LostOwnership):  # and it may admit nothing any more
        store.admit_run("slug", "initial", engine_id=dead.id, engine_pid=pid, now=NOW)
    assert store.admit_run("slug", "initial", engine_id=new.id, engine_pid=os.getpid(), now=NOW)


def test_a_requeued_run_keeps_its_place_in_the_queue(store: Store) -> None:
    engine, _ = acquire(store, me())
    seq = store.run("slug", "initial").queue_seq  # type: ignore[union-attr]
    store.admit_run("slug", "initial", engine_id=engine.id, engine_pid=os.getpid(), now=NOW)
    assert store.run("slug", "initial").engine_id == engine.id  # type: ignore[union-attr]
    assert store.requeue("slug", "initial", now=NOW)
    run = store.run("slug", "initial")
    assert run is not None
    assert (run.status, run.queue_seq, run.engine_id) == ("queued", seq, None)
    assert not store.requeue("slug", "initial", now=NOW)  # only a running run goes back


def test_a_released_lease_is_free(store: Store) -> None:
    engine, _ = acquire(store, me())
    assert store.renew_lease(engine.id, lease_until=boot_clock() + 60, now=NOW)
    store.release_lease(engine.id, now=NOW)
    assert store.serving_engine() is None
    assert store.engine(engine.id).state == "stopped"  # type: ignore[union-attr]
    assert not store.renew_lease(engine.id, lease_until=boot_clock() + 60, now=NOW)
    _, taken = acquire(store, me())
    assert taken == []


def test_an_engine_on_another_machine_keeps_the_lease_until_it_lapses(store: Store) -> None:
    """The lease by the database's clock: a live engine of another machine (its boot id not
    ours, its process out of sight) holds the lease; renewed, it keeps it; lapsed, it is
    taken over."""
    remote = me(boot_id="22222222-2222-2222-2222-222222222222", pid=1, start_time=1)
    first, _ = store.acquire_lease(
        pid=1, start_time=1, boot_id=remote.boot_id, lease_until=0, now=NOW,
        alive=engine_alive, lease_s=60,
    )  # fmt: skip
    with pytest.raises(LeaseHeld):
        acquire(store, me())
    assert store.renew_lease(first.id, lease_until=0, now=NOW, lease_s=-1)  # it lapses
    lapsed = store.serving_engine()
    assert lapsed is not None
    assert lapsed.lease_left_s is not None
    assert lapsed.lease_left_s < 0
    new, taken = acquire(store, me())
    assert [t.id for t in taken] == [first.id]
    assert store.serving_engine() == new


def test_close_attempts_ends_only_live_attempts(store: Store) -> None:
    engine, _ = acquire(store, me())
    fencing = store.admit_run(
        "slug", "initial", engine_id=engine.id, engine_pid=os.getpid(), now=NOW
    )
    ids = [
        store.start_attempt("slug", "initial", fencing, phase=phase, attempt=1,
                            provider="scripted", start_commit=None, now=NOW)
        for phase in ("orchestrator", "tester")
    ]  # fmt: skip
    store.finish_attempt(
        ids[0], "slug", "initial", fencing, state="completed", outcome="succeeded",
        message="ok", session_id=None, cost_usd=None, turns=None, now=NOW,
    )  # fmt: skip
    closed = store.close_attempts(
        ids, state=AttemptState.INTERRUPTED, outcome="interrupted", message="stopped", now=NOW
    )
    assert closed == 1
    assert [a.state for a in store.attempts("slug", "initial")] == ["completed", "interrupted"]
