"""The PostgreSQL store as several machines use it: ``store.url`` chosen and checked in the
config, its password never shown, two connections racing on a fenced change, and a whole run
of the real engine (``tmops start --wait``, the scripted agent) kept in PostgreSQL.

The server is the session's throwaway cluster (tests/pg_support.py); the store tests that hold
for both backends are in test_store_backends.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.config_support import load_error, problem_paths
from tests.engine_support import (
    SHORT_WORKFLOW,
    file_service,
    new_feature,
    scripted_config,
    write_config,
)
from tests.pg_support import PgCluster
from tests.test_start_cli import tmops
from tmops_core.config import load_config
from tmops_core.lifecycle import RunState
from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.store import FeatureRecord, LostOwnership, RunRecord, Store, open_store
from tmops_core.store.postgres import PostgresStore
from tmops_core.surfaces.cli import cli
from tmops_hookspecs import WorkspaceError

NOW = "2026-01-01T00:00:00Z"
HIDDEN = "s3cret-Pa55word"  # a made-up password: no output may show it


def _queued(store: Store, feature: str = "slug") -> None:
    store.record_init(
        FeatureRecord(feature, f"feature/{feature}", "/w", "worktree", "initial", "initialized",
                      NOW, NOW),
        RunRecord(feature, "initial", "initialized", NOW, NOW),
    )  # fmt: skip
    store.queue_run(feature, "initial", run_id="r1", provider="scripted", now=NOW)


# -- store.url in the config --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (f"mysql://me:{HIDDEN}@db/tmops", "must be postgresql://USER@HOST:PORT/DATABASE"),
        (f"me:{HIDDEN}@db/tmops", "got a URL without a scheme"),
        ("sqlite://relative/tmops.db", "names an absolute path"),
        (f"postgresql://me:{HIDDEN}@db:5432", "names its database"),
    ],
)
def test_a_bad_store_url_is_an_error_at_its_path_that_never_quotes_it(
    tmp_path: Path, url: str, said: str
) -> None:
    error = load_error(tmp_path, f"store:\n  url: '{url}'\n")
    assert problem_paths(error) == ["$.store.url"]
    assert said in error.problems[0]
    assert HIDDEN not in str(error)
    assert HIDDEN not in "".join(error.problems)


def test_config_show_hides_a_password_written_in_the_url(tmp_path: Path) -> None:
    config = tmp_path / "tmops.yaml"
    write_config(config, {"store": {"url": f"postgresql://me:{HIDDEN}@db.example:5432/tmops"}})
    assert load_config(config).config.store.url is not None
    shown = CliRunner().invoke(cli, ["--config", str(config), "config", "show"])
    assert shown.exit_code == 0, shown.output
    assert HIDDEN not in shown.output
    assert "postgresql://***@db.example:5432/tmops" in shown.output
    checked = CliRunner().invoke(cli, ["--config", str(config), "config", "check"])
    assert checked.exit_code == 0, checked.output
    assert "store.url holds a password" in checked.output
    assert "PGPASSWORD or ~/.pgpass" in checked.output
    assert HIDDEN not in checked.output


def test_a_store_that_cannot_connect_says_so_without_the_password(pg_url: str) -> None:
    host, _, database = pg_url.removeprefix("postgresql://").partition("@")[2].partition("/")
    wrong = f"postgresql://nobody_here:{HIDDEN}@{host}/{database}"
    with pytest.raises(WorkspaceError) as info:
        PostgresStore(wrong)
    assert "cannot connect to the tmops store postgresql://***@" in info.value.message
    assert HIDDEN not in info.value.message
    assert HIDDEN not in (info.value.hint or "")
    assert info.value.__cause__ is None  # psycopg's error (it may quote the URL) is not chained


# -- fencing across machines ----------------------------------------------------------------------


def test_a_stale_writer_on_another_connection_is_refused_once_the_run_is_taken(
    pg_url: str, tmp_path: Path
) -> None:
    """Two connections, as two machines have: the old owner's fenced change waits for the
    take-over's lock, then reads the new token and is refused; nothing of it is recorded."""
    old_machine = open_store(tmp_path / "unused.db", url=pg_url)
    new_machine = open_store(tmp_path / "unused.db", url=pg_url)
    try:
        _queued(old_machine)
        engine = 7  # no engine row needed: admit checks the lease first, so make one
        with old_machine.transaction() as db:
            db.execute(
                "INSERT INTO engines (id, pid, start_time, boot_id, state, lease_until, "
                "started_at, heartbeat_at, workspace_id) "
                "VALUES (?, 1, 1, 'b', 'serving', 0, ?, ?, 'default')",
                (engine, NOW, NOW),
            )
        stale = old_machine.admit_run("slug", "initial", engine_id=engine, engine_pid=1, now=NOW)
        taking = threading.Event()
        taken = threading.Event()

        def take_over() -> None:  # the new machine requeues the run while holding its row
            with new_machine.transaction() as db:
                db.execute(
                    "SELECT fencing FROM runs WHERE feature = ? AND run = ? FOR UPDATE",
                    ("slug", "initial"),
                )
                taking.set()
                taken.wait(timeout=30)  # the stale writer is blocked on the row meanwhile
                db.execute(
                    "UPDATE runs SET fencing = fencing + 1, status = 'queued', engine_id = NULL "
                    "WHERE feature = ? AND run = ?",
                    ("slug", "initial"),
                )

        thread = threading.Thread(target=take_over)
        thread.start()
        assert taking.wait(timeout=30)
        threading.Timer(0.2, taken.set).start()  # lets the take-over commit while we wait
        with pytest.raises(LostOwnership):
            old_machine.add_event("slug", "initial", "stale.write", "{}", NOW, fencing=stale)
        thread.join(timeout=30)
        assert [e["event_type"] for e in new_machine.audit_trail("slug")] == []
        run = new_machine.run("slug", "initial")
        assert run is not None
        assert (run.status, run.fencing) == ("queued", stale + 1)
    finally:
        old_machine.close()
        new_machine.close()


