"""Durable state in SQLite (WAL) under ``.tmops/``: features, their runs and attempts, events.

Every change is one transaction. The schema is versioned from the first release: the migration
files in ``migrations/`` run in order and are recorded in ``schema_migrations``. The database
file is created 0600, and it (with its ``-wal``, ``-shm`` and ``-journal`` files) is never opened
through a symlink: the path is checked component by component before SQLite gets it. This module
owns SQL, with :mod:`tmops_core.store.leases` (the engines and the project's lease),
:mod:`tmops_core.store.controls` (a person's changes to a run), :mod:`tmops_core.store.trail`
(the append-only audit trail) and :mod:`tmops_core.store.tallies` (the aggregates metrics
read), parts of :class:`Store`; nothing else writes to the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import attrs

from tmops_core.lifecycle import (
    ENDED_RUN_STATES,
    LIVE_ATTEMPT_STATES,
    AttemptState,
    EngineState,
    RunState,
    check_run_transition,
)
from tmops_core.secrets import redact_json_text, redact_text
from tmops_core.store.controls import RunControls
from tmops_core.store.leases import EngineLeases
from tmops_core.store.records import (
    AttemptRecord,
    FeatureRecord,
    LostOwnership,
    RunRecord,
)
from tmops_core.store.tallies import StoreTallies
from tmops_core.store.trail import AuditTrail
from tmops_core.store.waits import UsageWaits
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


class SQLiteStore(EngineLeases, RunControls, AuditTrail, StoreTallies, UsageWaits):
    """The :class:`~tmops_core.store.protocol.Store` in one SQLite database (WAL); safe to share
    between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
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
        self._migrate()

    @classmethod
    def open_existing(cls, path: Path) -> SQLiteStore | None:
        """The store at ``path`` if there is one (readers must never create it).

        :raises WorkspaceError: it, or a folder on the way to it, is a symlink.
        """
        return cls(path) if lstat_checked(path) is not None else None

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
                for statement in statements:
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
                (run.feature, run.run, run.status, run.created_at, run.updated_at),
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

    def run(self, feature: str, run: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM runs WHERE feature = ? AND run = ?", (feature, run)
            ).fetchone()
        return RunRecord(**dict(row)) if row else None

    # -- orchestration -----------------------------------------------------------------------

    def queue_run(
        self, feature: str, run: str, *, run_id: str, provider: str | None, now: str,
        phase_providers: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Put a run at the end of the queue (FIFO: a sequence number, not a clock)."""
        overrides = json.dumps(dict(phase_providers)) if phase_providers else None
        with self.transaction() as db:
            self._move_run(db, feature, run, RunState.QUEUED, now, None)
            db.execute(
                """
                UPDATE runs SET run_id = ?, provider = ?, phase_providers = ?, queued_at = ?,
                    queue_seq = (SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM runs),
                    last_error = NULL, pause_reason = NULL, pause_requested = 0
                WHERE feature = ? AND run = ?
                """,
                (run_id, provider, overrides, now, feature, run),
            )

    def requeue(self, feature: str, run: str, *, now: str) -> bool:
        """Take a running run from its engine and queue it again, keeping its place
        (``queue_seq``); False if it was not running.

        The run gets a new fencing token, so every later write of the engine that ran it is
        refused (:class:`LostOwnership`): that engine is dead, or stopping, or hung.
        """
        with self.transaction() as db:
            if self._status(db, feature, run) is not RunState.RUNNING:
                return False
            self._move_run(db, feature, run, RunState.QUEUED, now, None)
            db.execute(
                "UPDATE runs SET fencing = fencing + 1, engine_pid = NULL, engine_id = NULL "
                "WHERE feature = ? AND run = ?",
                (feature, run),
            )
            return True

    def cancel_run(self, feature: str, run: str, *, now: str) -> list[AttemptRecord]:
        """A person's cancel: the run ends ``cancelled`` (see :meth:`stop_run`).

        :raises IllegalTransition: the run cannot be cancelled (it has completed).
        """
        return self.stop_run(
            feature, run, state=RunState.CANCELLED, pause_reason=None,
            attempts=AttemptState.CANCELLED, message="cancelled by a person", now=now,
        )  # fmt: skip

    def fail_queued_run(self, feature: str, run: str, *, error: str, now: str) -> bool:
        """Fail a run that is still queued (no engine could start to take it), with ``error``
        as its last error; return whether it was queued. A run an engine took meanwhile is
        left to that engine."""
        with self.transaction() as db:
            if self._status(db, feature, run) is not RunState.QUEUED:
                return False
            self._move_run(db, feature, run, RunState.FAILED, now, error)
            return True

    def queued_runs(self) -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM runs WHERE status = ? ORDER BY queue_seq", (RunState.QUEUED,)
            ).fetchall()
        return [RunRecord(**dict(row)) for row in rows]

    def runs_in_state(self, *states: str) -> list[RunRecord]:
        marks = ",".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY queue_seq",  # noqa: S608 - placeholders only  # nosec B608
                states,
            ).fetchall()
        return [RunRecord(**dict(row)) for row in rows]

    def admit_run(
        self, feature: str, run: str, *, engine_id: int, engine_pid: int, now: str
    ) -> int:
        """Take a queued run for the engine ``engine_id``; return its new fencing token.

        Only the engine that holds the project's lease admits: one whose lease was taken over
        gets :class:`LostOwnership`.
        """
        with self.transaction() as db:
            serving = db.execute(
                "SELECT 1 FROM engines WHERE id = ? AND state = ?", (engine_id, EngineState.SERVING)
            ).fetchone()
            if serving is None:
                raise LostOwnership(f"engine {engine_id} no longer holds the project's lease")
            row = db.execute(
                "SELECT fencing, status FROM runs WHERE feature = ? AND run = ?", (feature, run)
            ).fetchone()
            if row is None or row["status"] != RunState.QUEUED:
                raise LostOwnership(f"{feature}/{run} is no longer queued")
            fencing = int(row["fencing"]) + 1
            self._move_run(db, feature, run, RunState.RUNNING, now, None)
            db.execute(
                """
                UPDATE runs SET fencing = ?, engine_pid = ?, engine_id = ?,
                    started_at = COALESCE(started_at, ?)
                WHERE feature = ? AND run = ?
                """,
                (fencing, engine_pid, engine_id, now, feature, run),
            )
            return fencing

    @contextmanager
    def fenced(self, feature: str, run: str, fencing: int) -> Iterator[sqlite3.Connection]:
        """A transaction that commits only while ``fencing`` still owns the run."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT fencing FROM runs WHERE feature = ? AND run = ?", (feature, run)
            ).fetchone()
            if row is None or int(row["fencing"]) != fencing:
                raise LostOwnership(
                    f"{feature}/{run} was taken from this engine (queued again, or owned by "
                    "another engine)"
                )
            yield db

    def start_attempt(
        self,
        feature: str,
        run: str,
        fencing: int,
        *,
        phase: str,
        attempt: int,
        provider: str,
        start_commit: str | None,
        now: str,
    ) -> int:
        with self.fenced(feature, run, fencing) as db:
            cursor = db.execute(
                """
                INSERT INTO attempts (feature, run, phase, attempt, state, provider, fencing,
                    start_commit, started_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    feature,
                    run,
                    phase,
                    attempt,
                    AttemptState.STARTING,
                    provider,
                    fencing,
                    start_commit,
                    now,
                ),
            )
            db.execute(
                "UPDATE runs SET current_phase = ?, updated_at = ? WHERE feature = ? AND run = ?",
                (phase, now, feature, run),
            )
            return int(cursor.lastrowid or 0)

    def record_adoption(
        self, feature: str, run: str, fencing: int, *, phase: str, now: str,
        next_phase: str | None = None, branch_head: str | None = None,
        event: tuple[str, str] | None = None, state: AttemptState = AttemptState.COMPLETED,
        message: str = "completion checkpoint found on disk", start_commit: str | None = None,
    ) -> None:  # fmt: skip
        """Record a phase judged from a checkpoint found on disk, with no agent run (accepted,
        or refused by its own verdict), and move the run on in the same transaction."""
        with self.fenced(feature, run, fencing) as db:
            db.execute(
                """
                INSERT INTO attempts (feature, run, phase, attempt, state, provider, fencing,
                    outcome, message, duration_s, started_at, finished_at, start_commit)
                VALUES (?, ?, ?, 0, ?, 'none', ?, 'adopted', ?, 0, ?, ?, ?)
                """,
                (
                    feature,
                    run,
                    phase,
                    AttemptState(state),
                    fencing,
                    redact_text(message),
                    now,
                    now,
                    start_commit,
                ),
            )
            db.execute(
                """
                UPDATE runs SET current_phase = COALESCE(?, current_phase),
                    branch_head = COALESCE(?, branch_head), updated_at = ?
                WHERE feature = ? AND run = ?
                """,
                (next_phase, branch_head, now, feature, run),
            )
            if event is not None:
                db.execute(
                    "INSERT INTO events (feature, run, event_type, timestamp, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (feature, run, event[0], now, redact_json_text(event[1])),
                )

    def attempt_process(
        self,
        attempt_id: int,
        feature: str,
        run: str,
        fencing: int,
        *,
        pid: int,
        start_time: int,
        mark: str | None,
    ) -> None:
        """Record the agent process, so a later engine can find and kill it if this one dies."""
        with self.fenced(feature, run, fencing) as db:
            db.execute(
                "UPDATE attempts SET state = ?, pid = ?, start_time = ?, mark = ? WHERE id = ?",
                (AttemptState.RUNNING, pid, start_time, mark, attempt_id),
            )

    def attempt_session(
        self, attempt_id: int, feature: str, run: str, fencing: int, session_id: str
    ) -> None:
        """Record the agent's session id (fenced: a stale runner's session is not the run's)."""
        with self.fenced(feature, run, fencing) as db:
            db.execute("UPDATE attempts SET session_id = ? WHERE id = ?", (session_id, attempt_id))

    def finish_attempt(
        self,
        attempt_id: int,
        feature: str,
        run: str,
        fencing: int,
        *,
        state: AttemptState | str,
        outcome: str,
        message: str,
        session_id: str | None,
        cost_usd: float | None,
        turns: int | None,
        now: str,
        duration_s: float | None = None,
        next_phase: str | None = None,
        branch_head: str | None = None,
        event: tuple[str, str] | None = None,
        tokens: tuple[int | None, int | None] = (None, None),
    ) -> None:
        """Close an attempt and, in the SAME transaction, move the run on (the transition) and
        record the branch head the accepted work left; ``tokens``: input and output."""
        state = AttemptState(state)
        message = redact_text(message)  # an agent's result text may quote a secret
        with self.fenced(feature, run, fencing) as db:
            db.execute(
                """
                UPDATE attempts SET state = ?, outcome = ?, message = ?,
                    session_id = COALESCE(?, session_id), cost_usd = ?, turns = ?,
                    duration_s = ?, finished_at = ?, input_tokens = ?, output_tokens = ?
                WHERE id = ?
                """,
                (state, outcome, message, session_id, cost_usd, turns, duration_s, now,
                 *tokens, attempt_id),
            )  # fmt: skip
            db.execute(
                """
                UPDATE runs SET cost_usd = (SELECT COALESCE(SUM(cost_usd), 0) FROM attempts
                        WHERE feature = ? AND run = ?),
                    last_error = CASE WHEN ? = 'completed' THEN last_error ELSE ? END,
                    current_phase = COALESCE(?, current_phase),
                    branch_head = COALESCE(?, branch_head), updated_at = ?
                WHERE feature = ? AND run = ?
                """,
                (feature, run, state, message, next_phase, branch_head, now, feature, run),
            )
            if event is not None:
                db.execute(
                    "INSERT INTO events (feature, run, event_type, timestamp, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (feature, run, event[0], now, redact_json_text(event[1])),
                )

    def end_run(
        self, feature: str, run: str, fencing: int | None, *, status: RunState | str, now: str,
        error: str | None = None, pause_reason: str | None = None, resume_at: str | None = None,
    ) -> None:  # fmt: skip
        """Move a run to a stopped state; ``fencing`` None is for a person's command;
        ``resume_at``: when the usage limit that paused it lifts (the engine resumes it then)."""
        context = self.fenced(feature, run, fencing) if fencing is not None else self.transaction()
        with context as db:
            self._move_run(db, feature, run, RunState(status), now, error, pause_reason)
            if resume_at is not None:  # held: the provider of the attempt that hit the limit
                db.execute(
                    "UPDATE runs SET resume_at = ?, limited_provider = (SELECT provider FROM "
                    "attempts WHERE feature = ? AND run = ? ORDER BY id DESC LIMIT 1) "
                    "WHERE feature = ? AND run = ?",
                    (resume_at, feature, run, feature, run),
                )

    def set_branch_head(self, feature: str, run: str, fencing: int | None, head: str) -> None:
        """Record the head tmops left the feature branch at (the branch guard compares it)."""
        context = self.fenced(feature, run, fencing) if fencing is not None else self.transaction()
        with context as db:
            db.execute(
                "UPDATE runs SET branch_head = ? WHERE feature = ? AND run = ?",
                (head, feature, run),
            )

    @staticmethod
    def _status(db: sqlite3.Connection, feature: str, run: str) -> RunState:
        row = db.execute(
            "SELECT status FROM runs WHERE feature = ? AND run = ?", (feature, run)
        ).fetchone()
        if row is None:
            raise WorkspaceError(f"run {run} of feature {feature} is not in the store")
        return RunState(row["status"])

    def _move_run(
        self, db: sqlite3.Connection, feature: str, run: str, target: RunState, now: str,
        error: str | None, pause_reason: str | None = None,
    ) -> None:  # fmt: skip
        """The one place a run changes state, checked against the lifecycle's table."""
        check_run_transition(self._status(db, feature, run), target)
        error = None if error is None else redact_text(error)
        finished = now if target in ENDED_RUN_STATES else None
        db.execute(
            """
            UPDATE runs SET status = ?, finished_at = ?, updated_at = ?, pause_reason = ?,
                resume_at = NULL,
                last_error = CASE WHEN ? = 'completed' THEN NULL ELSE COALESCE(?, last_error) END
            WHERE feature = ? AND run = ?
            """,
            (target, finished, now, pause_reason, target, error, feature, run),
        )
        db.execute(
            "UPDATE features SET status = ?, updated_at = ? WHERE name = ?", (target, now, feature)
        )

    def attempts(self, feature: str, run: str) -> list[AttemptRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM attempts WHERE feature = ? AND run = ? ORDER BY id", (feature, run)
            ).fetchall()
        return [AttemptRecord(**dict(row)) for row in rows]

    def live_attempts(self) -> list[AttemptRecord]:
        """Attempts whose process may still run (for orphan reaping at start-up)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM attempts WHERE state IN (?, ?) ORDER BY id",
                tuple(sorted(LIVE_ATTEMPT_STATES)),
            ).fetchall()
        return [AttemptRecord(**dict(row)) for row in rows]

    def close_attempts(
        self, ids: Iterable[int], *, state: AttemptState, outcome: str, message: str, now: str
    ) -> int:
        """End those of the attempts ``ids`` that are still live; return how many.

        No fencing token: this is for the engine that holds the lease, once the attempts'
        agents are gone (``abandoned`` by a dead engine, ``interrupted`` by a stopping one).
        """
        count = 0
        message = redact_text(message)
        with self.transaction() as db:
            for attempt_id in ids:
                cursor = db.execute(
                    "UPDATE attempts SET state = ?, outcome = ?, message = ?, finished_at = ? "
                    "WHERE id = ? AND state IN (?, ?)",
                    (state, outcome, message, now, attempt_id, *sorted(LIVE_ATTEMPT_STATES)),
                )
                count += cursor.rowcount
        return count
