"""The admission loop: queued runs are admitted in FIFO order under the concurrency limit, and
each admitted run is driven by a :class:`~tmops_core.orchestration.run.RunDriver` in a thread.

This module owns which run starts when (``features.concurrent_limit``, the queue order of the
store) and the driver threads. It must never decide whether this process may serve the
project, reconcile what another engine left, or handle signals: that is
:mod:`tmops_core.orchestration.daemon`'s.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from loguru import logger

from tmops_core.config import Config
from tmops_core.events import EventBus
from tmops_core.orchestration.run import RunDriver
from tmops_core.plugins import Plugins
from tmops_core.store import LostOwnership, Store
from tmops_core.workspace.layout import Layout, iso, utc_now

__all__ = ["Scheduler"]

_POLL_S = 0.02


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
        cancel: threading.Event,
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

    def run(self, idle_exit_s: float, *, engine_id: int, stop: Callable[[], bool]) -> None:
        """Admit runs for the engine ``engine_id`` and drive them until nothing has run for
        ``idle_exit_s``; or until ``stop()`` says so (or ``cancel`` is set), leaving the
        drivers to the caller (:meth:`join`)."""
        idle_since = time.monotonic()
        while not (self.cancel.is_set() or stop()):
            self._reap_threads()
            admitted = self._admit(engine_id)
            if self._threads or admitted:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= idle_exit_s:
                break
            time.sleep(_POLL_S)

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
        driver = RunDriver(
            config=self.config, plugins=self.plugins, events=self.events, store=self.store,
            layout=self.layout, feature=feature, run=run, fencing=fencing, cancel=self.cancel,
            **extra,
        )  # fmt: skip
        status = driver.drive()
        logger.info("run {}/{} ended: {}", feature, run, status)

    def _reap_threads(self) -> None:
        for key, thread in list(self._threads.items()):
            if not thread.is_alive():
                thread.join()
                del self._threads[key]
