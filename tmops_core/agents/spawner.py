"""The spawner: one long-lived thread that forks every agent, tied to tmops by PDEATHSIG.

The child sets ``PR_SET_PDEATHSIG=SIGKILL`` (Linux ``prctl``) between fork and exec, in a
``preexec_fn`` (:func:`_child_setup`). The kernel sends that signal when the *thread* that
forked the child ends, not the process, so a child forked from a short-lived worker thread
would be killed when that thread returns. tmops therefore forks every agent from one
long-lived daemon thread (``tmops-spawner``, :func:`spawn`), which ends only with the process.
The ``preexec_fn`` runs Python in the child of a multi-threaded parent; it calls only a ctypes
function resolved before the fork and ``os.getppid`` (to close the race where tmops dies
before ``prctl`` runs), so it takes no lock another thread could hold.

This module owns that thread and that ``preexec_fn``, nothing else: what to run, with which
environment, pipes and limits is :mod:`tmops_core.agents.supervisor`'s. It must never fork an agent
from any other thread, never do I/O or take a lock in the ``preexec_fn``, and never signal,
wait for or reap what it spawned.

Linux only: without ``prctl`` the child is not tied to tmops' death (only its own check of
``os.getppid``).
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import cast

__all__ = ["spawn"]

_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


def _load_prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return cast(Callable[..., int], prctl)


_PRCTL = _load_prctl()


def _child_setup(parent: int) -> Callable[[], None]:
    """The ``preexec_fn``: die with the parent. Runs between fork and exec: no locks, no I/O."""
    prctl = _PRCTL

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # tmops died before prctl ran: nobody would kill us
            os.kill(os.getpid(), _SIGKILL)

    return setup


class _Job:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: subprocess.Popen[bytes] | None = None
        self.error: Exception | None = None


class _Spawner:
    """One long-lived thread that forks every agent, so PDEATHSIG fires only when tmops ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def spawn(self, fn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        job = _Job(fn)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="tmops-spawner", daemon=True
                )
                self._thread.start()
        self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        if job.result is None:  # pragma: no cover - _serve sets one of the two
            raise RuntimeError("spawner returned nothing")
        return job.result

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.result = job.fn()
            except Exception as exc:
                job.error = exc
            finally:
                job.done.set()


_spawner = _Spawner()


def _reset_spawner() -> None:  # pragma: no cover - runs in forked children
    global _spawner  # noqa: PLW0603 - a forked child must not wait on its parent's thread
    _spawner = _Spawner()


os.register_at_fork(after_in_child=_reset_spawner)


def spawn(fn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Run ``fn`` (which forks the child, e.g. ``subprocess.Popen``) on the spawner thread;
    return its result or raise its exception."""
    return _spawner.spawn(fn)
