"""The Store protocol: every read and write of tmops' durable state, whatever keeps it.

SQLite (:mod:`tmops_core.store.sqlite`) is the embedded default; PostgreSQL
(:mod:`tmops_core.store.postgres`, for several machines) is the other backend: both are built
from the same modules of SQL and pass the same store tests (tests/test_store_backends.py).
Every change is one transaction; a change a run's attempt causes is checked against the run's
fencing token in that same transaction (:meth:`Store.fenced`), and every change of a run's
state goes through the lifecycle's table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from tmops_core.lifecycle import AttemptState, PauseReason, RunState
from tmops_core.store.leases import EngineRecord
from tmops_core.store.records import AttemptRecord, FeatureRecord, RunRecord
from tmops_core.store.tallies import AttemptTally, OpenRun, RunTally

#: a connection of the backend, as handed out by :meth:`Store.transaction` (opaque to callers)
Connection = Any
#: a row of the event log: its columns by name (``id``, ``event_type``, ``timestamp``, ...)
Row = Any

__all__ = ["Connection", "Row", "Store"]


@runtime_checkable
class Store(Protocol):
    """tmops' durable state: features, runs, attempts, the event log, engines and the lease."""

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[Connection]:
        """One atomic unit of change: everything in the block commits together or not at all."""

    @property
    def schema_version(self) -> int: ...

    def record_init(self, feature: FeatureRecord, run: RunRecord) -> None:
        """Record an initialised feature and its run in one transaction."""

    def feature(self, name: str) -> FeatureRecord | None: ...

    def features(self) -> list[FeatureRecord]: ...

    def runs(self, feature: str) -> list[RunRecord]: ...

    def run(self, feature: str, run: str) -> RunRecord | None: ...

    def queue_run(
        self, feature: str, run: str, *, run_id: str, provider: str | None, now: str,
        phase_providers: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Put a run at the end of the queue (FIFO: a sequence number, not a clock);
        ``provider`` and ``phase_providers``: the providers `start` named (None: the config's)."""

    def requeue(self, feature: str, run: str, *, now: str) -> bool:
        """Take a running run from its engine and queue it again, keeping its place..."""

    def cancel_run(self, feature: str, run: str, *, now: str) -> list[AttemptRecord]:
        """A person's cancel: the run ends cancelled, its live attempts too; those returned."""

    def stop_run(
        self, feature: str, run: str, *, state: RunState, pause_reason: PauseReason | None,
        attempts: AttemptState, message: str, now: str,
    ) -> list[AttemptRecord]:  # fmt: skip
        """A person's cancel or pause-now: the run moves to ``state`` with a new fencing token,
        its live attempts end as ``attempts``; those returned, for the caller to stop."""

    def request_pause(self, feature: str, run: str, *, now: str) -> RunState:
        """Pause a queued run at once, mark a running one to pause before its next phase."""

    def pause_requested(self, feature: str, run: str) -> bool:
        """Whether a person asked this run to pause before its next phase."""

    def reset_phases(
        self, feature: str, run: str, phases: Iterable[str], *, message: str, now: str,
        branch_head: str | None = None, pause: PauseReason | None = None,
    ) -> None:  # fmt: skip
        """Send phases back (a ``reset`` attempt each, approvals dropped), optionally pausing
        the run; refused for a queued or running run."""

    def approve(self, feature: str, run: str, phase: str, *, now: str) -> bool:
        """Record a person's approval of ``phase``; False if it was approved already."""

    def approved(self, feature: str, run: str) -> frozenset[str]:
        """The phases of the run a person has approved."""

    def fail_queued_run(self, feature: str, run: str, *, error: str, now: str) -> bool:
        """Fail a run that is still queued (no engine could start to take it), with ``error`` as
        its last..."""

    def queued_runs(self) -> list[RunRecord]: ...

    def runs_in_state(self, *states: str) -> list[RunRecord]: ...

    def admit_run(
        self, feature: str, run: str, *, engine_id: int, engine_pid: int, now: str
    ) -> int:
        """Take a queued run for the engine ``engine_id``; return its new fencing token."""

    def fenced(self, feature: str, run: str, fencing: int) -> AbstractContextManager[Connection]:
        """A transaction that commits only while ``fencing`` still owns the run."""

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
    ) -> int: ...

    def record_adoption(
        self,
        feature: str,
        run: str,
        fencing: int,
        *,
        phase: str,
        now: str,
        next_phase: str | None = None,
        branch_head: str | None = None,
        event: tuple[str, str] | None = None,
        state: AttemptState = AttemptState.COMPLETED,
        message: str = "completion checkpoint found on disk",
        start_commit: str | None = None,
    ) -> None:
        """Record a phase judged from a checkpoint found on disk, with no agent run (accepted,
        or refused by its own verdict), and move the run on in the same..."""

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

    def attempt_session(
        self, attempt_id: int, feature: str, run: str, fencing: int, session_id: str
    ) -> None:
        """Record the agent's session id (fenced: a stale runner's session is not the run's)."""

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
        record the branch head the accepted work..."""

    def end_run(
        self,
        feature: str,
        run: str,
        fencing: int | None,
        *,
        status: RunState | str,
        now: str,
        error: str | None = None,
        pause_reason: str | None = None,
        resume_at: str | None = None,
    ) -> None:
        """Move a run to a stopped state; ``fencing`` None is for a person's command;
        ``resume_at``: when a usage limit lifts."""

    def set_branch_head(self, feature: str, run: str, fencing: int | None, head: str) -> None:
        """Record the head tmops left the feature branch at (the branch guard compares it)."""

    def usage_limited_runs(self) -> list[RunRecord]:
        """The runs paused by a usage limit that know when it lifts, the soonest first."""

    def resume_due(self, feature: str, run: str, *, now: str) -> bool:
        """Queue a run paused by a usage limit again if its time has come; False if not."""

    def attempts(self, feature: str, run: str) -> list[AttemptRecord]: ...

    def live_attempts(self) -> list[AttemptRecord]:
        """Attempts whose process may still run (for orphan reaping at start-up)."""

    def close_attempts(
        self, ids: Iterable[int], *, state: AttemptState, outcome: str, message: str, now: str
    ) -> int:
        """End those of the attempts ``ids`` that are still live; return how many."""

    def add_event(
        self,
        feature: str | None,
        run: str | None,
        event_type: str,
        data: str,
        now: str,
        *,
        fencing: int | None = None,
    ) -> None:
        """Append to the audit trail; with ``fencing``, only while that token owns the run."""

    def events_for(self, feature: str, *, after_id: int = 0) -> list[Row]: ...

    def audit_trail(
        self, feature: str | None = None, *, after_id: int = 0, since: str | None = None
    ) -> list[Row]:
        """The events after ``after_id``, of ``feature`` or of all, at or after ``since``."""

    def acquire_lease(
        self,
        *,
        pid: int,
        start_time: int,
        boot_id: str,
        lease_until: float,
        now: str,
        alive: Callable[[EngineRecord], bool],
        lease_s: float | None = None,
    ) -> tuple[EngineRecord, list[EngineRecord]]:
        """Make this process the project's serving engine, in one transaction; ``lease_s``:
        the lease's length, kept by the database's clock too (engines of other machines)."""

    def renew_lease(
        self, engine_id: int, *, lease_until: float, now: str, lease_s: float | None = None
    ) -> bool:
        """Extend the lease of a serving engine; False if it is no longer serving (taken over)."""

    def release_lease(self, engine_id: int, *, now: str) -> None:
        """Give the lease back (the engine stops); nothing if it was taken over meanwhile."""

    def engine(self, engine_id: int) -> EngineRecord | None: ...

    def serving_engine(self) -> EngineRecord | None:
        """The engine that holds the lease, dead or alive (judging that is the caller's)."""

    # -- tallies for metrics (reads only) ----------------------------------------------------

    def run_tallies(self) -> list[RunTally]:
        """Runs counted by state and pause reason."""

    def attempt_tallies(self, bounds: Sequence[float]) -> list[AttemptTally]:
        """The ended attempts by phase, state and provider: count, cost, and durations counted
        under each of ``bounds``."""

    def open_runs(self, states: Sequence[str]) -> list[OpenRun]:
        """The runs in ``states``, each with its newest event's time."""

    def event_numbers(
        self, event_type: str, key: str, *, after_id: int = 0
    ) -> list[tuple[int, float]]:
        """``(id, number)`` of the ``event_type`` events after ``after_id`` with a number at
        ``key`` of their data."""

    def last_event_id(self) -> int:
        """The newest event's id (0 without one)."""