def test_a_takeover_waits_for_an_admission_in_flight_and_fences_the_run_it_admitted(
    pg_url: str, tmp_path: Path
) -> None:
    """An engine admits a run while another machine takes its lease over: the take-over
    waits for the admission's lock on the engine row, then fences the run it admitted."""
    first = open_store(tmp_path / "unused.db", url=pg_url)
    second = open_store(tmp_path / "unused.db", url=pg_url)
    try:
        _queued(first)
        dead, _ = first.acquire_lease(
            pid=1, start_time=1, boot_id="other-machine", lease_until=0, now=NOW,
            alive=lambda engine: True,
        )  # fmt: skip
        fencing = first.admit_run("slug", "initial", engine_id=dead.id, engine_pid=1, now=NOW)
        new, taken = second.acquire_lease(
            pid=2, start_time=2, boot_id="this-machine", lease_until=0, now=NOW,
            alive=lambda engine: False,
        )  # fmt: skip
        assert [engine.id for engine in taken] == [dead.id]
        with pytest.raises(LostOwnership):
            first.end_run("slug", "initial", fencing, status=RunState.FAILED, now=NOW)
        assert second.serving_engine() == new
    finally:
        first.close()
        second.close()


# -- a whole run kept in PostgreSQL ----------------------------------------------------------------


def _demo_in_postgresql(tmp_path: Path, pg_url: str, *, fault: str = "") -> tuple[Path, Path]:
    """The demo project, its feature initialised, with the store at ``pg_url`` and the
    scripted agent (``fault``) on the short workflow: its root and its config file."""
    data = scripted_config(tmp_path / "state", fault=fault, default_phases=SHORT_WORKFLOW)
    data["store"] = {"url": pg_url}
    root = create_demo_project(tmp_path / "p").path
    config = write_config(tmp_path / "tmops.yaml", data)
    service = file_service(config)
    try:
        new_feature(service, root)
    finally:
        service.close()
    return root, config


def test_a_whole_run_completes_with_its_state_in_postgresql(
    tmp_path: Path, pg_url: str, pg_cluster: PgCluster
) -> None:
    """``tmops start --wait`` with store.url naming PostgreSQL: the spawned engine reads the
    same config, every record is in the database, and no SQLite file is made."""
    root, config = _demo_in_postgresql(tmp_path, pg_url)
    result = tmops("--config", str(config), "start", DEMO_FEATURE, "--workspace", str(root),
                   "--wait")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith(f"{DEMO_FEATURE}: completed")
    assert pg_cluster.password not in result.output
    assert not (root / ".tmops" / "tmops.db").exists()
    store = open_store(root / ".tmops" / "tmops.db", url=pg_url)
    try:
        run = store.run(DEMO_FEATURE, store.feature(DEMO_FEATURE).current_run)  # type: ignore[union-attr]
        assert run is not None
        assert run.status == RunState.COMPLETED
        phases = [(a.phase, a.state) for a in store.attempts(run.feature, run.run)]
        assert phases == [("orchestrator", "completed"), ("tester", "completed")]
        assert any(e["event_type"] == "orchestration.run.queued"
                   for e in store.audit_trail(DEMO_FEATURE))  # fmt: skip
    finally:
        store.close()


# -- workspaces sharing one database ---------------------------------------------------------------


def test_workspaces_sharing_a_database_see_only_their_own_records_and_lease(
    pg_url: str, tmp_path: Path
) -> None:
    team_a = open_store(tmp_path / "unused.db", url=pg_url, workspace="team_a")
    team_b = open_store(tmp_path / "unused.db", url=pg_url, workspace="team-b")
    try:
        _queued(team_a)
        team_a.add_event("slug", "initial", "a.only", "{}", NOW)
        lease = {"pid": 1, "start_time": 1, "boot_id": "b", "lease_until": 0.0, "now": NOW}
        team_a.acquire_lease(**lease, alive=lambda engine: True)  # type: ignore[arg-type]
        assert team_b.features() == []
        assert team_b.queued_runs() == []
        assert team_b.audit_trail() == []
        assert team_b.serving_engine() is None  # a's engine serves a only
        team_b.acquire_lease(**lease, alive=lambda engine: True)  # type: ignore[arg-type]
        _queued(team_b, "slug")  # the same feature name, another workspace's
        assert [r.feature for r in team_a.queued_runs()] == ["slug"]
        assert [e["event_type"] for e in team_a.audit_trail()] == ["a.only"]
        assert team_a.schema_version == team_b.schema_version
    finally:
        team_a.close()
        team_b.close()


