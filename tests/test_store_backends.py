"""The Store protocol, the same tests against each backend: SQLite (a file in ``tmp_path``) and
PostgreSQL (a database of the session's throwaway cluster, tests/pg_support.py).

Runs, attempts and fencing; a person's controls; usage waits; the audit trail; the metrics'
tallies. Each test drives the store's public methods only, as the engine and the service do.
"""

from __future__ import annotations

import inspect
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_support import database_errors, integrity_errors
from tests.test_secrets import SHAPES
from tmops_core.lifecycle import AttemptState, IllegalTransition, PauseReason, RunState
from tmops_core.store import (
    FeatureRecord,
    LostOwnership,
    RunRecord,
    SQLiteStore,
    Store,
    open_existing_store,
    open_store,
)
from tmops_core.store.postgres import PostgresStore, pg_migrations
from tmops_core.store.protocol import Store as ProtocolStore
from tmops_core.store.sqlite import migrations
from tmops_hookspecs import FeatureError, WorkspaceError

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T01:00:00Z"


@pytest.fixture
def store(tmp_path: Path, store_url: str) -> Iterator[Store]:
    opened = open_store(tmp_path / "unused.db", url=store_url)
    for feature in ("slug", "other"):
        opened.record_init(
            FeatureRecord(feature, f"feature/{feature}", "/w", "worktree", "initial",
                          "initialized", NOW, NOW),
            RunRecord(feature, "initial", "initialized", NOW, NOW),
        )  # fmt: skip
    yield opened
    opened.close()


def running(store: Store, feature: str = "slug") -> int:
    """Queue and admit the run of ``feature`` for a serving engine; its fencing token."""
    store.queue_run(feature, "initial", run_id=f"r-{feature}", provider="scripted", now=NOW)
    engine = store.serving_engine()
    if engine is None:
        engine, _ = store.acquire_lease(
            pid=1, start_time=1, boot_id="b", lease_until=0, now=NOW, alive=lambda e: False
        )
    return store.admit_run(feature, "initial", engine_id=engine.id, engine_pid=1, now=NOW)


# -- the protocol and the schema -------------------------------------------------------------------


def test_each_backend_satisfies_the_protocol_and_is_migrated_to_the_head(store: Store) -> None:
    assert isinstance(store, ProtocolStore)
    assert store.schema_version == len(migrations()) == len(pg_migrations())


def test_the_postgresql_backend_declares_only_protocol_methods() -> None:
    public = {
        name for name, _ in inspect.getmembers(PostgresStore, inspect.isfunction)
        if not name.startswith("_")
    }  # fmt: skip
    assert public <= {name for name in dir(ProtocolStore) if not name.startswith("_")}


def test_both_backends_have_the_same_migrations_by_number_and_name() -> None:
    assert [(v, n) for v, n, _ in migrations()] == [(v, n) for v, n, _ in pg_migrations()]


def test_reopening_a_store_migrates_nothing_twice(tmp_path: Path, store_url: str) -> None:
    for _ in range(2):
        open_store(tmp_path / "unused.db", url=store_url).close()
    again = open_existing_store(tmp_path / "unused.db", url=store_url)
    assert again is not None
    with again.transaction() as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations")]
    again.close()
    assert sorted(versions) == list(range(1, len(migrations()) + 1))


# -- runs, attempts and fencing --------------------------------------------------------------------


def test_a_run_goes_queued_running_completed_with_its_attempts(store: Store) -> None:
    fencing = running(store)
    attempt = store.start_attempt("slug", "initial", fencing, phase="orchestrator", attempt=1,
                                  provider="scripted", start_commit="abc", now=NOW)  # fmt: skip
    store.attempt_process(attempt, "slug", "initial", fencing, pid=42, start_time=7, mark="m")
    store.attempt_session(attempt, "slug", "initial", fencing, "session-1")
    store.finish_attempt(
        attempt, "slug", "initial", fencing, state="completed", outcome="succeeded",
        message="done", session_id=None, cost_usd=0.25, turns=3, now=LATER, duration_s=1.5,
        next_phase="tester", branch_head="def", event=("phase.done", '{"n": 1}'),
        tokens=(10, 20),
    )  # fmt: skip
    store.record_adoption("slug", "initial", fencing, phase="tester", now=LATER)
    store.end_run("slug", "initial", fencing, status=RunState.COMPLETED, now=LATER)
    run = store.run("slug", "initial")
    assert run is not None
    assert (run.status, run.cost_usd, run.branch_head, run.current_phase) == (
        "completed", 0.25, "def", "tester",
    )  # fmt: skip
    first, adopted = store.attempts("slug", "initial")
    assert (first.id, first.pid, first.session_id, first.input_tokens, first.turns) == (
        attempt, 42, "session-1", 10, 3,
    )  # fmt: skip
    assert (adopted.phase, adopted.outcome, adopted.attempt) == ("tester", "adopted", 0)
    assert [e["event_type"] for e in store.events_for("slug")] == ["phase.done"]
    assert store.feature("slug").status == "completed"  # type: ignore[union-attr]
    assert [f.name for f in store.features()] == ["other", "slug"]


