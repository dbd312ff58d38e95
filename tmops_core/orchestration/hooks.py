"""The run's side of the executor seam: what an attempt reports, recorded under the run's
fencing token, so a runner that lost its run can no longer change anything.

It never starts or stops a process itself and never judges an attempt.
"""

from __future__ import annotations

from collections.abc import Callable

from tmops_core.checkpoints.watch import Arrivals
from tmops_core.orchestration.progress import AgentProgress
from tmops_core.orchestration.wakeup import Flag, subscribe_all
from tmops_core.store import Store
from tmops_hookspecs import AgentEvent

__all__ = ["FencedHooks"]


class FencedHooks:
    """:class:`~tmops_hookspecs.AttemptHooks` for one attempt of one run."""

    def __init__(
        self,
        *,
        store: Store,
        feature: str,
        run: str,
        fencing: int,
        attempt_id: int,
        arrivals: Arrivals,
        completion: str,
        cancel: Flag,
        on_started: Callable[[int], None],
        progress: AgentProgress | None = None,
    ) -> None:
        self._store = store
        self._feature = feature
        self._run = run
        self._fencing = fencing
        self._attempt_id = attempt_id
        self._arrivals = arrivals
        self._completion = completion
        self._cancel = cancel
        self._on_started = on_started
        self._progress = progress

    def started(self, pid: int, start_time: int, mark: str | None) -> None:
        # Raises LostOwnership for a stale attempt: the executor then stops its agent.
        self._store.attempt_process(
            self._attempt_id, self._feature, self._run, self._fencing, pid=pid,
            start_time=start_time, mark=mark,
        )  # fmt: skip
        self._on_started(pid)

    def session(self, session_id: str) -> None:
        self._store.attempt_session(
            self._attempt_id, self._feature, self._run, self._fencing, session_id
        )

    def event(self, event: AgentEvent) -> None:
        # Into the run's trail (fenced, thinned), for whoever follows the run.
        if self._progress is not None:
            self._progress.record(event)

    def cancelled(self) -> bool:
        # The engine stops, or the run was taken from this attempt (a person's cancel or
        # pause --now gave it a new token): an executor whose agent runs elsewhere learns it
        # here, as the local one's agent is stopped by its recorded pid.
        if self._cancel.is_set():
            return True
        record = self._store.run(self._feature, self._run)
        return record is None or record.fencing != self._fencing

    def checkpoint_seen(self) -> bool:
        return self._arrivals.seen_at(self._completion) is not None

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        return subscribe_all(wake, self._arrivals, self._cancel)
