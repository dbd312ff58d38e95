"""The engine process: one per project, holding ``.tmops/engine.lock``, started in the
background by ``start``.

``start`` only queues a run and makes sure an engine is serving, so it returns at once; the
engine runs as a background process (``tmops engine``) that exits when nothing is left to do.
On start-up it reconciles the store with the processes: agents of a dead engine are killed and
their runs queued again, to be resumed from their phase (a completion checkpoint written
meanwhile is adopted). Admitting and driving runs is :mod:`tmops_core.orchestration.scheduler`'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from loguru import logger

from tmops_core.agents.processes import reap_orphans
from tmops_core.config import Config
from tmops_core.events import EventBus
from tmops_core.orchestration.scheduler import Scheduler
from tmops_core.plugins import Plugins
from tmops_core.store.sqlite import LostOwnership, Store
from tmops_core.workspace.layout import Layout, ensure_private_dir, iso, utc_now

__all__ = ["ENGINE_LOCK", "Engine", "engine_running", "spawn_engine"]

ENGINE_LOCK = "engine.lock"


@contextlib.contextmanager
def _engine_lock(layout: Layout, *, blocking: bool) -> Iterator[bool]:
    path = layout.tmops_dir / ENGINE_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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
    if not (layout.tmops_dir / ENGINE_LOCK).exists():
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
    log = os.open(
        logs / "engine.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600
    )
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
        self.cancel = threading.Event()
        self.scheduler = Scheduler(
            config=config, plugins=plugins, events=events, store=store, layout=layout,
            cancel=self.cancel, retry_backoff_s=retry_backoff_s,
        )  # fmt: skip

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
                self.reconcile()
                self.scheduler.run(idle_exit_s)
                if on_idle is not None:
                    on_idle()
            # A run queued while this engine was deciding to stop saw the lock held and started
            # no engine; with the lock released, look once more so it is never stranded.
            if self.cancel.is_set() or not self.store.queued_runs():
                return True

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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
