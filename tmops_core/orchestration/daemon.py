"""The engine process: its identity and lease, taking over from a dead engine, stopping in
order on a signal, and starting one in the background.

``start`` only queues a run and makes sure an engine serves the project, so it returns at
once; the engine runs as a background process (``tmops engine``) that exits when nothing is
left to do. Admitting and driving runs is :mod:`tmops_core.orchestration.scheduler`'s.

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

import itertools
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
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
    open_lock,
    run_engine_alive,
    serving_engine_alive,
    serving_engine_hung,
    try_lock,
)
from tmops_core.orchestration.scheduler import Scheduler
from tmops_core.orchestration.wakeup import Flag, ring_doorbell
from tmops_core.plugins import Plugins
from tmops_core.store import EngineRecord, LeaseHeld, Store
from tmops_core.workspace.layout import (
    Layout,
    ensure_private_dir,
    iso,
    open_file,
    utc_now,
)
from tmops_hookspecs import WorkspaceError

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

#: The engine's log, relative to ``.tmops/``.
ENGINE_LOG = Path("logs") / "engine.log"
#: What the engine writes to its ready pipe once it serves (holds the lease).
READY = b"ready\n"
#: How long ``start`` waits for a spawned engine to come up. It only waits that long for an
#: engine that neither serves nor exits (then it lets it go on starting).
_READY_WAIT_S = 15.0
#: How much of the log's new output is read back to find the error of an engine that died.
_LOG_TAIL_BYTES = 64 * 1024
_LOGURU_ERROR = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (?:ERROR|CRITICAL)\s+(.*)$")
#: How often an orderly stop sweeps for agents while the drivers wind down.
_SWEEP_S = 0.05


def spawn_engine(
    layout: Layout, *, config_path: Path | None, store: Store | None = None
) -> int | None:
    """Start ``tmops engine`` in the background for this project unless one is serving; if
    one is, ring its doorbell (the caller committed a change of the queue).

    The lock is taken here and handed to the new process (an inherited descriptor), so it is
    held from this moment on: a second call meanwhile (another ``start``, a status poll)
    starts nothing. With ``store``, a live engine in the store also counts as serving, and a
    hung one (its lease expired, see :func:`engine_alive`) does not, though it holds the lock:
    the new engine takes over without the lock.
    """
    ensure_private_dir(layout.tmops_dir)
    fd = open_lock(layout)
    try:
        if try_lock(fd):
            if store is not None and serving_engine_alive(store):
                ring_doorbell(layout.tmops_dir)
                return None
            handed = [fd]
        elif store is not None and serving_engine_hung(store):
            handed = []
        else:
            ring_doorbell(layout.tmops_dir)  # it serves: the queue changed
            return None
        log_path = layout.tmops_dir / ENGINE_LOG
        ensure_private_dir(log_path.parent)
        argv = [sys.executable, "-m", "tmops_core.surfaces.cli"]
        if config_path is not None:
            argv += ["--config", str(config_path.resolve())]
        argv += ["engine", "--workspace", str(layout.project_root)]
        argv += [arg for handed_fd in handed for arg in ("--lock-fd", str(handed_fd))]
        ready_r, ready_w = os.pipe()
        argv += ["--ready-fd", str(ready_w)]
        try:
            log = open_file(log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
            try:
                offset = os.fstat(log).st_size  # the engine's own output starts here
                try:
                    process = subprocess.Popen(
                        argv,
                        cwd=layout.project_root,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,  # outlives the CLI call or MCP request
                        close_fds=True,
                        pass_fds=(*handed, ready_w),
                    )
                except OSError as exc:
                    raise WorkspaceError(f"cannot start the engine {argv[0]}: {exc}") from exc
                os.close(ready_w)
                ready_w = -1
                _await_engine(process, ready_r, log, offset, log_path)
            finally:
                os.close(log)
        finally:
            os.close(ready_r)
            if ready_w >= 0:
                os.close(ready_w)
    finally:
        os.close(fd)
    # Reap it when it exits: a long-lived caller (the MCP server) must not collect zombies.
    threading.Thread(
        target=process.wait, name=f"tmops-engine-reaper-{process.pid}", daemon=True
    ).start()
    return process.pid


def _await_engine(
    process: subprocess.Popen[bytes], ready_r: int, log: int, offset: int, log_path: Path
) -> None:
    """Return once the engine said it holds the lock (or is still starting after the wait);
    raise with its first error if it exited without taking it."""
    poller = select.poll()
    poller.register(ready_r, select.POLLIN)
    if not poller.poll(_READY_WAIT_S * 1000):
        logger.warning("the engine (pid {}) is still starting; see {}", process.pid, log_path)
        return
    if os.read(ready_r, len(READY)) == READY:
        return
    # End of file: the engine exited (or closed the pipe) before it held the lock.
    try:
        returncode = process.wait(timeout=_READY_WAIT_S)
    except subprocess.TimeoutExpired:
        return
    if returncode == 0:  # it found another engine serving the project
        return
    output = os.pread(log, _LOG_TAIL_BYTES, offset).decode("utf-8", errors="replace")
    raise WorkspaceError(
        f"the engine exited at start-up (exit code {returncode}): {first_error(output)}",
        hint=f"its whole output is in {log_path}",
    )


def first_error(output: str) -> str:
    """The first error in an engine's output: a user error as the CLI prints it (with its hint),
    a logged error, or the exception line of a traceback; else its last line."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("Error: "):
            more = itertools.takewhile(lambda part: part.startswith("  "), lines[index + 1 :])
            return " ".join([line.removeprefix("Error: "), *(part.strip() for part in more)])
        logged = _LOGURU_ERROR.match(line)
        if logged:
            return logged.group(1)
        if line.startswith("Traceback (most recent call last)"):
            raised = next((part for part in lines[index + 1 :] if not part.startswith(" ")), None)
            if raised is not None:
                return raised
    return lines[-1] if lines else "it wrote nothing"


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
        while not self._stop.wait(self.every_s):
            try:
                renewed = self.store.renew_lease(
                    self.engine_id, lease_until=boot_clock() + self.lease_s, now=iso(utc_now())
                )
            except sqlite3.Error as exc:  # a busy store: the lease still runs, try again
                logger.warning("could not renew the engine lease: {}", exc)
                continue
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
            cancel=self.cancel, retry_backoff_s=retry_backoff_s,
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
            self.store.release_lease(record.id, now=iso(utc_now()))

    def _acquire_lease(self) -> bool:
        pid = os.getpid()
        start_time = process_start_time(pid)
        assert start_time is not None  # noqa: S101 - this process runs
        try:
            self.record, taken = self.store.acquire_lease(
                pid=pid, start_time=start_time, boot_id=boot_id(),
                lease_until=boot_clock() + self.lease_s, now=iso(utc_now()), alive=engine_alive,
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
        live = self.store.live_attempts()
        if not live:
            return
        # By recorded pid and start time, and by the mark: that also finds what the agents
        # started in sessions of their own (Bash tools, daemons).
        killed = reap_orphans(
            [(a.pid, a.start_time) for a in live if a.pid and a.start_time is not None],
            marks=[a.mark for a in live if a.mark],
        )
        if killed:
            logger.warning("killed {} process(es) left by a dead engine's agents", len(killed))
        self.store.close_attempts(
            [a.id for a in live], state=AttemptState.ABANDONED, outcome="crashed",
            message="the engine running this attempt died; another engine took the run over",
            now=iso(utc_now()),
        )  # fmt: skip

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
