"""The admission loop: queued runs are admitted in FIFO order under the concurrency limit, and
each admitted run is driven by a :class:`~tmops_core.orchestration.run.RunDriver` in a thread.

This module owns which run starts when (``features.concurrent_limit``, the queue order of the
store) and the driver threads. It waits on events, never on a fixed interval
(:mod:`tmops_core.orchestration.wakeup`): a driver ending, a run queued by another process (the
doorbell), a stop asked for, or the next deadline (the idle exit, a long safety timeout that
makes up for a lost ring). Every wake reads the queue again.

It must never decide whether this process may serve the project, reconcile what another engine
left, or handle signals: that is :mod:`tmops_core.orchestration.daemon`'s.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable

from tmops_core.config import Config
from tmops_core.events import EventBus
from tmops_core.log import logger
from tmops_core.orchestration.run import RunDriver
from tmops_core.orchestration.wakeup import Flag, Wakeup
from tmops_core.plugins import Plugins
from tmops_core.store import LostOwnership, Store
from tmops_core.workspace.layout import Layout, iso, utc_now
from tmops_hookspecs import WorkspaceError

__all__ = ["SAFETY_WAKE_S", "Scheduler"]

#: The longest the loop sleeps without a ring: a lost ring delays a queued run by this much.
SAFETY_WAKE_S = 5.0


class Scheduler:
    """Admits and drives one project's queued runs until the queue has been idle a while."""

    def __init__(
        self,
        *,
        config: Config,
        plugins: Plugins,
        events: EventBus,
        store: Store,
        layout: Layout,
        cancel: Flag,
        retry_backoff_s: tuple[float, ...] | None = None,
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.events = events
        self.store = store
        self.layout = layout
        self.backoff = retry_backoff_s
        self.cancel = cancel
        self._threads: dict[tuple[str, str], threading.Thread] = {}
        #: the drivers that ended, in order (appended by their threads)
        self._ended: deque[threading.Thread] = deque()
        #: rung by a driver ending, the engine (a stop, a lost lease) and other processes
        self.wakeup = Wakeup()
        self.safety_wake_s = SAFETY_WAKE_S
        cancel.subscribe(self.wakeup.ring)

    def run(self, idle_exit_s: float, *, engine_id: int, stop: Callable[[], bool]) -> None:
        """Admit runs for the engine ``engine_id`` and drive them until nothing has run for
        ``idle_exit_s``; or until ``stop()`` says so (or ``cancel`` is set: ring
        :attr:`wakeup` after either), leaving the drivers to the caller (:meth:`join`)."""
        self._listen()
        try:
            idle_since = time.monotonic()
            while not (self.cancel.is_set() or stop()):
                self._reap_threads()
                admitted = self._admit(engine_id)
                now = time.monotonic()
                if self._threads or admitted:
                    idle_since = now
                elif now - idle_since >= idle_exit_s:
                    break
                idle_until = None if self._threads else idle_since + idle_exit_s
                self.wakeup.wait(self._next_deadline(now, idle_until) - now)
        finally:
            self.wakeup.close_doorbell()

    def _next_deadline(self, now: float, idle_until: float | None) -> float:
        """When the loop must look again though nothing rang: the idle exit, else the safety
        timeout (a due time of another timer joins this minimum)."""
        deadlines = [now + self.safety_wake_s]
        if idle_until is not None:
            deadlines.append(idle_until)
        return min(deadlines)

    def _listen(self) -> None:
        """Open the doorbell before the first read of the queue: a run committed before it is
        in that read, one committed after it rings."""
        try:
            self.wakeup.open_doorbell(self.layout.tmops_dir)
        except (OSError, WorkspaceError) as exc:
            logger.warning(
                "cannot listen on the engine doorbell ({}); runs queued by other processes are "
                "admitted within {} s",
                exc,
                self.safety_wake_s,
            )

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the drivers to end (up to ``timeout`` seconds); True when none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for key, thread in list(self._threads.items()):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
            del self._threads[key]
        return True

    def _admit(self, engine_id: int) -> bool:
        limit = self.config.features.concurrent_limit
        admitted = False
        if len(self._threads) >= limit:
            return admitted  # no slot: the queue is read when a driver ends
        for run in self.store.queued_runs():
            if len(self._threads) >= limit:
                break
            key = (run.feature, run.run)
            if key in self._threads:
                continue
            try:
                fencing = self.store.admit_run(
                    run.feature, run.run, engine_id=engine_id, engine_pid=os.getpid(),
                    now=iso(utc_now()),
                )  # fmt: skip
            except LostOwnership:
                continue
            thread = threading.Thread(
                target=self._drive, args=(run.feature, run.run, fencing),
                name=f"run-{run.feature}-{run.run}", daemon=True,
            )  # fmt: skip
            self._threads[key] = thread
            thread.start()
            admitted = True
        return admitted

    def _drive(self, feature: str, run: str, fencing: int) -> None:
        extra = {} if self.backoff is None else {"retry_backoff_s": self.backoff}
        try:
            driver = RunDriver(
                config=self.config, plugins=self.plugins, events=self.events, store=self.store,
                layout=self.layout, feature=feature, run=run, fencing=fencing,
                cancel=self.cancel, **extra,
            )  # fmt: skip
            status = driver.drive()
            logger.info("run {}/{} ended: {}", feature, run, status)
        finally:
            self._ended.append(threading.current_thread())
            self.wakeup.ring()  # a slot is free

    def _reap_threads(self) -> None:
        """Join the drivers that said they ended (each is returning) and any other that did."""
        while self._ended:
            self._ended.popleft().join()  # returning: a moment at most
        for key, thread in list(self._threads.items()):
            if not thread.is_alive():
                thread.join()
                del self._threads[key]
