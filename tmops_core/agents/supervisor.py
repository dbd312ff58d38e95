"""Agent processes: the only place tmops starts one.

This module owns :class:`AgentProcess` (spawn, watchdog, stop, outcome), its :class:`Limits`
and :class:`ProcessOutcome`, the stop reasons (``STOP_*``) and :func:`stop_all`. It leans on
its neighbours: :mod:`tmops_core.agents.env` builds the environment,
:mod:`tmops_core.agents.spawner` forks the child, :mod:`tmops_core.agents.io` reads the output
and writes the log, and
:mod:`tmops_core.agents.processes` finds and terminates process trees.

Every agent runs from an argv list (never a shell) in a session and process group of its own,
with the environment it is given plus its mark (:data:`~tmops_core.agents.processes.MARK_ENV`), and
is tied to tmops three ways:

* **tmops dies, the agent dies.** It is forked by the long-lived spawner thread and sets
  ``PR_SET_PDEATHSIG=SIGKILL`` before exec (:mod:`tmops_core.agents.spawner`).
* **Limits.** A watchdog thread stops the agent after ``Limits.wall_clock_s``, or after
  ``Limits.idle_s`` without a byte on stdout or stderr.
* **The whole tree goes.** Stopping terminates the process group, every descendant and every
  process carrying the agent's mark (:mod:`tmops_core.agents.processes`): SIGTERM, then
  ``term_grace_s``, then SIGKILL. Signals go through pidfds after a start-time check, so a
  recycled pid is never hit.

The same sweep runs when an agent exits by itself: what it left running in its group or with
its mark (a ``sleep 999 &``, a dev server) is terminated, so a finished phase leaves no process
behind and the output pipes reach end-of-file. The direct child is reaped only after that
sweep, so its pid and process group id cannot be reused while tmops still signals them. An
orderly exit of tmops stops every running agent the same way (:func:`stop_all`, registered
with :mod:`atexit`); a killed tmops relies on PDEATHSIG and
:func:`~tmops_core.agents.processes.reap_orphans`.

It must never run an agent through a shell, fork one other than through
:func:`tmops_core.agents.spawner.spawn`, add to the environment it is given anything but the
mark, or reap the direct child before the sweep is done.

Linux only: it needs ``/proc``, ``prctl`` and pidfds (kernel 5.3 or later; without pidfds the
watchdog falls back to polling).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import math
import os
import select
import shutil
import signal
import subprocess
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import attrs

from tmops_core.agents.io import AgentIO
from tmops_core.agents.processes import (
    MARK_ENV,
    _killpg,
    _terminate,
    process_alive,
    process_start_time,
)
from tmops_core.agents.spawner import _child_setup, spawn
from tmops_core.log import logger
from tmops_hookspecs import ProviderError, WorkspaceError

__all__ = [
    "STOP_CANCELLED",
    "STOP_IDLE",
    "STOP_STOPPED",
    "STOP_WALL_CLOCK",
    "AgentProcess",
    "Limits",
    "ProcessOutcome",
    "stop_all",
]

STOP_WALL_CLOCK = "wall_clock"
STOP_IDLE = "idle"
STOP_CANCELLED = "cancelled"
STOP_STOPPED = "stopped"

#: After the process tree is gone, how long the reader may take to reach end-of-file before it
#: is told to take what is buffered and stop (a process that escaped every sweep holds a pipe).
_DRAIN_S = 1.0
_SIGKILL = int(signal.SIGKILL)


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
    #: The last :data:`~tmops_core.agents.io.STDERR_TAIL_BYTES` of stderr, decoded.
    stderr_tail: str
    pid: int
    #: ``/proc/<pid>/stat`` field 22, for orphan checks
    #: (:func:`~tmops_core.agents.processes.process_alive`).
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


class AgentProcess:
    """One agent process, its output readers and its watchdog.

    ``start()`` spawns it and returns at once; ``wait()`` and ``stop()`` may be called from any
    thread, concurrently. ``on_line`` receives every stdout line (decoded as UTF-8 with
    replacement, newline stripped) on the reader thread; it must return promptly, must not call
    :meth:`stop` or :meth:`wait` (use :meth:`request_stop`), and an exception it raises is
    logged once and ignored. ``env`` is passed as given (build it with
    :func:`tmops_core.agents.env.build_env`), plus :data:`~tmops_core.agents.processes.MARK_ENV`.
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
        #: to reap them after a crash (:func:`tmops_core.agents.processes.reap_orphans`).
        self.mark = mark or uuid.uuid4().hex
        self._env = dict(env)
        self._stdin = stdin
        self._io = AgentIO(self.log_path, on_line, stdin)

        self._lock = threading.Lock()
        self._popen: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self._start_time = 0
        self._started_at = 0.0
        self._ended_at: float | None = None
        self._stop_request: str | None = None
        self._stop_reason: str | None = None
        self._outcome: ProcessOutcome | None = None
        self._done = threading.Event()
        self._done_callbacks: list[Callable[[], None]] = []
        self._io_thread: threading.Thread | None = None
        self._monitor_thread: threading.Thread | None = None
        self._pidfd: int | None = None
        self._wake_r = self._wake_w = -1
        self._abort_r = self._abort_w = -1

    # -- public ----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        self._check_started()
        return self._pid

    @property
    def start_time(self) -> int:
        """``/proc/<pid>/stat`` field 22; record it with the pid for
        :func:`~tmops_core.agents.processes.process_alive`."""
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
            self._io.open_log()
            env = {**self._env, MARK_ENV: self.mark}
            try:
                popen = spawn(lambda: self._popen_now(executable, env))
            except OSError as exc:
                self._io.close_log()
                raise self._spawn_error(exc) from exc
            except subprocess.SubprocessError as exc:
                self._io.close_log()
                raise ProviderError(f"cannot start {self.argv[0]}: {exc}") from exc
            self._popen = popen
            self._pid = popen.pid
            # The child is not reaped before the monitor says so: its /proc entry is there.
            self._start_time = process_start_time(popen.pid) or 0
            self._io.pid = popen.pid
            self._started_at = self._io.last_output = time.monotonic()
            with contextlib.suppress(OSError, AttributeError):
                self._pidfd = os.pidfd_open(popen.pid)
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._abort_r, self._abort_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._io_thread = threading.Thread(
                target=self._io.run,
                args=(popen, self._abort_r),
                name=f"tmops-agent-io-{popen.pid}",
                daemon=True,
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

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the outcome is ready (on the watchdog thread; at once if it
        is ready already): wait for the exit together with other events."""
        with self._lock:
            if not self._done.is_set():
                self._done_callbacks.append(callback)
                return
        callback()

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
            idle_deadline = self._io.last_output + limits.idle_s
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
            for fd in (self._pidfd, self._wake_r, self._abort_r, self._abort_w):
                _close(fd)
            self._io.close_log()
            self._pidfd = None
            ended_at = self._ended_at if self._ended_at is not None else time.monotonic()
            with self._lock:
                self._outcome = ProcessOutcome(
                    returncode=returncode,
                    stop_reason=self._stop_reason,
                    stderr_tail=self._io.stderr_tail(),
                    pid=self._pid,
                    start_time=self._start_time,
                    duration_s=ended_at - self._started_at,
                    lines=self._io.lines,
                )
                _close(self._wake_w)
                self._done.set()
                callbacks, self._done_callbacks = self._done_callbacks, []
            with _live_lock:
                _live_agents.discard(self)
            for callback in callbacks:
                callback()
        logger.debug(
            "tmops supervisor: agent pid {} ended: code {}, stop {}",
            self._pid,
            returncode,
            self._stop_reason,
        )