def test_a_workspace_id_postgresql_would_cut_is_refused(pg_url: str, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="too long"):
        open_store(tmp_path / "unused.db", url=pg_url, workspace="w" * 60)


# -- what works on the SQLite file only ------------------------------------------------------------


def test_backup_refuses_a_postgresql_store_naming_pg_dump_and_doctor_checks_it(
    tmp_path: Path, pg_url: str
) -> None:
    data = scripted_config(tmp_path / "state")
    data["store"] = {"url": pg_url}
    root = create_demo_project(tmp_path / "p").path
    config = write_config(tmp_path / "tmops.yaml", data)
    runner = CliRunner()
    backup = runner.invoke(cli, ["--config", str(config), "backup", "--workspace", str(root)])
    assert backup.exit_code != 0
    assert "pg_dump" in backup.output
    doctor = runner.invoke(cli, ["--config", str(config), "doctor", "--workspace", str(root)])
    assert "reachable, schema" in doctor.output, doctor.output
    assert not (root / ".tmops" / "tmops.db").exists()


def test_a_connection_the_server_dropped_is_made_anew_between_transactions(
    pg_url: str, tmp_path: Path
) -> None:
    """A restart or failover drops the engine's connection: the transaction it cut fails
    whole, and the next one runs on a new connection."""
    import psycopg

    store = open_store(tmp_path / "unused.db", url=pg_url)
    try:
        _queued(store)
        with store.transaction() as db:
            (pid,) = db.execute("SELECT pg_backend_pid()").fetchone()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):  # the cut one: nothing of it is kept
            store.add_event("slug", "initial", "cut", "{}", NOW)
        store.add_event("slug", "initial", "after", "{}", NOW)
        assert [e["event_type"] for e in store.audit_trail()] == ["after"]
        assert store.run("slug", "initial").status == "queued"  # type: ignore[union-attr]
    finally:
        store.close()


def test_machines_queueing_at_once_give_every_run_its_own_place(
    pg_url: str, tmp_path: Path
) -> None:
    machines = [open_store(tmp_path / "unused.db", url=pg_url) for _ in range(2)]
    names = [[f"m{m}-f{i}" for i in range(15)] for m in range(2)]
    try:
        for machine, features in zip(machines, names, strict=True):
            for feature in features:
                machine.record_init(
                    FeatureRecord(feature, f"feature/{feature}", "/w", "worktree", "initial",
                                  "initialized", NOW, NOW),
                    RunRecord(feature, "initial", "initialized", NOW, NOW),
                )  # fmt: skip
        start = threading.Barrier(2)

        def queue_all(machine: Store, features: list[str]) -> None:
            start.wait(timeout=30)
            for feature in features:
                machine.queue_run(feature, "initial", run_id=feature, provider=None, now=NOW)

        threads = [
            threading.Thread(target=queue_all, args=pair)
            for pair in zip(machines, names, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        places = [run.queue_seq for run in machines[0].queued_runs()]
        assert len(places) == 30
        assert sorted(places) == list(range(1, 31))  # type: ignore[type-var]
    finally:
        for machine in machines:
            machine.close()


@pytest.mark.slow
@pytest.mark.parametrize("down_s", [3.0, 15.0])
def test_a_run_goes_on_after_postgresql_stops_and_comes_back_under_it(
    tmp_path: Path, pg_url: str, pg_cluster: PgCluster, down_s: float
) -> None:
    """The database stops while an agent works and is back ``down_s`` later (within the engine's
    5 s lease, and past it): the engine rides it out (a cut transaction fails whole, the next
    runs on a new connection) and the run completes."""
    import psycopg

    root, config = _demo_in_postgresql(tmp_path, pg_url, fault="tester:slow=20")
    started = tmops("--config", str(config), "start", DEMO_FEATURE, "--workspace", str(root))
    assert started.exit_code == 0, started.output
    store = open_store(root / ".tmops" / "tmops.db", url=pg_url)

    def state() -> tuple[str, list[tuple[str, str]]] | None:
        try:
            feature = store.feature(DEMO_FEATURE)
            assert feature is not None
            run = store.run(DEMO_FEATURE, feature.current_run)
            assert run is not None
            return run.status, [(a.phase, a.state) for a in store.attempts(run.feature, run.run)]
        except psycopg.OperationalError:  # this reader's connection was cut too
            return None

    try:
        deadline = time.monotonic() + 60
        while (now := state()) is None or ("tester", "running") not in now[1]:
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        pg_cluster.restart(down_s=down_s)
        restarted = time.monotonic()
        deadline = restarted + 120
        while (now := state()) is None or now[0] not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, now
            time.sleep(0.5)
        print(f"database back -> run ended {now[0]} after {time.monotonic() - restarted:.1f} s")
        assert now[0] == "completed", now
    finally:
        store.close()
