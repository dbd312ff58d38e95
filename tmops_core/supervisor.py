"""Agent processes: the only place tmops starts one.

Every agent runs from an argv list (never a shell) in a session and process group of its own,
with an allowlisted environment (:func:`build_env`), and is tied to tmops three ways:

* **tmops dies, the agent dies.** The child sets ``PR_SET_PDEATHSIG=SIGKILL`` (Linux ``prctl``)
  between fork and exec, in a ``preexec_fn``. The kernel sends that signal when the *thread*
  that forked the child ends, not the process, so a child forked from a short-lived worker
  thread would be killed when that thread returns. tmops therefore forks every agent from one
  long-lived daemon thread (``tmops-spawner``), which ends only with the process. The
  ``preexec_fn`` runs Python in the child of a multi-threaded parent; it calls only a ctypes
  function resolved before the fork and ``os.getppid`` (to close the race where tmops dies
  before ``prctl`` runs), so it takes no lock another thread could hold.
* **Limits.** A watchdog thread stops the agent after ``Limits.wall_clock_s``, or after
  ``Limits.idle_s`` without a byte on stdout or stderr.
* **The whole tree goes.** Stopping sends SIGTERM (then SIGCONT, so a stopped process can act
  on it) to the process group AND to every descendant found through ``/proc/*/stat`` ppid links,
  collected BEFORE the first signal (once the parent is gone, its children are re-parented and
  can no longer be found by ppid). Claude Code's Bash tool runs each command in a session of its
  own, which ``killpg`` alone would miss. After ``term_grace_s`` whatever is left gets SIGKILL.
  Every agent also carries a random mark in its environment (``TMOPS_AGENT_MARK``); processes
  that inherited it are found even after they were re-parented (a double-forked daemon, or the
  Bash-tool commands of an agent that PDEATHSIG killed), by the same sweep and by
  :func:`reap_orphans` at the next start-up. Signals go through pidfds after a start-time check,
  so a recycled pid is never hit.

The same sweep runs when an agent exits by itself: what it left running in its group or with
its mark (a ``sleep 999 &``, a dev server) is terminated, so a finished phase leaves no process
behind and the output pipes reach end-of-file. Output is read by a background thread (stdout
lines go to ``on_line``; both streams go to the log file, 0600, one write per line); the
direct child is reaped only after that sweep, so its pid and process group id cannot be reused
while tmops still signals them. An orderly exit of tmops stops every running agent the same way
(:func:`stop_all`, registered with :mod:`atexit`).

Linux only: it needs ``/proc``, ``prctl`` and pidfds (kernel 5.3 or later; without pidfds the
watchdog falls back to polling and signals are checked by start time only).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import math
import os
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple, Self, cast

import attrs
from loguru import logger

from tmops_hookspecs import ProviderError, WorkspaceError

from .workspace import DIR_MODE, FILE_MODE

__all__ = [
    "BASE_ENV_ALLOWLIST",
    "BASE_ENV_PREFIXES",
    "MARK_ENV",
    "STDERR_TAIL_BYTES",
    "STOP_CANCELLED",
    "STOP_IDLE",
    "STOP_STOPPED",
    "STOP_WALL_CLOCK",
    "AgentProcess",
    "Limits",
    "ProcessOutcome",
    "build_env",
    "kill_process_tree",
    "process_alive",
    "process_start_time",
    "reap_orphans",
    "stop_all",
]

#: Variables passed from tmops' own environment to every agent, by exact name.
BASE_ENV_ALLOWLIST: tuple[str, ...] = (
    "HOME",
    "PATH",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
    "TZ",
    "CLAUDE_CONFIG_DIR",
    "IS_SANDBOX",
    "NO_COLOR",
)
#: Variables passed to every agent by prefix (Claude Code's settings, gateways, locale).
BASE_ENV_PREFIXES: tuple[str, ...] = ("ANTHROPIC_", "CLAUDE_CODE_", "LC_")
#: The variable carrying an agent's mark; its descendants inherit it, so they can be found.
MARK_ENV = "TMOPS_AGENT_MARK"
#: How much of the end of stderr a :class:`ProcessOutcome` keeps.
STDERR_TAIL_BYTES = 4096

STOP_WALL_CLOCK = "wall_clock"
STOP_IDLE = "idle"
STOP_CANCELLED = "cancelled"
STOP_STOPPED = "stopped"

_READ_CHUNK = 65536
#: A "line" longer than this is delivered in pieces rather than held in memory.
_MAX_LINE_BYTES = 32 * 1024 * 1024
#: After the process tree is gone, how long the reader may take to reach end-of-file before it
#: is told to take what is buffered and stop (a process that escaped every sweep holds a pipe).
_DRAIN_S = 1.0
_DRAIN_MAX_S = 10.0
_KILL_WAIT_S = 2.0
#: How long a sweep waits for processes in the middle of exec to show their environment.
_EXEC_SETTLE_S = 0.2
_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def build_env(
    extra: Mapping[str, str],
    *,
    allow: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of an agent: the allowlisted part of ``environ``, then ``extra`` on top.

    ``environ`` defaults to ``os.environ``. A variable passes if its name is in
    :data:`BASE_ENV_ALLOWLIST` or in ``allow``, or starts with one of
    :data:`BASE_ENV_PREFIXES`; an ``allow`` entry ending in ``*`` is a prefix (``NODE_*``).
    ``extra`` (the provider's ``Invocation.env``, then the config's env) always wins. Nothing
    else leaks: credentials such as ``AWS_SECRET_ACCESS_KEY`` or ``GITHUB_TOKEN`` stay behind
    unless a config names them.
    """
    source = os.environ if environ is None else environ
    names = set(BASE_ENV_ALLOWLIST)
    prefixes = list(BASE_ENV_PREFIXES)
    for entry in allow:
        if entry.endswith("*"):
            if entry[:-1]:
                prefixes.append(entry[:-1])
        else:
            names.add(entry)
    prefix_tuple = tuple(prefixes)
    env = {
        name: value
        for name, value in source.items()
        if name in names or name.startswith(prefix_tuple)
    }
    for name, value in extra.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ProviderError(f"invalid environment variable name {name!r} for the agent")
        if not isinstance(value, str) or "\0" in value:
            raise ProviderError(f"environment variable {name} for the agent must be a string")
        env[name] = value
    return env


