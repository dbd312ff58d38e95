"""The engine process: its identity and lease, taking over from a dead engine, stopping in
order on a signal.

``start`` only queues a run and makes sure an engine serves the project, so it returns at
once; the engine runs as a background process (``tmops engine``, started by
:mod:`tmops_core.orchestration.spawn`) that exits when nothing is left to do. Whether an
engine serves is :mod:`tmops_core.orchestration.liveness`'s; admitting and driving runs is
:mod:`tmops_core.orchestration.scheduler`'s.

**Identity.** An engine is a process named by its pid, its start time (``/proc/<pid>/stat``)
and the boot id, recorded in the store's ``engines`` table. A pid alone names nothing: a dead
engine's pid may belong to another process by now, or to a zombie nobody reaped.

**Lease.** The engine that serves a project holds its lease, a row of ``engines`` in state
``serving``, renewed by a heartbeat thread every ``heartbeat_s`` seconds until ``lease_s``
seconds ahead (boot clock). An engine is alive while its row is serving, it is the same boot,
its lease has not expired and its process runs with the recorded start time (a zombie does
not count): :func:`engine_alive`. The lock file ``.tmops/engine.lock`` is only a fast path:
the lease decides, so removing the lock file never lets a second engine touch a live one.

**Take-over.** An engine starting up takes the lease; if the serving engine is alive, it
leaves everything alone and exits. If that engine is dead, the new one marks it taken over,
takes its running runs back into the queue at their place (a new fencing token: whatever the
old engine might still write is refused), kills its agents' whole process trees (by recorded
pid and start time, and by the mark in their environment, which finds detached grandchildren),
records their attempts ``abandoned`` and then drives the runs on from their phase.

**Signals.** SIGTERM or SIGINT (with ``handle_signals``): no more admissions; the engine's
runs go back into the queue, every agent gets SIGTERM then SIGKILL with its whole tree, the
attempts are recorded ``interrupted``, the lease is given back and ``serve`` returns, so
``tmops engine`` exits 0 and the next start resumes the runs. An engine whose heartbeat finds
its lease taken over (it was hung past its lease) stops its agents and leaves the runs alone.

This module must never signal a process but through :mod:`tmops_core.agents.processes` (which
checks start times), never touch a run whose engine is alive, and never admit a run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from tmops_core.agents.processes import boot_clock, boot_id, process_start_time, reap_orphans
from tmops_core.agents.supervisor import stop_all
from tmops_core.config import Config
from tmops_core.events import EventBus
from tmops_core.lifecycle import AttemptState, RunState
from tmops_core.log import logger
from tmops_core.orchestration.liveness import (
    ENGINE_LOCK,
    HEARTBEAT_S,
    LEASE_S,
    engine_alive,
    engine_lock,
    engine_running,
    run_engine_alive,
    serving_engine_alive,
    serving_engine_hung,
)
from tmops_core.orchestration.scheduler import Scheduler
from tmops_core.orchestration.spawn import ENGINE_LOG, READY, first_error, spawn_engine
from tmops_core.orchestration.wakeup import Flag
from tmops_core.plugins import Plugins
from tmops_core.store import (
    AttemptRecord,
    EngineRecord,
    LeaseHeld,
    Store,
    store_errors,
    store_outages,
)
from tmops_core.workspace.layout import (
    Layout,
    ensure_private_dir,
    iso,
    utc_now,
)

__all__ = [
    "ENGINE_LOCK",
    "ENGINE_LOG",
    "HEARTBEAT_S",
    "LEASE_S",
    "READY",
    "Engine",
    "engine_alive",
    "engine_running",
    "first_error",
    "run_engine_alive",
    "serving_engine_alive",
    "spawn_engine",
]

#: How often an orderly stop sweeps for agents while the drivers wind down.
_SWEEP_S = 0.05


# -- the lease's heartbeat ------------------------------------------------------------------------


class _Heartbeat:
    """Renews the lease every ``every_s`` until stopped; calls ``on_lost`` if it was taken."""

    def __init__(
        self,
        store: Store,
        engine_id: int,
        *,
        every_s: float,
        lease_s: float,
        on_lost: Callable[[], None],
    ) -> None:
        self.store = store
        self.engine_id = engine_id
        self.every_s = every_s
        self.lease_s = lease_s
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="tmops-engine-heartbeat", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        failing_since: float | None = None
        while not self._stop.wait(self.every_s):
            try:
                renewed = self.store.renew_lease(
                    self.engine_id, lease_until=boot_clock() + self.lease_s,
                    now=iso(utc_now()), lease_s=self.lease_s,
                )  # fmt: skip
            except store_errors() as exc:  # a busy or dropped store: the lease runs, try again
                if failing_since is None:  # once an outage, not once a second
                    failing_since = time.monotonic()
                    logger.warning("could not renew the engine lease: {}", exc)
                continue
            if failing_since is not None:
                logger.info("the engine lease is renewed again after {:.1f} s",
                            time.monotonic() - failing_since)  # fmt: skip
                failing_since = None
            if not renewed:
                self.on_lost()
                return


# -- the engine -----------------------------------------------------------------------------------


class Engine:
    """Serves one project's queue until it has been idle for ``idle_exit_s``."""

    def __init__(
        self,
        *,
        config: Config,
        plugins: Plugins,
        events: EventBus,
        store: Store,
        layout: Layout,
        retry_backoff_s: tuple[float, ...] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        lease_s: float = LEASE_S,
    ) -> None:
        if not 0 < heartbeat_s < lease_s:
            raise ValueError(
                f"the heartbeat ({heartbeat_s} s) must be more than 0 and less than the lease "
                f"({lease_s} s)"
            )
        self.config = config
        self.plugins = plugins
        self.events = events
        self.store = store
        self.layout = layout
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        #: set from outside: the drivers cancel their runs
        self.cancel = Flag()
        #: the heartbeat found the lease taken over: stop serving now
        self.lease_lost = threading.Event()
        self.record: EngineRecord | None = None
        #: the signal that asks for an orderly stop; set by the handler, which must take no
        #: lock (it runs between two bytecodes of the main thread, which may hold any)
        self._signal: int | None = None
        self.scheduler = Scheduler(
            config=config, plugins=plugins, events=events, store=store, layout=layout,
            cancel=self.cancel, retry_backoff_s=retry_backoff_s, on_stalled=self._give_back,
        )  # fmt: skip

    def serve(
        self,
        *,
        idle_exit_s: float = 2.0,
        on_idle: Callable[[], None] | None = None,
        handle_signals: bool = False,
        lock_fd: int | None = None,
        on_serving: Callable[[], None] | None = None,
    ) -> bool:
        """Serve the project (lock, lease, take-over, runs); False if another engine serves it.

        ``on_serving`` is called once, when this engine first holds the lease (it is up: the
        ``start`` that spawned it stops waiting).

        ``on_idle`` is called when the engine has decided to stop, while it still holds the
        lock and the lease (a seam for embedding and tests). ``handle_signals`` makes SIGTERM
        and SIGINT stop the engine in order (main thread only). ``lock_fd`` is the engine lock
        handed over by :func:`spawn_engine`.
        """
        ensure_private_dir(self.layout.tmops_dir)
        previous = self._handle_signals() if handle_signals else {}
        try:
            return self._serve(idle_exit_s, on_idle, lock_fd, on_serving)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _serve(
        self,
        idle_exit_s: float,
        on_idle: Callable[[], None] | None,
        lock_fd: int | None,
        on_serving: Callable[[], None] | None,
    ) -> bool:
        served = False
        while True:
            with engine_lock(self.layout, inherited=lock_fd) as acquired:
                lock_fd = None
                # The lock is the fast path; the lease decides. Without the lock, serve only if
                # its holder is the serving engine and that one is hung (its lease expired).
                if not acquired and not serving_engine_hung(self.store):
                    return served
                if not self._acquire_lease():
                    return served
                if not served and on_serving is not None:
                    on_serving()
                served = True
                self._serve_leased(idle_exit_s, on_idle)
            # A run queued while this engine was deciding to stop saw the lock held and started
            # no engine; with the lock released, look once more so it is never stranded.
            if self._stopping() or self.cancel.is_set() or not self.store.queued_runs():
                return True

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop in order, as on ``signum``: what the signal handler does (safe from any thread,
        and from a signal handler: it takes no lock)."""
        if self._signal is None:
            self._signal = signum
        self.scheduler.wakeup.ring()  # one write: no lock

    def _on_lease_lost(self) -> None:
        self.lease_lost.set()
        self.scheduler.wakeup.ring()

    def _stopping(self) -> bool:
        return self._signal is not None or self.lease_lost.is_set()

    def _serve_leased(self, idle_exit_s: float, on_idle: Callable[[], None] | None) -> None:
        record = self.record
        assert record is not None  # noqa: S101 - set by _acquire_lease
        heartbeat = _Heartbeat(
            self.store, record.id, every_s=self.heartbeat_s, lease_s=self.lease_s,
            on_lost=self._on_lease_lost,
        )  # fmt: skip
        heartbeat.start()
        try:
            self._take_over()
            self.scheduler.run(idle_exit_s, engine_id=record.id, stop=self._stopping)
            if self.lease_lost.is_set():
                logger.error(
                    "another engine took this engine's lease (no heartbeat for {} s: was it "
                    "hung?); stopping its agents and leaving the runs to the new engine",
                    self.lease_s,
                )
                self._stop_agents()
            elif self._signal is not None:
                self._stop_in_order(record)
            else:
                self.scheduler.join()
                if on_idle is not None:
                    on_idle()
        finally:
            heartbeat.stop()
            try:
                self.store.release_lease(record.id, now=iso(utc_now()))
            except store_outages() as exc:  # it runs out by itself: the next engine waits
                logger.warning("could not give the engine lease back: {}", exc)

    def _acquire_lease(self) -> bool:
        pid = os.getpid()
        start_time = process_start_time(pid)
        assert start_time is not None  # noqa: S101 - this process runs
        try:
            self.record, taken = self.store.acquire_lease(
                pid=pid, start_time=start_time, boot_id=boot_id(),
                lease_until=boot_clock() + self.lease_s, now=iso(utc_now()), alive=engine_alive,
                lease_s=self.lease_s,
            )  # fmt: skip
        except LeaseHeld as held:
            logger.warning(
                "engine pid {} serves this project (its lease is live); this engine touches "
                "nothing and stops",
                held.holder.pid,
            )
            return False
        for engine in taken:
            logger.warning("engine pid {} is dead; this engine takes over", engine.pid)
        return True

    # -- take-over ---------------------------------------------------------------------------

    def _take_over(self) -> None:
        """Queue again the runs of dead engines, kill what their agents left, record it.

        This engine holds the lease, so every other engine is dead (or hung past its lease,
        which counts as dead): a run of a live engine cannot be here.
        """
        now = iso(utc_now())
        for run in self.store.runs_in_state(RunState.RUNNING):
            # First take the run away: from here on its old engine's writes are refused.
            if self.store.requeue(run.feature, run.run, now=now):
                logger.info("run {}/{} queued again: its engine died", run.feature, run.run)
        self._abandon(
            self.store.live_attempts(),
            "the engine running this attempt died; another engine took the run over",
        )

    def _abandon(self, live: list[AttemptRecord], message: str) -> None:
        """Stop what the agents of ``live`` attempts left and record them abandoned."""
        if not live:
            return
        # By recorded pid and start time, and by the mark: that also finds what the agents
        # started in sessions of their own (Bash tools, daemons).
        killed = reap_orphans(
            [(a.pid, a.start_time) for a in live if a.pid and a.start_time is not None],
            marks=[a.mark for a in live if a.mark],
        )
        if killed:
            logger.warning("killed {} process(es) left by abandoned attempts", len(killed))
        self.store.close_attempts(
            [a.id for a in live], state=AttemptState.ABANDONED, outcome="crashed",
            message=message, now=iso(utc_now()),
        )  # fmt: skip

    def _give_back(self, runs: list[tuple[str, str]]) -> None:
        """Runs whose drivers lost the store mid-run, now that it answers: queued again under
        a new token (a late write of the old driver is refused), their attempts abandoned and
        what their agents left stopped, as a dead engine's; this engine drives them on."""
        now = iso(utc_now())
        for feature, run in runs:
            if self.store.requeue(feature, run, now=now):
                logger.warning("run {}/{} queued again: the store stopped answering while "
                               "it ran", feature, run)  # fmt: skip
        wanted = set(runs)
        self._abandon(
            [a for a in self.store.live_attempts() if (a.feature, a.run) in wanted],
            "the store stopped answering while this attempt ran; the run was queued again",
        )

    # -- stopping ----------------------------------------------------------------------------

    def _handle_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request_stop(signum)

    def _stop_in_order(self, record: EngineRecord) -> None:
        """Queue this engine's runs again, stop its agents, record their attempts interrupted."""
        why = signal.Signals(self._signal).name if self._signal is not None else "a stop request"
        logger.info("{}: stopping in order", why)
        now = iso(utc_now())
        mine = [r for r in self.store.runs_in_state(RunState.RUNNING) if r.engine_id == record.id]
        # First take the runs back: what the drivers write while they wind down is refused.
        for run in mine:
            self.store.requeue(run.feature, run.run, now=now)
        self._stop_agents()
        keys = {(run.feature, run.run) for run in mine}
        interrupted = self.store.close_attempts(
            [a.id for a in self.store.live_attempts() if (a.feature, a.run) in keys],
            state=AttemptState.INTERRUPTED, outcome="interrupted",
            message=f"the engine was stopped ({why}) while this attempt ran; the run was "
            "queued again",
            now=iso(utc_now()),
        )  # fmt: skip
        for run in mine:
            logger.info("run {}/{} queued again: the engine stopped", run.feature, run.run)
        logger.info("{} attempt(s) interrupted; the engine stops", interrupted)

    def _stop_agents(self) -> None:
        """SIGTERM, then SIGKILL, to every agent of this process with its whole tree, again
        and again until the drivers are done (a driver may start a gate meanwhile)."""
        while True:
            stop_all()
            if self.scheduler.join(timeout=_SWEEP_S):
                break
        stop_all()  # one a driver started after the last sweep, before it ended
