"""The engine: admits queued runs under the concurrency limit, in FIFO order, and drives each.

One engine serves a project at a time (it holds ``.tmops/engine.lock``). ``start`` only queues
a run and makes sure an engine is serving, so it returns at once; the engine runs as a
background process (``tmops engine``) that exits when nothing is left to do. On start-up it
reconciles the store with the processes: agents of a dead engine are killed and their runs
queued again, to be resumed from their phase (a completion checkpoint written meanwhile is
adopted).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from loguru import logger

from tmops_core.agents.processes import reap_orphans
from tmops_core.config import Config
from tmops_core.events import EventBus
from tmops_core.orchestration.run import RunDriver
from tmops_core.plugins import Plugins
from tmops_core.store.sqlite import LostOwnership, Store
from tmops_core.workspace.layout import (
    Layout,
    ensure_private_dir,
    iso,
    lstat_checked,
    open_file,
    utc_now,
)

__all__ = ["ENGINE_LOCK", "Engine", "engine_running", "spawn_engine"]

ENGINE_LOCK = "engine.lock"
_POLL_S = 0.02


@contextlib.contextmanager
def _engine_lock(layout: Layout, *, blocking: bool) -> Iterator[bool]:
    fd = open_file(layout.tmops_dir / ENGINE_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def engine_running(layout: Layout) -> bool:
    """Whether an engine process holds this project's engine lock."""
    if lstat_checked(layout.tmops_dir / ENGINE_LOCK) is None:
        return False
    with _engine_lock(layout, blocking=False) as acquired:
        return not acquired


def spawn_engine(layout: Layout, *, config_path: Path | None) -> int | None:
    """Start ``tmops engine`` in the background for this project unless one is serving."""
    if engine_running(layout):
        return None
    logs = layout.tmops_dir / "logs"
    ensure_private_dir(logs)
    argv = [sys.executable, "-m", "tmops_core.surfaces.cli"]
    if config_path is not None:
        argv += ["--config", str(config_path.resolve())]
    argv += ["engine", "--workspace", str(layout.project_root)]
    log = open_file(logs / "engine.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        process = subprocess.Popen(
            argv,
            cwd=layout.project_root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives the CLI call or MCP request that started it
            close_fds=True,
        )
    finally:
        os.close(log)
    return process.pid


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
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.events = events
        self.store = store
        self.layout = layout
        self.backoff = retry_backoff_s
        self.cancel = threading.Event()
        self._threads: dict[tuple[str, str], threading.Thread] = {}

    def serve(self, *, idle_exit_s: float = 2.0, on_idle: Callable[[], None] | None = None) -> bool:
        """Hold the engine lock and drive runs; return False if another engine is serving.

        ``on_idle`` is called when the engine has decided to stop, while it still holds the
        lock (a seam for embedding and tests).
        """
        ensure_private_dir(self.layout.tmops_dir)
        served = False
        while True:
            with _engine_lock(self.layout, blocking=False) as acquired:
                if not acquired:
                    return served
                served = True
                self._serve_locked(idle_exit_s)
                if on_idle is not None:
                    on_idle()
            # A run queued while this engine was deciding to stop saw the lock held and started
            # no engine; with the lock released, look once more so it is never stranded.
            if self.cancel.is_set() or not self.store.queued_runs():
                return True

    def _serve_locked(self, idle_exit_s: float) -> None:
        self.reconcile()
        idle_since = time.monotonic()
        while not self.cancel.is_set():
            self._reap_threads()
            admitted = self._admit()
            if self._threads or admitted:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= idle_exit_s:
                break
            time.sleep(_POLL_S)
        for thread in self._threads.values():
            thread.join()
        self._threads.clear()

    def reconcile(self) -> None:
        """Kill agents a dead engine left behind and queue its runs again."""
        live = self.store.live_attempts()
        orphans = [(a.pid, a.start_time) for a in live if a.pid and a.start_time is not None]
        # The mark also finds what the agents started in sessions of their own (Bash tools).
        killed = reap_orphans(orphans, marks=[a.mark for a in live if a.mark])
        if killed:
            logger.warning("killed {} agent process(es) left by a stopped engine", len(killed))
        now = iso(utc_now())
        for attempt in self.store.live_attempts():
            with contextlib.suppress(LostOwnership):
                self.store.finish_attempt(
                    attempt.id, attempt.feature, attempt.run, attempt.fencing,
                    state="abandoned", outcome="crashed",
                    message="the engine stopped while this attempt ran", session_id=None,
                    cost_usd=attempt.cost_usd, turns=attempt.turns, now=now,
                )  # fmt: skip
        for run in self.store.runs_in_state("running"):
            if run.engine_pid and run.engine_pid != os.getpid() and _alive(run.engine_pid):
                continue
            self.store.requeue(run.feature, run.run, now=now)
            logger.info("run {}/{} queued again after an engine stop", run.feature, run.run)

    def _admit(self) -> bool:
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
                    run.feature, run.run, engine_pid=os.getpid(), now=iso(utc_now())
                )
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