def test_every_fenced_write_of_a_stale_token_is_refused(store: Store) -> None:
    stale = running(store)
    assert store.requeue("slug", "initial", now=NOW)  # a new token: the old owner is stale
    attempt = 1
    refused = [
        lambda: store.start_attempt("slug", "initial", stale, phase="tester", attempt=1,
                                    provider="scripted", start_commit=None, now=NOW),
        lambda: store.attempt_session(attempt, "slug", "initial", stale, "s"),
        lambda: store.record_adoption("slug", "initial", stale, phase="tester", now=NOW),
        lambda: store.end_run("slug", "initial", stale, status="failed", now=NOW),
        lambda: store.set_branch_head("slug", "initial", stale, "abc"),
        lambda: store.add_event("slug", "initial", "x", "{}", NOW, fencing=stale),
    ]  # fmt: skip
    for write in refused:
        with pytest.raises(LostOwnership):
            write()
    assert store.attempts("slug", "initial") == []
    assert store.events_for("slug") == []
    assert store.run("slug", "initial").status == "queued"  # type: ignore[union-attr]


def test_the_queue_is_first_in_first_out_and_admission_needs_the_lease(store: Store) -> None:
    store.queue_run("other", "initial", run_id="r1", provider=None, now=NOW,
                    phase_providers={"tester": "codex"})  # fmt: skip
    store.queue_run("slug", "initial", run_id="r2", provider="scripted", now=NOW)
    queued = store.queued_runs()
    assert [r.feature for r in queued] == ["other", "slug"]
    assert queued[0].phase_overrides == {"tester": "codex"}
    with pytest.raises(LostOwnership):
        store.admit_run("slug", "initial", engine_id=999, engine_pid=1, now=NOW)
    assert store.fail_queued_run("slug", "initial", error="no engine", now=NOW)
    assert not store.fail_queued_run("slug", "initial", error="again", now=NOW)
    assert [r.feature for r in store.runs_in_state("failed", "queued")] == ["other", "slug"]


# -- a person's controls -------------------------------------------------------------------------


def test_cancel_ends_the_run_and_its_live_attempts_and_fences_the_engine(store: Store) -> None:
    fencing = running(store)
    store.start_attempt("slug", "initial", fencing, phase="orchestrator", attempt=1,
                        provider="scripted", start_commit=None, now=NOW)  # fmt: skip
    stopped = store.cancel_run("slug", "initial", now=LATER)
    assert [a.state for a in stopped] == ["starting"]
    assert [a.state for a in store.attempts("slug", "initial")] == ["cancelled"]
    assert store.live_attempts() == []
    with pytest.raises(LostOwnership):
        store.end_run("slug", "initial", fencing, status="failed", now=LATER)
    with pytest.raises(IllegalTransition):  # the lifecycle's table holds on every backend
        store.stop_run("slug", "initial", state=RunState.COMPLETED, pause_reason=None,
                       attempts=AttemptState.CANCELLED, message="x", now=LATER)  # fmt: skip


