"""Starting an engine in the background for a project, from ``start`` (or a status read that
takes a dead engine's run over): the lock handed to it, the wait until it serves, the first
error of one that died at start-up; or, when an engine serves already, a ring of its doorbell.

Kept apart from :mod:`tmops_core.orchestration.daemon` so that ``start`` never imports the
engine it starts (its scheduler, drivers, judge and watcher). It never admits or drives a run.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import subprocess
import sys
import threading
from pathlib import Path

from tmops_core.log import logger
from tmops_core.orchestration.liveness import (
    open_lock,
    serving_engine_alive,
    serving_engine_hung,
    try_lock,
)
from tmops_core.orchestration.wakeup import ring_doorbell
from tmops_core.store import Store
from tmops_core.workspace.layout import Layout, ensure_private_dir, open_file
from tmops_hookspecs import WorkspaceError

__all__ = ["ENGINE_LOG", "READY", "first_error", "spawn_engine"]

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
