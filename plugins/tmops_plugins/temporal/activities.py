"""The attempt activity, on a worker: the job run by the core's machinery in this clone, with
a heartbeat carrying the agent's progress (pid, session, last event) and the cancel it brings
back (a person's cancel, or the server telling a worker that lost its attempt)."""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from tmops_hookspecs import AgentEvent, ExecutorHost, TmopsError
from tmops_plugins import _log

from .progress import event_data
from .workflow import ATTEMPT_ACTIVITY, NOT_RETRIED

__all__ = ["AttemptActivity", "HeartbeatHooks"]

#: the latest events a heartbeat carries: more than a heartbeat interval's worth of a busy
#: agent (a flood beyond it reaches the trail with the attempt's result instead)
_EVENTS_PER_BEAT = 64


class HeartbeatHooks:
    """:class:`~tmops_hookspecs.AttemptHooks` of a worker: a heartbeat every ``interval_s``
    with the agent's progress as its details (its pid, session, and latest events numbered
    in order: the numbers are the events' places in the attempt's result); cancelled once
    Temporal says so."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._details: dict[str, Any] = {"pid": None, "start_time": None, "session_id": None,
                                         "last_event": None}  # fmt: skip
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=_EVENTS_PER_BEAT)
        self._event_count = 0
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self._done = threading.Event()

    def run(self) -> None:
        """Start the heartbeat and the cancel's waiter (each in the activity's context)."""
        for target in (self._beat, self._await_cancel):
            context = contextvars.copy_context()
            threading.Thread(target=context.run, args=(target,), daemon=True).start()

    def stop(self) -> None:
        self._done.set()

    def _beat(self) -> None:
        while not self._done.is_set():
            with self._lock:
                details = {**self._details, "events": list(self._events)}
            activity.heartbeat(details)
            self._done.wait(self._interval_s)

    def _await_cancel(self) -> None:
        while not self._done.is_set():
            activity.wait_for_cancelled_sync(timeout=self._interval_s)
            if activity.is_cancelled():
                self._cancelled.set()
                with self._lock:
                    listeners = list(self._listeners)
                for listener in listeners:
                    listener()
                return

    def started(self, pid: int, start_time: int, mark: str | None) -> None:
        with self._lock:
            self._details.update(pid=pid, start_time=start_time)

    def session(self, session_id: str) -> None:
        with self._lock:
            self._details["session_id"] = session_id

    def event(self, event: AgentEvent) -> None:
        with self._lock:
            self._details["last_event"] = f"{event.kind} {event.message[:120]}".strip()
            self._events.append((self._event_count, event_data(event)))
            self._event_count += 1

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def checkpoint_seen(self) -> bool:
        return False  # the host watches this clone's checkpoints itself

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(wake)

        def stop() -> None:
            with self._lock:
                if wake in self._listeners:
                    self._listeners.remove(wake)

        return stop


class AttemptActivity:
    """The activity, bound to this worker's host (its clone, config and plugins)."""

    def __init__(self, host: ExecutorHost, heartbeat_s: float) -> None:
        self._host = host
        self._heartbeat_s = heartbeat_s

    @activity.defn(name=ATTEMPT_ACTIVITY)
    def run_attempt(self, job: dict[str, Any]) -> dict[str, Any]:
        info = activity.info()
        hooks = HeartbeatHooks(self._heartbeat_s)
        hooks.run()
        lease = {**job, "lease": f"a{info.attempt}"}  # this try's own ref: a lost one's is unread
        _log.info("attempt {} of {}/{} {} (try {})", job["attempt"], job["feature"], job["run"],
                  job["phase"], info.attempt)  # fmt: skip
        try:
            # The cancel reaches the agent through the hooks (its tree stopped in order), not
            # as an exception thrown into this thread halfway through a git command.
            with activity.shield_thread_cancel_exception():
                try:
                    return self._host.run_job(lease, hooks)
                except TmopsError as exc:
                    raise ApplicationError(str(exc), type=NOT_RETRIED, non_retryable=True) from exc
        finally:
            hooks.stop()
            if hooks.cancelled():
                _log.info("attempt {} of {}/{} cancelled at a heartbeat: agent stopped",
                          job["attempt"], job["feature"], job["run"])  # fmt: skip