def test_pause_reset_and_approve(store: Store) -> None:
    store.queue_run("slug", "initial", run_id="r", provider=None, now=NOW)
    assert store.request_pause("slug", "initial", now=NOW) is RunState.PAUSED
    assert store.run("slug", "initial").pause_reason == "requested"  # type: ignore[union-attr]
    fencing = running(store, "other")
    assert store.request_pause("other", "initial", now=NOW) is RunState.RUNNING
    assert store.pause_requested("other", "initial")
    with pytest.raises(FeatureError):
        store.reset_phases("other", "initial", ["tester"], message="m", now=NOW)
    assert store.approve("slug", "initial", "tester", now=NOW)
    assert not store.approve("slug", "initial", "tester", now=NOW)  # approved already
    assert store.approved("slug", "initial") == {"tester"}
    store.reset_phases("slug", "initial", ["tester", "verifier"], message="again", now=LATER,
                       branch_head="h", pause=PauseReason.REQUESTED)  # fmt: skip
    assert store.approved("slug", "initial") == frozenset()
    assert [(a.phase, a.state) for a in store.attempts("slug", "initial")] == [
        ("tester", "reset"), ("verifier", "reset"),
    ]  # fmt: skip
    assert store.run("slug", "initial").current_phase == "tester"  # type: ignore[union-attr]
    assert fencing > 0


def test_a_usage_limited_run_is_queued_again_only_when_its_time_has_come(store: Store) -> None:
    fencing = running(store)
    store.start_attempt("slug", "initial", fencing, phase="tester", attempt=1,
                        provider="codex", start_commit=None, now=NOW)  # fmt: skip
    store.end_run("slug", "initial", fencing, status=RunState.PAUSED, now=NOW,
                  pause_reason=PauseReason.USAGE_LIMITED, resume_at=LATER)  # fmt: skip
    waits = store.usage_limited_runs()
    assert [(r.feature, r.resume_at, r.limited_provider) for r in waits] == [
        ("slug", LATER, "codex")
    ]
    assert not store.resume_due("slug", "initial", now=NOW)
    assert store.resume_due("slug", "initial", now=LATER)
    assert store.run("slug", "initial").status == "queued"  # type: ignore[union-attr]


# -- the audit trail and the tallies ---------------------------------------------------------------


def test_the_trail_is_append_only_and_read_by_feature_time_and_id(store: Store) -> None:
    store.add_event("slug", "initial", "a", json.dumps({"ms": 5}), NOW)
    store.add_event("other", "initial", "a", json.dumps({"ms": 7.5}), LATER)
    store.add_event(None, None, "b", "not json", LATER)
    everything = store.audit_trail()
    assert [(e["feature"], e["event_type"]) for e in everything] == [
        ("slug", "a"), ("other", "a"), (None, "b"),
    ]  # fmt: skip
    assert [e["feature"] for e in store.audit_trail(since=LATER)] == ["other", None]
    assert [e["id"] for e in store.audit_trail(after_id=everything[0]["id"])] == [
        everything[1]["id"], everything[2]["id"],
    ]  # fmt: skip
    assert store.event_numbers("a", "ms") == [(everything[0]["id"], 5.0),
                                              (everything[1]["id"], 7.5)]  # fmt: skip
    assert store.last_event_id() == everything[2]["id"]
    for statement in ("UPDATE events SET event_type = 'x'", "DELETE FROM events"):
        with pytest.raises(database_errors(), match="append-only"), store.transaction() as db:
            db.execute(statement)
    assert len(store.audit_trail()) == 3


def test_the_tallies_count_runs_attempts_and_open_runs(store: Store) -> None:
    fencing = running(store)
    attempt = store.start_attempt("slug", "initial", fencing, phase="tester", attempt=1,
                                  provider="scripted", start_commit=None, now=NOW)  # fmt: skip
    store.finish_attempt(attempt, "slug", "initial", fencing, state="failed", outcome="error",
                         message="boom", session_id=None, cost_usd=0.5, turns=1, now=NOW,
                         duration_s=3.0)  # fmt: skip
    store.add_event("slug", "initial", "e", "{}", LATER)
    assert sorted((t.status, t.count) for t in store.run_tallies()) == [
        ("initialized", 1), ("running", 1),
    ]  # fmt: skip
    (tally,) = store.attempt_tallies([1.0, 5.0])
    assert (tally.phase, tally.state, tally.count, tally.cost_usd, tally.at_most) == (
        "tester", "failed", 1, 0.5, (0, 1),
    )  # fmt: skip
    (open_run,) = store.open_runs(["running"])
    assert (open_run.feature, open_run.cost_usd, open_run.last_event_at) == ("slug", 0.5, LATER)