# --------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------


class _Stat(NamedTuple):
    pid: int
    state: str
    ppid: int
    pgid: int
    start_time: int

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X", "x")


def _read_stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the LAST ")".
    end = data.rfind(b")")
    fields = data[end + 2 :].split()
    try:
        # fields[0] is field 3 (state): field N of proc(5) is fields[N - 3].
        return _Stat(pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _all_stats() -> dict[int, _Stat]:
    stats: dict[int, _Stat] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return stats
    for name in names:
        if name.isdigit():
            info = _read_stat(int(name))
            if info is not None:
                stats[info.pid] = info
    return stats


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, ``/proc/<pid>/stat`` field 22), or None."""
    info = _read_stat(pid)
    return info.start_time if info is not None else None


def process_alive(pid: int, start_time: int) -> bool:
    """Whether the process ``pid`` that started at ``start_time`` still runs (zombies do not).

    The start time makes this safe against pid reuse: a new process with the same pid has a
    different start time.
    """
    info = _read_stat(pid)
    return info is not None and info.start_time == start_time and info.alive


def _descendants(roots: Iterable[int], stats: Mapping[int, _Stat]) -> set[int]:
    children: dict[int, list[int]] = {}
    for info in stats.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _marked(
    marks: Collection[str], stats: Mapping[int, _Stat], since: int
) -> tuple[set[int], set[int]]:
    """Processes started at or after ``since`` whose environment carries one of ``marks``.

    Also returns the processes whose environment could not be judged yet: for a moment inside
    ``execve`` (after close-on-exec, before the new stack is set up) ``/proc/<pid>/environ``
    reads empty.
    """
    found: set[int] = set()
    unsettled: set[int] = set()
    if not marks:
        return found, unsettled
    needles = {f"{MARK_ENV}={mark}".encode() for mark in marks}
    for info in stats.values():
        if info.start_time < since or not info.alive or 2 in (info.pid, info.ppid):
            continue  # older than the agent, a zombie, or a kernel thread
        try:
            with open(f"/proc/{info.pid}/environ", "rb") as file:
                data = file.read()
        except OSError:
            continue  # gone, or another user's
        if not data:
            unsettled.add(info.pid)
        elif not needles.isdisjoint(data.split(b"\0")):
            found.add(info.pid)
    return found, unsettled


def _protected(stats: Mapping[int, _Stat]) -> set[int]:
    """tmops itself, its ancestors, init and kthreadd: never signalled by a sweep."""
    protected = {0, 1, 2}
    pid = os.getpid()
    while pid not in protected:
        protected.add(pid)
        info = stats.get(pid)
        if info is None:
            break
        pid = info.ppid
    return protected


# --------------------------------------------------------------------------------------------
# Signals and process trees
# --------------------------------------------------------------------------------------------


def _signal(pid: int, start_time: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``start_time``."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:  # pragma: no cover - kernels before 5.3
        if not process_alive(pid, start_time):
            return False
        try:
            os.kill(pid, sig)
        except OSError:
            return False
        return True
    try:
        # The pidfd pins the process: if the start time matches after opening it, the signal
        # cannot reach a newer process that reused the pid.
        pidfd = cast(int, pidfd_open(pid))
    except OSError:
        return False
    try:
        if not process_alive(pid, start_time):
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except OSError as exc:
        logger.debug("tmops supervisor: killpg({}, {}) failed: {}", pgid, sig, exc)


def _terminate(
    roots: Mapping[int, int],
    *,
    grace_s: float,
    groups: Collection[int] = (),
    use_killpg: bool = False,
    marks: Collection[str] = (),
    marks_since: int = 0,
) -> dict[int, int]:
    """TERM, grace, KILL: every process under ``roots`` (pid -> start time), in ``groups``,
    or carrying one of ``marks``. Returns every process found (pid -> start time).

    ``use_killpg`` also signals ``groups`` with ``killpg``, atomic against forks; only safe
    while the group id cannot be reused, i.e. while its leader is an unreaped child of ours.
    """
    known: dict[int, int] = {}
    exec_pending: set[int] = set()
    group_set = set(groups) - {0, 1, os.getpgrp()}

    def scan() -> dict[int, _Stat]:
        stats = _all_stats()
        anchors = [
            pid
            for pid, start in (*roots.items(), *known.items())
            if (info := stats.get(pid)) is not None and info.start_time == start
        ]
        found = set(anchors) | _descendants(anchors, stats)
        found |= {info.pid for info in stats.values() if info.pgid in group_set}
        marked, unsettled = _marked(marks, stats, marks_since)
        found |= marked
        exec_pending.clear()
        exec_pending.update(unsettled)
        for pid in found - _protected(stats):
            known[pid] = stats[pid].start_time
        return stats

    def alive(stats: Mapping[int, _Stat]) -> list[int]:
        return [
            pid
            for pid, start in known.items()
            if (info := stats.get(pid)) is not None and info.start_time == start and info.alive
        ]

    def send(sig: int, pids: Iterable[int]) -> None:
        if use_killpg:
            for pgid in group_set:
                _killpg(pgid, sig)
        for pid in pids:
            _signal(pid, known[pid], sig)

    # Collect first: once a parent is gone, its children cannot be found by ppid any more.
    stats = scan()
    settle_until = time.monotonic() + _EXEC_SETTLE_S
    while exec_pending and time.monotonic() < settle_until:
        time.sleep(0.002)  # a process in the middle of exec may carry a mark: look again
        stats = scan()
    living = alive(stats)
    if not living:
        return known
    logger.debug("tmops supervisor: terminating {} process(es): {}", len(living), living)
    send(signal.SIGTERM, living)
    send(signal.SIGCONT, living)  # a stopped process acts on SIGTERM only once continued
    for sig, wait_s in ((signal.SIGTERM, grace_s), (_SIGKILL, _KILL_WAIT_S)):
        deadline = time.monotonic() + wait_s
        delay = 0.002
        while True:
            # Rescan each round: children forked during the grace period are found too.
            living = alive(scan())
            if not living:
                return known
            if sig == _SIGKILL:
                send(_SIGKILL, living)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        if sig == signal.SIGTERM:
            logger.info(
                "tmops supervisor: {} process(es) still running {} s after SIGTERM, sending "
                "SIGKILL: {}",
                len(living),
                grace_s,
                living,
            )
            send(_SIGKILL, living)
    logger.warning("tmops supervisor: processes survived SIGKILL: {}", living)
    return known


def kill_process_tree(pid: int, *, grace_s: float = 5.0) -> None:
    """Terminate ``pid`` with its process group and every descendant (in any session).

    SIGTERM to all of them (descendants collected first, through ``/proc`` ppid links), up to
    ``grace_s`` for them to exit, then SIGKILL to the rest. Returns when they are gone.
    Nothing happens if ``pid`` does not exist. tmops itself and its ancestors are never hit.
    """
    info = _read_stat(pid)
    if info is None or not info.alive:
        return
    groups = (pid,) if info.pgid == pid else ()
    _terminate({pid: info.start_time}, grace_s=grace_s, groups=groups)


def reap_orphans(
    records: Iterable[tuple[int, int]],
    *,
    grace_s: float = 5.0,
    marks: Iterable[str] = (),
) -> list[int]:
    """Kill the agents a previous tmops process recorded that still run, with their trees.

    ``records`` are ``(pid, start_time)`` pairs; a pid that is gone, or now belongs to another
    process (a different start time), is left alone. ``marks`` are agent marks
    (:attr:`AgentProcess.mark`): every process still carrying one is killed too, which finds the
    re-parented descendants of an agent that is itself gone. All are terminated together (one
    grace period). Returns the recorded pids that were alive, then the pids found by mark.
    """
    roots: dict[int, int] = {}
    for pid, start_time in records:
        if pid not in roots and pid != os.getpid() and process_alive(pid, start_time):
            roots[pid] = start_time
    mark_set = frozenset(marks)
    if not roots and not mark_set:
        return []
    stats = _all_stats()
    groups = [pid for pid in roots if (info := stats.get(pid)) is not None and info.pgid == pid]
    marked = _marked(mark_set, stats, 0)[0] - _protected(stats) - set(roots)
    known = _terminate(roots, grace_s=grace_s, groups=groups, marks=mark_set)
    killed = [pid for pid in roots if pid in known] + sorted(marked & set(known))
    if killed:
        logger.info(
            "tmops supervisor: reaped {} orphaned agent process(es): {}", len(known), killed
        )
    return killed


# --------------------------------------------------------------------------------------------
# Spawning
# --------------------------------------------------------------------------------------------


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


def _ensure_private_parents(directory: Path) -> None:
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
            os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask


def _open_log(path: Path) -> int:
    try:
        _ensure_private_parents(path.parent)
        fd = os.open(
            path,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
            FILE_MODE,
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WorkspaceError(
                f"the agent log {path} is a symlink; tmops does not write through links",
                hint=f"remove the link (`rm {path}`) and try again",
            ) from exc
        raise WorkspaceError(f"cannot open the agent log {path}: {exc.strerror}") from exc
    with contextlib.suppress(OSError):
        os.fchmod(fd, FILE_MODE)
    return fd


def _ms(seconds: float) -> int | None:
    """A ``poll`` timeout: None blocks, and a positive wait never rounds down to a busy 0."""
    if math.isinf(seconds):
        return None
    return max(0, math.ceil(seconds * 1000))


def _drain_pipe(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


_live_lock = threading.Lock()
_live_agents: weakref.WeakSet[AgentProcess] = weakref.WeakSet()


def stop_all(reason: str = STOP_STOPPED) -> list[ProcessOutcome]:
    """Stop every agent this process runs, all at once (one grace period); return outcomes.

    Registered with :mod:`atexit`, so an orderly exit of tmops ends its agents with SIGTERM
    and a grace period; a killed tmops relies on PDEATHSIG and :func:`reap_orphans`.
    """
    with _live_lock:
        agents = list(_live_agents)
    for agent in agents:
        agent.request_stop(reason)
    return [outcome for agent in agents if (outcome := agent.wait()) is not None]


atexit.register(stop_all)


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"Limits.{attribute.name} must be more than 0 seconds, got {value!r}")


def _not_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"Limits.{attribute.name} must be 0 seconds or more, got {value!r}")


@attrs.frozen
class Limits:
    """How long an agent may run (``math.inf`` for no limit)."""

    wall_clock_s: float = attrs.field(validator=_positive)
    #: No output on stdout or stderr for this long stops the agent.
    idle_s: float = attrs.field(validator=_positive)
    #: Between SIGTERM and SIGKILL.
    term_grace_s: float = attrs.field(default=5.0, validator=_not_negative)


@attrs.frozen
class ProcessOutcome:
    """How an agent process ended."""

    #: Exit status; negative: killed by that signal (the subprocess convention).
    returncode: int
    #: None when it exited by itself, else why tmops stopped it: ``wall_clock``, ``idle``,
    #: ``cancelled``, ``stopped`` (or what the caller passed to :meth:`AgentProcess.stop`).
    stop_reason: str | None
    #: The last :data:`STDERR_TAIL_BYTES` of stderr, decoded.
    stderr_tail: str
    pid: int
    #: ``/proc/<pid>/stat`` field 22, for orphan checks (:func:`process_alive`).
    start_time: int
    duration_s: float
    #: stdout lines read.
    lines: int

    @property
    def timed_out(self) -> bool:
        return self.stop_reason in (STOP_WALL_CLOCK, STOP_IDLE)


# --------------------------------------------------------------------------------------------
# The agent process
# --------------------------------------------------------------------------------------------


class _Stream:
    __slots__ = ("buffer", "is_err")

    def __init__(self, *, is_err: bool) -> None:
        self.is_err = is_err
        self.buffer = bytearray()


class _StdinFeeder:
    """Writes the agent's stdin text without blocking the reader, then closes the pipe."""

    def __init__(self, file: IO[bytes] | None, text: str | None, poller: select.poll) -> None:
        self._file = file
        self._poller = poller
        self._pending = memoryview((text or "").encode("utf-8"))
        self.fd: int | None = None
        if file is None:
            return
        if not self._pending:
            file.close()
            return
        self.fd = file.fileno()
        os.set_blocking(self.fd, False)
        poller.register(self.fd, select.POLLOUT)

    @property
    def open(self) -> bool:
        return self.fd is not None

    def write(self, mask: int) -> None:
        if self.fd is None:  # pragma: no cover - only polled while open
            return
        if mask & (select.POLLERR | select.POLLHUP):
            self.close()  # the agent closed its stdin
            return
        try:
            written = os.write(self.fd, self._pending[:_READ_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the agent does not want the rest
            self.close()
            return
        self._pending = self._pending[written:]
        if not self._pending:
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            self._poller.unregister(self.fd)
            self.fd = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()


class AgentProcess:
    """One agent process, its output readers and its watchdog.

    ``start()`` spawns it and returns at once; ``wait()`` and ``stop()`` may be called from any
    thread, concurrently. ``on_line`` receives every stdout line (decoded as UTF-8 with
    replacement, newline stripped) on the reader thread; it must return promptly, must not call
    :meth:`stop` or :meth:`wait` (use :meth:`request_stop`), and an exception it raises is
    logged once and ignored. ``env`` is passed as given (build it with :func:`build_env`), plus
    :data:`MARK_ENV`.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        limits: Limits,
        on_line: Callable[[str], None],
        stdin: str | None = None,
        mark: str | None = None,
    ) -> None:
        if isinstance(argv, str) or not argv:
            raise ProviderError("the agent command must be a non-empty list of arguments")
        for arg in argv:
            if not isinstance(arg, str) or "\0" in arg:
                raise ProviderError(f"agent arguments must be strings without NUL, got {arg!r}")
        self.argv: tuple[str, ...] = tuple(argv)
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self.limits = limits
        #: Inherited by the agent's descendants through :data:`MARK_ENV`; keep it with the pid
        #: to reap them after a crash (:func:`reap_orphans`).
        self.mark = mark or uuid.uuid4().hex
        self._env = dict(env)
        self._on_line = on_line
        self._stdin = stdin

        self._lock = threading.Lock()
        self._popen: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._start_time = 0
        self._started_at = 0.0
        self._ended_at: float | None = None
        self._last_output = 0.0
        self._stop_request: str | None = None
        self._stop_reason: str | None = None
        self._outcome: ProcessOutcome | None = None
        self._done = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._monitor_thread: threading.Thread | None = None
        self._pidfd: int | None = None
        self._wake_r = self._wake_w = -1
        self._abort_r = self._abort_w = -1
        self._log_fd = -1
        self._log_failed = False
        self._lines = 0
        self._stderr_tail = bytearray()
        self._callback_errors = 0
        self._long_line_warned = False

    # -- public ----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        self._check_started()
        return self._pid

    @property
    def start_time(self) -> int:
        """``/proc/<pid>/stat`` field 22; record it with the pid for :func:`process_alive`."""
        self._check_started()
        return self._start_time

    @property
    def running(self) -> bool:
        """Whether the agent process itself still runs (False before start and after exit)."""
        if self._popen is None or self._done.is_set():
            return False
        return process_alive(self._pid, self._start_time)

    def start(self) -> int:
        """Spawn the agent and its reader and watchdog threads; return its pid.

        :raises ProviderError: the program is missing or cannot be executed.
        :raises WorkspaceError: the working directory or the log file is unusable.
        """
        with self._lock:
            if self._popen is not None:
                raise RuntimeError("this agent process was already started")
            executable = self._resolve_program()
            if not self.cwd.is_dir():
                raise WorkspaceError(
                    f"cannot start {self.argv[0]}: the working directory {self.cwd} does not "
                    "exist or is not a directory"
                )
            self._log_fd = _open_log(self.log_path)
            env = {**self._env, MARK_ENV: self.mark}
            try:
                popen = _spawner.spawn(lambda: self._popen_now(executable, env))
            except OSError as exc:
                _close(self._log_fd)
                self._log_fd = -1
                raise self._spawn_error(exc) from exc
            except subprocess.SubprocessError as exc:
                _close(self._log_fd)
                self._log_fd = -1
                raise ProviderError(f"cannot start {self.argv[0]}: {exc}") from exc
            self._popen = popen
            self._pid = popen.pid
            # The child is not reaped before the monitor says so: its /proc entry is there.
            self._start_time = process_start_time(popen.pid) or 0
            self._started_at = self._last_output = time.monotonic()
            with contextlib.suppress(OSError, AttributeError):
                self._pidfd = os.pidfd_open(popen.pid)
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._abort_r, self._abort_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._io_thread = threading.Thread(
                target=self._io_main, name=f"tmops-agent-io-{popen.pid}", daemon=True
            )
            self._monitor_thread = threading.Thread(
                target=self._monitor_main, name=f"tmops-agent-watch-{popen.pid}", daemon=True
            )
            with _live_lock:
                _live_agents.add(self)
            self._io_thread.start()
            self._monitor_thread.start()
        logger.debug("tmops supervisor: started {} as pid {}", self.argv[0], self._pid)
        return self._pid

    def request_stop(self, reason: str = STOP_STOPPED) -> None:
        """Ask the watchdog to stop the agent and return at once (safe from ``on_line``).

        The first reason wins; nothing happens once the agent has exited.
        """
        self._check_started()
        with self._lock:
            if self._stop_request is not None or self._done.is_set():
                return
            self._stop_request = reason
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def stop(self, reason: str = STOP_STOPPED) -> ProcessOutcome:
        """Stop the agent and its whole tree (TERM, grace, KILL); return how it ended.

        Idempotent and thread-safe: a second call, or a call after the agent exited, returns
        the same outcome (the first reason wins, and an agent that exited by itself keeps
        ``stop_reason`` None).
        """
        if threading.current_thread() is self._io_thread:
            raise RuntimeError(
                "AgentProcess.stop() called from on_line would wait for itself; "
                "call request_stop() there"
            )
        self.request_stop(reason)
        outcome = self.wait()
        if outcome is None:  # pragma: no cover - wait() without a timeout always has one
            raise RuntimeError("agent process did not finish")
        return outcome

    def wait(self, timeout: float | None = None) -> ProcessOutcome | None:
        """The outcome once the agent exited and its output was read; None after ``timeout``."""
        self._check_started()
        if threading.current_thread() is self._io_thread:
            raise RuntimeError("AgentProcess.wait() cannot be called from on_line")
        if not self._done.wait(timeout):
            return None
        if self._monitor_thread is not None:
            self._monitor_thread.join()
        return self._outcome

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._popen is not None:
            self.stop()

    # -- spawning ----------------------------------------------------------------------------

    def _check_started(self) -> None:
        if self._popen is None:
            raise RuntimeError("the agent process has not been started")

    def _resolve_program(self) -> str:
        program = self.argv[0]
        hint = "install it, or give its absolute path in the provider's settings in tmops.yaml"
        if "/" in program:
            candidate = str(self.cwd / program)  # an absolute program stays as it is
            if not os.path.exists(candidate):
                raise ProviderError(f"cannot start the agent: {program} does not exist", hint=hint)
            if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
                raise ProviderError(
                    f"cannot start the agent: {program} is not executable",
                    hint=f"make it executable (`chmod +x {candidate}`)",
                )
            return candidate
        search = self._env.get("PATH", os.defpath)
        found = shutil.which(program, path=search)
        if found is None:
            for folder in search.split(os.pathsep):
                if os.path.isfile(os.path.join(folder or ".", program)):
                    raise ProviderError(
                        f"cannot start the agent: {os.path.join(folder, program)} is not "
                        "executable",
                        hint="make it executable (`chmod +x`), or fix PATH",
                    )
            raise ProviderError(
                f"cannot start the agent: program {program!r} not found on PATH ({search})",
                hint=hint,
            )
        return os.path.abspath(found)

    def _popen_now(self, executable: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            executable=executable,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.PIPE if self._stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            start_new_session=True,
            preexec_fn=_child_setup(os.getpid()),  # noqa: PLW1509 - see the module docstring
        )

    def _spawn_error(self, exc: OSError) -> ProviderError:
        program = self.argv[0]
        if isinstance(exc, FileNotFoundError) and exc.filename == str(self.cwd):
            return ProviderError(f"cannot start {program}: the directory {self.cwd} is gone")
        if exc.errno == errno.ENOEXEC:
            return ProviderError(
                f"cannot start {program}: not a program the system can run (exec format error)",
                hint="a script needs a #! line naming its interpreter",
            )
        return ProviderError(f"cannot start {program}: {exc.strerror or exc}")

    # -- output ----------------------------------------------------------------------------

    def _io_main(self) -> None:
        popen = self._popen
        if popen is None:  # pragma: no cover - the thread is started after the spawn
            return
        try:
            self._io_loop(popen)
        except Exception as exc:
            logger.opt(exception=exc).error(
                "tmops supervisor: reading the output of agent pid {} failed", self._pid
            )
        finally:
            for file in (popen.stdin, popen.stdout, popen.stderr):
                if file is not None:
                    with contextlib.suppress(OSError):
                        file.close()

    def _io_loop(self, popen: subprocess.Popen[bytes]) -> None:
        if popen.stdout is None or popen.stderr is None:  # pragma: no cover - always piped
            return
        streams = {
            popen.stdout.fileno(): _Stream(is_err=False),
            popen.stderr.fileno(): _Stream(is_err=True),
        }
        poller = select.poll()
        for fd in streams:
            poller.register(fd, select.POLLIN)
        poller.register(self._abort_r, select.POLLIN)
        feeder = _StdinFeeder(popen.stdin, self._stdin, poller)

        drain_until: float | None = None
        while streams or feeder.open:
            events = poller.poll(None if drain_until is None else 0)
            if drain_until is not None and (not events or time.monotonic() > drain_until):
                break  # told to stop: everything buffered has been taken
            for fd, mask in events:
                if fd == self._abort_r:
                    poller.unregister(fd)
                    drain_until = time.monotonic() + _DRAIN_MAX_S
                    feeder.close()
                elif fd == feeder.fd:
                    feeder.write(mask)
                elif fd in streams:
                    data = os.read(fd, _READ_CHUNK)
                    if data:
                        self._last_output = time.monotonic()
                        self._feed(streams[fd], data)
                    else:
                        self._flush(streams.pop(fd))
                        poller.unregister(fd)
        feeder.close()
        for stream in streams.values():
            self._flush(stream)

    def _feed(self, stream: _Stream, data: bytes) -> None:
        if stream.is_err:
            tail = self._stderr_tail
            tail += data
            if len(tail) > STDERR_TAIL_BYTES:
                del tail[:-STDERR_TAIL_BYTES]
        buffer = stream.buffer
        buffer += data
        if b"\n" in data:
            *lines, rest = buffer.split(b"\n")
            stream.buffer = bytearray(rest)
            for line in lines:
                self._emit(line, is_err=stream.is_err)
        if len(stream.buffer) > _MAX_LINE_BYTES:
            if not self._long_line_warned:
                self._long_line_warned = True
                logger.warning(
                    "tmops supervisor: agent pid {} wrote a line over {} bytes; "
                    "it is delivered in pieces",
                    self._pid,
                    _MAX_LINE_BYTES,
                )
            self._flush(stream)

    def _flush(self, stream: _Stream) -> None:
        if stream.buffer:
            line = bytes(stream.buffer)
            stream.buffer = bytearray()
            self._emit(line, is_err=stream.is_err)

    def _emit(self, raw: bytes | bytearray, *, is_err: bool) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        text = raw.decode("utf-8", errors="replace")
        if is_err:
            self._log("[stderr] " + text)
            return
        self._lines += 1
        self._log(text)
        try:
            self._on_line(text)
        except Exception as exc:
            self._callback_errors += 1
            if self._callback_errors == 1:
                logger.opt(exception=exc).warning(
                    "tmops supervisor: on_line failed on a line of agent pid {}; "
                    "reading goes on and further failures are not logged",
                    self._pid,
                )

    def _log(self, text: str) -> None:
        if self._log_failed:
            return
        data = (text + "\n").encode("utf-8", errors="replace")
        try:
            while data:
                data = data[os.write(self._log_fd, data) :]
        except OSError as exc:
            self._log_failed = True
            logger.warning(
                "tmops supervisor: cannot write the agent log {}: {}; output is no longer logged",
                self.log_path,
                exc.strerror,
            )

    # -- watchdog ----------------------------------------------------------------------------

    def _monitor_main(self) -> None:
        try:
            try:
                self._watch()
            finally:
                # Also after an exit by itself: what the agent left running goes too.
                _terminate(
                    {self._pid: self._start_time},
                    grace_s=self.limits.term_grace_s,
                    groups=(self._pid,),
                    use_killpg=True,  # safe: the leader is not reaped before _finish
                    marks=(self.mark,),
                    marks_since=self._start_time,
                )
        except Exception as exc:
            logger.opt(exception=exc).error(
                "tmops supervisor: watching agent pid {} failed; killing it", self._pid
            )
            _killpg(self._pid, _SIGKILL)
        finally:
            if self._ended_at is None:
                self._ended_at = time.monotonic()
            self._finish()

    def _has_exited(self) -> bool:
        try:
            # WNOWAIT: look without reaping, so the pid and group id stay ours until _finish.
            result = os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # pragma: no cover - reaped by someone else
            return True
        return result is not None

    def _watch(self) -> None:
        limits = self.limits
        poller = select.poll()
        if self._pidfd is not None:
            poller.register(self._pidfd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        wall_deadline = self._started_at + limits.wall_clock_s
        while True:
            if self._has_exited():
                self._ended_at = time.monotonic()
                return
            now = time.monotonic()
            idle_deadline = self._last_output + limits.idle_s
            if now >= wall_deadline:
                self.request_stop(STOP_WALL_CLOCK)
            elif now >= idle_deadline:
                self.request_stop(STOP_IDLE)
            with self._lock:
                reason = self._stop_request
            if reason is not None:
                self._stop_reason = reason
                logger.info(
                    "tmops supervisor: stopping agent pid {} ({}) after {:.1f} s",
                    self._pid,
                    reason,
                    now - self._started_at,
                )
                return
            timeout = min(wall_deadline, idle_deadline) - now
            if self._pidfd is None:  # pragma: no cover - no pidfd: poll for the exit
                timeout = min(timeout, 0.02)
            poller.poll(_ms(timeout))
            _drain_pipe(self._wake_r)

    def _finish(self) -> None:
        """Let the reader finish, reap the child, close everything, publish the outcome."""
        popen = self._popen
        if popen is None:  # pragma: no cover - the thread is started after the spawn
            return
        returncode = -_SIGKILL  # only if reaping fails below, which should not happen
        try:
            io = self._io_thread
            if io is not None:
                io.join(_DRAIN_S)
                if io.is_alive():
                    # Something outside every sweep still holds a pipe: take what is buffered.
                    with contextlib.suppress(OSError):
                        os.write(self._abort_w, b"x")
                    io.join()
            returncode = popen.wait()
        except Exception as exc:  # pragma: no cover - a bug; never leave wait() hanging
            logger.opt(exception=exc).error(
                "tmops supervisor: finishing agent pid {} failed", self._pid
            )
        finally:
            for fd in (self._pidfd, self._wake_r, self._abort_r, self._abort_w, self._log_fd):
                _close(fd)
            self._pidfd = None
            self._log_fd = -1
            tail = bytes(self._stderr_tail)
            if len(tail) >= STDERR_TAIL_BYTES:
                tail = tail.lstrip(bytes(range(0x80, 0xC0)))  # a character cut in half
            ended_at = self._ended_at if self._ended_at is not None else time.monotonic()
            with self._lock:
                self._outcome = ProcessOutcome(
                    returncode=returncode,
                    stop_reason=self._stop_reason,
                    stderr_tail=tail.decode("utf-8", errors="replace"),
                    pid=self._pid,
                    start_time=self._start_time,
                    duration_s=ended_at - self._started_at,
                    lines=self._lines,
                )
                _close(self._wake_w)
                self._done.set()
            with _live_lock:
                _live_agents.discard(self)
        logger.debug(
            "tmops supervisor: agent pid {} ended: code {}, stop {}",
            self._pid,
            returncode,
            self._stop_reason,
        )
