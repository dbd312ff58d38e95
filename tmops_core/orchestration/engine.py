"""The engine: admits queued runs under the concurrency limit, in FIFO order, and drives each.

One engine serves a project at a time (it holds ``.tmops/engine.lock``). ``start`` only queues
a run and makes sure an engine is serving, so it returns as soon as the engine is up; the engine
runs as a background process (``tmops engine``) that exits when nothing is left to do. On
start-up it reconciles the store with the processes: agents of a dead engine are killed and
their runs queued again, to be resumed from their phase (a completion checkpoint written
meanwhile is adopted).

:func:`spawn_engine` never leaves a failed start silent: the engine tells it through a pipe
once it holds the lock; if it exits first, the error it wrote to ``.tmops/logs/engine.log`` is
raised to the caller as a :class:`~tmops_hookspecs.WorkspaceError`. The lock and the log are
never opened through a symlink.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import select
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
from tmops_core.lifecycle import AttemptState, RunState
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
from tmops_hookspecs import WorkspaceError

__all__ = ["ENGINE_LOCK", "ENGINE_LOG", "Engine", "engine_running", "first_error", "spawn_engine"]

ENGINE_LOCK = "engine.lock"
#: The engine's log, relative to ``.tmops/``.
ENGINE_LOG = Path("logs") / "engine.log"
#: What the engine writes to its ready pipe once it holds the lock.
READY = b"ready\n"
_POLL_S = 0.02
#: How long ``start`` waits for a spawned engine to come up. It only waits that long for an
#: engine that neither takes the lock nor exits (then it lets it go on starting).
_READY_WAIT_S = 15.0
#: How much of the log's new output is read back to find the error of an engine that died.
_LOG_TAIL_BYTES = 64 * 1024
_LOGURU_ERROR = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (?:ERROR|CRITICAL)\s+(.*)$")


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
    """Start ``tmops engine`` in the background for this project unless one is serving, and
    wait (at most ``_READY_WAIT_S``) until it holds the engine lock.

    :return: the pid of the new engine, or ``None`` if one was serving already.
    :raises WorkspaceError: the log cannot be opened (a symlink...), or the engine exited
        before it took the lock: the message is the first error it wrote to its log.
    """
    if engine_running(layout):
        return None
    ensure_private_dir(layout.tmops_dir)
    log_path = layout.tmops_dir / ENGINE_LOG
    ensure_private_dir(log_path.parent)
    ready_r, ready_w = os.pipe()
    argv = [sys.executable, "-m", "tmops_core.surfaces.cli"]
    if config_path is not None:
        argv += ["--config", str(config_path.resolve())]
    argv += ["engine", "--workspace", str(layout.project_root), "--ready-fd", str(ready_w)]
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
                    pass_fds=(ready_w,),
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

    def serve(
        self,
        *,
        idle_exit_s: float = 2.0,
        on_idle: Callable[[], None] | None = None,
        on_serving: Callable[[], None] | None = None,
    ) -> bool:
        """Hold the engine lock and drive runs; return False if another engine is serving.

        ``on_serving`` is called once the lock is held for the first time (the engine is up);
        ``on_idle`` when the engine has decided to stop, while it still holds the lock (seams
        for ``start`` and for embedding and tests).
        """
        ensure_private_dir(self.layout.tmops_dir)
        served = False
        while True:
            with _engine_lock(self.layout, blocking=False) as acquired:
                if not acquired:
                    return served
                if not served and on_serving is not None:
                    on_serving()
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
                    state=AttemptState.ABANDONED, outcome="crashed",
                    message="the engine stopped while this attempt ran", session_id=None,
                    cost_usd=attempt.cost_usd, turns=attempt.turns, now=now,
                )  # fmt: skip
        for run in self.store.runs_in_state(RunState.RUNNING):
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