def test_a_broken_constraint_raises_the_backends_integrity_error(store: Store) -> None:
    with pytest.raises(integrity_errors()), store.transaction() as db:
        db.execute(
            "INSERT INTO runs (feature, run, status, created_at, updated_at, workspace_id) "
            "VALUES ('slug', 'initial', 'x', ?, ?, 'default')",
            (NOW, NOW),
        )


def test_no_secret_reaches_the_database_of_either_backend(store: Store) -> None:
    token = SHAPES[2]  # a token's shape, as test_secrets.py has them
    store.queue_run("slug", "initial", run_id="r", provider="p", now=NOW)
    store.add_event("slug", "initial", "x", json.dumps({"token": "tok-1", "m": token}), NOW)
    url = "https://u:" + "pw-2@h"  # credentials in a URL
    store.fail_queued_run("slug", "initial", error=f"{url} said {token}", now=NOW)
    with store.transaction() as db:
        stored = [str(value) for table in ("events", "runs", "features")
                  for row in db.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - fixed names
                  for value in row]  # fmt: skip
    assert "https://***@h said" in " ".join(stored)
    for secret in ("tok-1", "pw-2", token):
        assert not [value for value in stored if secret in value]


# -- the workspace in every row --------------------------------------------------------------------

#: the tables no workspace owns: the schema's own bookkeeping, and SQLite's AUTOINCREMENT counters
UNOWNED_TABLES = {"schema_migrations", "sqlite_sequence"}


def tables(store: Store) -> list[str]:
    """Every table of the store's schema, as the database lists it (not as this test knows
    them: a table added later is in the list)."""
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if isinstance(store, SQLiteStore)
        else "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema()"
    )
    with store.transaction() as db:
        names = {str(row[0]) for row in db.execute(query).fetchall()}
    return sorted(names - UNOWNED_TABLES)


