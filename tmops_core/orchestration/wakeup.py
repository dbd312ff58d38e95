"""How the engine waits: one descriptor set that everything the engine must react to rings.

The admission loop sleeps in ``poll`` on two descriptors and a deadline, never on a fixed
interval:

* **A self-pipe**, rung from inside the engine's process: a driver thread ended (a slot is
  free), the heartbeat found the lease taken, a signal asked for a stop. Ringing is one
  non-blocking ``write``, so the signal handler may ring it (it takes no lock).
* **The doorbell**, a FIFO ``.tmops/engine/doorbell`` (0600, in a 0700 folder) rung by other
  processes after they committed a run to the queue (:func:`ring_doorbell`, called by
  :func:`~tmops_core.orchestration.daemon.spawn_engine` when an engine serves already). The
  engine holds it open read-write, so it never reads end-of-file and a ring while no engine
  listens fails at once (``ENXIO``) instead of blocking.
* **The next deadline**: the caller's timers (idle exit, a due time) and a long safety timeout.

A ring carries no data: on every wake the loop re-reads the queue, so a ring that is lost (the
engine was between two waits, the pipe was full) costs nothing but the safety timeout, and a
run committed before the engine opened the doorbell is in its first read of the queue.

It never reads the store and never decides what to do on a wake.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tmops_core.workspace.layout import open_dir
from tmops_hookspecs import WorkspaceError

__all__ = ["DOORBELL", "Flag", "Subscribable", "Wakeup", "ring_doorbell", "subscribe_all"]

#: The doorbell FIFO, relative to ``.tmops/``.
DOORBELL = Path("engine") / "doorbell"
_FIFO_MODE = 0o600


class Wakeup:
    """The engine's self-pipe and doorbell, and a wait on both with a timeout.

    ``wakeups`` counts the returns of :meth:`wait` (a test hook: a loop that spins shows up as
    a count, not as a time).
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Closed with the object, never before: a ring after the loop ended (a late signal)
        # must not write to a descriptor number reused meanwhile.
        self._close_pipe = weakref.finalize(self, _close_fds, self._read, self._write)
        self._doorbell: int | None = None
        self.wakeups = 0

    def open_doorbell(self, tmops_dir: Path) -> None:
        """Listen on the project's doorbell (made if missing); before the first queue read."""
        if self._doorbell is not None:
            return
        folder = open_dir(tmops_dir / DOORBELL.parent, create=True, root=tmops_dir)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkfifo(DOORBELL.name, _FIFO_MODE, dir_fd=folder)
            fd = os.open(
                DOORBELL.name,
                os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=folder,
            )
        finally:
            os.close(folder)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"{tmops_dir / DOORBELL} is not a FIFO")
        os.fchmod(fd, _FIFO_MODE)
        self._doorbell = fd

    def close_doorbell(self) -> None:
        fd, self._doorbell = self._doorbell, None
        if fd is not None:
            os.close(fd)

    def ring(self) -> None:
        """Wake the waiting loop from this process (any thread, or a signal handler)."""
        with contextlib.suppress(OSError):  # full: it is rung already
            os.write(self._write, b"x")

    def wait(self, timeout_s: float | None) -> None:
        """Return when rung (a ring before the call counts), or after ``timeout_s`` seconds."""
        poller = select.poll()
        fds = [self._read] if self._doorbell is None else [self._read, self._doorbell]
        for fd in fds:
            poller.register(fd, select.POLLIN)
        poller.poll(None if timeout_s is None else max(0, int(timeout_s * 1000) + 1))
        for fd in fds:
            _drain(fd)
        self.wakeups += 1

    def close(self) -> None:
        self.close_doorbell()
        self._close_pipe()


class Flag(threading.Event):
    """A :class:`threading.Event` that also calls its subscribers when set (the engine's
    cancel: the loop and the attempts waiting on other things wake up to it)."""

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when set (at once if set already); returns the call that stops
        it."""
        with self._guard:
            self._subscribers.append(callback)
        if self.is_set():
            callback()

        def unsubscribe() -> None:
            with self._guard, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def set(self) -> None:
        super().set()
        with self._guard:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback()


class Subscribable(Protocol):
    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]: ...


def subscribe_all(wake: Callable[[], None], *sources: Subscribable) -> Callable[[], None]:
    """Call ``wake()`` on a change of any of ``sources``; returns the call that stops it all."""
    stops = [source.subscribe(wake) for source in sources]

    def stop() -> None:
        for unsubscribe in stops:
            unsubscribe()

    return stop


def ring_doorbell(tmops_dir: Path) -> bool:
    """Tell the engine listening on the project's doorbell that the queue changed; False when
    no engine listens (nothing to wake: the next engine reads the queue when it starts)."""
    try:
        folder = open_dir(tmops_dir / DOORBELL.parent, root=tmops_dir)
    except (OSError, ValueError, WorkspaceError):  # no engine folder yet, or a link
        return False
    try:
        fd = os.open(
            DOORBELL.name,
            os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
            dir_fd=folder,
        )
    except OSError:  # ENXIO: nobody listens; ENOENT: never made; ELOOP: a link
        return False
    finally:
        os.close(folder)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        os.write(fd, b"x")
    except BlockingIOError:
        pass  # full: rung many times already, and the engine will read the queue
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 512):
            pass
