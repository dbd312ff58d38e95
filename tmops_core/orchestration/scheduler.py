"""The admission loop: queued runs are admitted in FIFO order under the concurrency limit, and
each admitted run is driven by a :class:`~tmops_core.orchestration.run.RunDriver` in a thread.

This module owns which run starts when (``features.concurrent_limit``, the queue order of the
store, a provider's usage limit holding its runs back until it lifts, and a run paused by one
queued again then) and the driver threads. It waits on events, never on a fixed interval
(:mod:`tmops_core.orchestration.wakeup`): a driver ending, a run queued by another process (the
doorbell), a stop asked for, or the next deadline (the idle exit, the time a usage limit lifts,
a long safety timeout that makes up for a lost ring). Every wake reads the queue again.

It must never decide whether this process may serve the project, reconcile what another engine
left, or handle signals: that is :mod:`tmops_core.orchestration.daemon`'s.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime

from tmops_core.config import Config
from tmops_core.events import EventBus
from tmops_core.log import logger
from tmops_core.orchestration.providers import phase_provider
from tmops_core.orchestration.run import STALLED, RunDriver
from tmops_core.orchestration.wakeup import Flag, Wakeup
from tmops_core.plugins import Plugins
from tmops_core.store import LostOwnership, RunRecord, Store, held_providers, store_outages
from tmops_core.workspace.layout import Layout, iso, utc_now
from tmops_hookspecs import TmopsError, WorkspaceError

__all__ = ["SAFETY_WAKE_S", "Scheduler"]

#: The longest the loop sleeps without a ring: a lost ring delays a queued run by this much.
SAFETY_WAKE_S = 5.0
#: How often the loop asks a store that stopped answering again.
_OUTAGE_RETRY_S = 1.0


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
        on_stalled: Callable[[list[tuple[str, str]]], None] | None = None,
    ) -> None:
        self.config = config
        #: gives back the runs whose drivers lost the store (the engine queues them again)
        self.on_stalled = on_stalled
        #: those runs, until the store answers again (appended by their threads)
        self._stalled: list[tuple[str, str]] = []
        self._stalled_lock = threading.Lock()
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
            outage_since: float | None = None
            while not (self.cancel.is_set() or stop()):
                self._reap_threads()
                try:
                    self._give_back_stalled()
                    waits = self.store.usage_limited_runs()
                    stamp = iso(utc_now())
                    self._resume_due(waits, stamp)
                    admitted = self._admit(engine_id, held_providers(waits, stamp))
                    due = self.next_wake_up(waits)
                except store_outages() as exc:  # the runs go on; their records wait for it
                    if outage_since is None:
                        outage_since = time.monotonic()
                        logger.warning("the store does not answer ({}); trying again", exc)
                    self.wakeup.wait(_OUTAGE_RETRY_S)
                    idle_since = time.monotonic()  # an outage is not idleness
                    continue
                if outage_since is not None:
                    logger.info("the store answers again after {:.1f} s",
                                time.monotonic() - outage_since)  # fmt: skip
                    outage_since = None
                now = time.monotonic()
                if self._threads or admitted or due is not None:
                    idle_since = now  # a run waiting for its usage limit keeps the engine up
                elif now - idle_since >= idle_exit_s:
                    break
                idle_until = None if self._threads or due else idle_since + idle_exit_s
                self.wakeup.wait(self._next_deadline(now, idle_until, due) - now)
        finally:
            self.wakeup.close_doorbell()

    def _next_deadline(self, now: float, idle_until: float | None, due: str | None) -> float:
        """When the loop must look again though nothing rang: the idle exit, the time a usage
        limit lifts, else the safety timeout."""
        deadlines = [now + self.safety_wake_s]
        if idle_until is not None:
            deadlines.append(idle_until)
        if due is not None:
            left = (datetime.fromisoformat(due) - utc_now()).total_seconds()
            deadlines.append(now + max(0.0, left))
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

    def next_wake_up(self, waits: list[RunRecord]) -> str | None:
        """When the engine has something to do although nothing runs: the soonest time a
        paused run resumes by itself, or a usage limit holding queued runs back lifts (ISO,
        UTC); None when nothing waits. An engine does not go idle before it."""
        if not waits:
            return None
        queued = {self._provider(run) for run in self.store.queued_runs()}
        times = [
            run.resume_at for run in waits
            if run.resume_at and (self.config.features.resume_after_usage_limit
                                  or (run.limited_provider or self._provider(run)) in queued)
        ]  # fmt: skip
        return min(times) if times else None

    def _resume_due(self, waits: list[RunRecord], now: str) -> None:
        """Queue again, at their old place, the runs whose usage limit has lifted (unless
        ``features.resume_after_usage_limit`` is off: then a person resumes them)."""
        if not self.config.features.resume_after_usage_limit:
            return
        for run in waits:
            due = run.resume_at is not None and run.resume_at <= now
            if due and self.store.resume_due(run.feature, run.run, now=now):
                self._resumed(run)

    def _resumed(self, run: RunRecord) -> None:
        data = {"run": run.run, "actor": "tmops", "status": "paused",
                "reason": f"the usage limit lifted at {run.resume_at}"}  # fmt: skip
        event = self.events.emit("orchestration.run.resumed", data, feature=run.feature,
                                 correlation_id=run.run_id)  # fmt: skip
        self.store.add_event(run.feature, run.run, "orchestration.run.resumed",
                             json.dumps(dict(event.data)), iso(event.timestamp))  # fmt: skip
        logger.info("run {}/{} resumes: its usage limit lifted", run.feature, run.run)

    def _provider(self, run: RunRecord) -> str | None:
        """The provider of the phase the run goes on with (a usage limit holds a run back only
        when that phase's provider is held); None when it cannot be told (the run fails)."""
        phase = run.current_phase or self.config.features.default_phases[0]
        try:
            return phase_provider(
                self.config, self.plugins, phase, run_provider=run.provider,
                run_phases=run.phase_overrides,
            )  # fmt: skip
        except TmopsError:  # no default provider: the driver ends the run saying so
            return None

    def _admit(self, engine_id: int, held: dict[str, str]) -> bool:
        """Admit queued runs in FIFO order under the limit, but none of a provider in
        ``held`` (usage-limited: they stay queued until the limit lifts)."""
        limit = self.config.features.concurrent_limit
        admitted = False
        if len(self._threads) >= limit:
            return admitted  # no slot: the queue is read when a driver ends
        for run in self.store.queued_runs():
            if len(self._threads) >= limit:
                break
            key = (run.feature, run.run)
            if key in self._threads or self._provider(run) in held:
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
            if status == STALLED:
                with self._stalled_lock:
                    self._stalled.append((feature, run))
            else:
                logger.info("run {}/{} ended: {}", feature, run, status)
        finally:
            self._ended.append(threading.current_thread())
            self.wakeup.ring()  # a slot is free

    def _give_back_stalled(self) -> None:
        """The runs whose drivers lost the store, to the engine to queue again: once their
        threads ended (reaped), before the queue is read."""
        with self._stalled_lock:
            stalled = [key for key in self._stalled if key not in self._threads]
        if stalled and self.on_stalled is not None:
            self.on_stalled(stalled)  # a store outage here leaves them for the next turn
        with self._stalled_lock:
            self._stalled = [key for key in self._stalled if key not in stalled]

    def _reap_threads(self) -> None:
        """Join the drivers that said they ended (each is returning) and any other that did."""
        while self._ended:
            self._ended.popleft().join()  # returning: a moment at most
        for key, thread in list(self._threads.items()):
            if not thread.is_alive():
                thread.join()
                del self._threads[key]