def workspaces_of_rows(store: Store, table: str) -> dict[str, int]:
    """How many rows of ``table`` each workspace has (an error if it has no such column)."""
    with store.transaction() as db:
        rows = db.execute(
            f"SELECT workspace_id, COUNT(*) FROM {table} GROUP BY workspace_id"  # noqa: S608 - a name the database listed
        ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


def test_every_row_of_every_table_carries_the_workspace(tmp_path: Path, store_url: str) -> None:
    store = open_store(tmp_path / "unused.db", url=store_url, workspace="team_a")
    try:
        store.record_init(
            FeatureRecord("slug", "feature/slug", "/w", "worktree", "initial", "initialized",
                          NOW, NOW),
            RunRecord("slug", "initial", "initialized", NOW, NOW),
        )  # fmt: skip
        fencing = running(store)  # an engine and its lease
        attempt = store.start_attempt("slug", "initial", fencing, phase="orchestrator", attempt=1,
                                      provider="scripted", start_commit=None, now=NOW)  # fmt: skip
        store.attempt_process(attempt, "slug", "initial", fencing, pid=4, start_time=2, mark=None)
        store.finish_attempt(
            attempt, "slug", "initial", fencing, state="completed", outcome="succeeded",
            message="done", session_id="s", cost_usd=0.1, turns=1, now=NOW, next_phase="tester",
            event=("phase.done", "{}"),
        )  # fmt: skip
        store.record_adoption("slug", "initial", fencing, phase="tester", now=NOW,
                              event=("phase.adopted", "{}"))  # fmt: skip
        store.add_event("slug", "initial", "run.note", "{}", NOW, fencing=fencing)
        store.add_event(None, None, "engine.note", "{}", NOW)
        store.approve("slug", "initial", "verifier", now=NOW)
        store.end_run("slug", "initial", fencing, status=RunState.PAUSED, now=LATER,
                      pause_reason=PauseReason.REQUESTED)  # fmt: skip
        store.reset_phases("slug", "initial", ["implementer"], message="again", now=LATER)
        found = {table: workspaces_of_rows(store, table) for table in tables(store)}
        trail = store.audit_trail()
    finally:
        store.close()
    assert {"features", "runs", "attempts", "events", "approvals", "engines"} <= set(found)
    for table, owners in found.items():
        assert list(owners) == ["team_a"], f"{table}: rows of {owners}, not all of team_a"
    assert {row["workspace_id"] for row in trail} == {"team_a"}


def store_at_0009(store_url: str, workspace: str) -> None:
    """A store as tmops left it before the workspace column: migrations 0001-0009 applied, a row
    in each table."""
    rows = [
        "INSERT INTO features VALUES ('slug', 'feature/slug', '/w', 'worktree', 'initial', "
        "'running', 'T', 'T')",
        "INSERT INTO engines (pid, start_time, boot_id, state, lease_until, started_at, "
        "heartbeat_at) VALUES (1, 1, 'b', 'serving', 0, 'T', 'T')",
        "INSERT INTO runs (feature, run, status, created_at, updated_at, engine_id, fencing) "
        "VALUES ('slug', 'initial', 'running', 'T', 'T', 1, 1)",
        "INSERT INTO attempts (feature, run, phase, attempt, state, provider, fencing, "
        "started_at) VALUES ('slug', 'initial', 'tester', 1, 'running', 'scripted', 1, 'T')",
        "INSERT INTO approvals VALUES ('slug', 'initial', 'tester', 'T')",
        "INSERT INTO events (feature, run, event_type, timestamp, data) "
        "VALUES ('slug', 'initial', 'e', 'T', '{}')",
    ]
    if store_url.startswith("sqlite://"):
        db = sqlite3.connect(store_url.removeprefix("sqlite://"))
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
        for version, _name, statements in migrations()[:9]:
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_migrations VALUES (?)", (version,))
        for row in rows:
            db.execute(row)
        db.commit()
        db.close()
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(store_url, autocommit=True) as pg:
        schema = sql.Identifier(f"tmops_{workspace}")
        pg.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        pg.execute(sql.SQL("SET search_path TO {}").format(schema))
        pg.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
        for version, _name, text in pg_migrations()[:9]:
            pg.execute(text)  # a file's several statements: no parameters, sent whole
            pg.execute("INSERT INTO schema_migrations VALUES (%s)", (version,))
        for row in rows:
            pg.execute(row)


def test_a_store_of_0009_is_upgraded_with_its_rows_stamped(tmp_path: Path, store_url: str) -> None:
    assert [version for version, _, _ in migrations()[:9]] == list(range(1, 10))
    store_at_0009(store_url, "team_a")
    store = open_existing_store(tmp_path / "unused.db", url=store_url, workspace="team_a")
    assert store is not None
    try:
        assert store.schema_version == len(migrations())
        found = {table: workspaces_of_rows(store, table) for table in tables(store)}
        assert store.feature("slug").status == "running"  # type: ignore[union-attr]
        assert [a.phase for a in store.attempts("slug", "initial")] == ["tester"]
        assert store.serving_engine() is not None
        assert store.approved("slug", "initial") == {"tester"}
        (event,) = store.audit_trail()
        assert event["workspace_id"] == "team_a"
        store.add_event("slug", "initial", "after", "{}", NOW)  # a new row: the workspace too
        assert workspaces_of_rows(store, "events") == {"team_a": 2}
        with pytest.raises(database_errors(), match="append-only"), store.transaction() as db:
            db.execute("UPDATE events SET event_type = 'x'")  # the stamp left the trail guarded
    finally:
        store.close()
    for table, owners in found.items():
        assert owners == {"team_a": 1}, f"{table}: {owners}"


def test_a_store_of_another_workspace_is_refused_naming_both(
    tmp_path: Path, store_url: str
) -> None:
    made = open_store(tmp_path / "unused.db", url=store_url, workspace="team_a")
    made.add_event(None, None, "e", "{}", NOW)
    made.close()
    if not store_url.startswith("sqlite://"):  # a schema renamed (or copied) to another's name
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as pg:
            pg.execute("ALTER SCHEMA tmops_team_a RENAME TO tmops_team_b")
    with pytest.raises(WorkspaceError) as refused:
        open_existing_store(tmp_path / "unused.db", url=store_url, workspace="team_b")
    error = refused.value
    assert "made for workspace 'team_a'" in error.message
    assert "server.workspace_id is 'team_b'" in error.message
    assert error.hint is not None
    assert "server.workspace_id" in error.hint
    if store_url.startswith("sqlite://"):
        assert "store.url" in error.hint
        again = open_store(tmp_path / "unused.db", url=store_url, workspace="team_a")
        assert [e["workspace_id"] for e in again.audit_trail()] == ["team_a"]  # untouched
        again.close()
