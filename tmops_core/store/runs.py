"""The store's features, runs and attempts: recording them, moving a run through its states
(queued, admitted, fenced, ended), and its attempts' lives; for every backend.

Every change is one transaction of the backend (:meth:`transaction`); a change an attempt causes
is fenced (:meth:`fenced`: the run's fencing token is checked, its row locked where the backend
locks rows, in the transaction that records the change). Like :mod:`tmops_core.store.leases`,
a part of the store classes (a mixin over their connection and :class:`Dialect`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

import attrs

from tmops_core.lifecycle import (
    ENDED_RUN_STATES,
    LIVE_ATTEMPT_STATES,
    AttemptState,
    EngineState,
    PauseReason,
    RunState,
    check_run_transition,
)
from tmops_core.secrets import redact_text
from tmops_core.store.dialect import Dialect, SQLConnection
from tmops_core.store.records import (
    AttemptRecord,
    FeatureRecord,
    LostOwnership,
    RunRecord,
    from_row,
)
from tmops_hookspecs import WorkspaceError

__all__ = ["RunStore"]


class RunStore:
    """Features, runs and attempts: the store's own records."""

    _db: SQLConnection
    _lock: threading.RLock
    _dialect: Dialect
    #: ``server.workspace_id``: written into every row the store inserts
    workspace: str

    if TYPE_CHECKING:

        def transaction(self) -> AbstractContextManager[SQLConnection]: ...

        def stop_run(
            self, feature: str, run: str, *, state: RunState, pause_reason: PauseReason | None,
            attempts: AttemptState, message: str, now: str,
        ) -> list[AttemptRecord]: ...  # fmt: skip

        def _append_event(
            self, db: SQLConnection, feature: str | None, run: str | None, event_type: str,
            data: str, now: str,
        ) -> None: ...  # fmt: skip

    # -- features and runs -------------------------------------------------------------------

    def record_init(self, feature: FeatureRecord, run: RunRecord) -> None:
        """Record an initialised feature and its run in one transaction."""
        with self.transaction() as db:
            db.execute(
                """
                INSERT INTO features
                    (name, branch, worktree, isolation, current_run, status, created_at,
                     updated_at, workspace_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET
                    branch = excluded.branch, worktree = excluded.worktree,
                    isolation = excluded.isolation, current_run = excluded.current_run,
                    status = excluded.status, updated_at = excluded.updated_at
                """,
                (*attrs.astuple(feature), self.workspace),
            )
            db.execute(
                """
                INSERT INTO runs (feature, run, status, created_at, updated_at, workspace_id)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(feature, run) DO NOTHING
                """,
                (run.feature, run.run, run.status, run.created_at, run.updated_at, self.workspace),
            )

    def feature(self, name: str) -> FeatureRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM features WHERE name = ?", (name,)).fetchone()
        return from_row(FeatureRecord, row) if row else None

    def features(self) -> list[FeatureRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM features ORDER BY name").fetchall()
        return [from_row(FeatureRecord, row) for row in rows]

    def runs(self, feature: str) -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM runs WHERE feature = ? ORDER BY created_at, run", (feature,)
            ).fetchall()
        return [from_row(RunRecord, row) for row in rows]

    def run(self, feature: str, run: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM runs WHERE feature = ? AND run = ?", (feature, run)
            ).fetchone()
        return from_row(RunRecord, row) if row else None

    # -- orchestration -----------------------------------------------------------------------

    def queue_run(
        self, feature: str, run: str, *, run_id: str, provider: str | None, now: str,
        phase_providers: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Put a run at the end of the queue (FIFO: a sequence number, not a clock)."""
        overrides = json.dumps(dict(phase_providers)) if phase_providers else None
        with self.transaction() as db:
            if self._dialect.lock_queue:  # two machines queueing at once: distinct numbers
                db.execute(self._dialect.lock_queue)
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
        return [from_row(RunRecord, row) for row in rows]

    def runs_in_state(self, *states: str) -> list[RunRecord]:
        marks = ",".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY queue_seq",  # noqa: S608 - placeholders only  # nosec B608
                states,
            ).fetchall()
        return [from_row(RunRecord, row) for row in rows]

    def admit_run(
        self, feature: str, run: str, *, engine_id: int, engine_pid: int, now: str
    ) -> int:
        """Take a queued run for the engine ``engine_id``; return its new fencing token.

        Only the engine that holds the project's lease admits: one whose lease was taken over
        gets :class:`LostOwnership`.
        """
        with self.transaction() as db:
            # held until the commit: a take-over of this engine waits, then fences the run too
            serving = db.execute(
                "SELECT 1 FROM engines WHERE id = ? AND state = ?" + self._dialect.for_share,  # noqa: S608 - the dialect's lock clause  # nosec B608
                (engine_id, EngineState.SERVING),
            ).fetchone()
            if serving is None:
                raise LostOwnership(f"engine {engine_id} no longer holds the project's lease")
            row = db.execute(
                "SELECT fencing, status FROM runs WHERE feature = ? AND run = ?"  # noqa: S608 - the dialect's lock clause  # nosec B608
                + self._dialect.for_update,
                (feature, run),
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
    def fenced(self, feature: str, run: str, fencing: int) -> Iterator[SQLConnection]:
        """A transaction that commits only while ``fencing`` still owns the run."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT fencing FROM runs WHERE feature = ? AND run = ?" + self._dialect.for_update,  # noqa: S608 - the dialect's lock clause  # nosec B608
                (feature, run),
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
            attempt_id = self._dialect.insert_id(
                db,
                """
                INSERT INTO attempts (feature, run, phase, attempt, state, provider, fencing,
                    start_commit, started_at, workspace_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                    self.workspace,
                ),
            )
            db.execute(
                "UPDATE runs SET current_phase = ?, updated_at = ? WHERE feature = ? AND run = ?",
                (phase, now, feature, run),
            )
            return attempt_id

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
                    outcome, message, duration_s, started_at, finished_at, start_commit,
                    workspace_id)
                VALUES (?, ?, ?, 0, ?, 'none', ?, 'adopted', ?, 0, ?, ?, ?, ?)
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
                    self.workspace,
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
                self._append_event(db, feature, run, event[0], event[1], now)

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
                self._append_event(db, feature, run, event[0], event[1], now)

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

    def _status(self, db: SQLConnection, feature: str, run: str) -> RunState:
        """The run's state, its row locked until the commit (the caller changes it next)."""
        row = db.execute(
            "SELECT status FROM runs WHERE feature = ? AND run = ?" + self._dialect.for_update,  # noqa: S608 - the dialect's lock clause  # nosec B608
            (feature, run),
        ).fetchone()
        if row is None:
            raise WorkspaceError(f"run {run} of feature {feature} is not in the store")
        return RunState(row["status"])

    def _move_run(
        self, db: SQLConnection, feature: str, run: str, target: RunState, now: str,
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
        return [from_row(AttemptRecord, row) for row in rows]

    def live_attempts(self) -> list[AttemptRecord]:
        """Attempts whose process may still run (for orphan reaping at start-up)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM attempts WHERE state IN (?, ?) ORDER BY id",
                tuple(sorted(LIVE_ATTEMPT_STATES)),
            ).fetchall()
        return [from_row(AttemptRecord, row) for row in rows]

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
