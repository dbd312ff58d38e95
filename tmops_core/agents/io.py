"""An agent's pipes and its log: stdin fed in, stdout and stderr read line by line.

This module owns the reading side of one agent process (:class:`AgentIO`): it writes the
agent's stdin text without blocking, splits stdout and stderr into lines (a line over
``_MAX_LINE_BYTES`` is delivered in pieces), hands every stdout line to ``on_line``, writes
both streams to the agent's log file (0600, one write per line, secrets redacted, never through
a symlink: under ``.tmops/`` no folder on the way may be one either), and
keeps the last :data:`STDERR_TAIL_BYTES` of stderr and the time of the last output (for the
idle limit).

It runs on the reader thread :class:`~tmops_core.agents.supervisor.AgentProcess` starts.
It must never start, signal, wait for or reap a process, and never decide when the agent ends: the
supervisor does, and tells the reader to stop through the abort pipe. It must never write the
log through a symlink, nor let an exception from ``on_line`` stop the reading.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tmops_core.log import logger
from tmops_core.secrets import redact_text
from tmops_core.workspace.layout import FILE_MODE, open_file
from tmops_hookspecs import WorkspaceError

__all__ = ["STDERR_TAIL_BYTES", "AgentIO"]

#: How much of the end of stderr an agent's outcome keeps.
STDERR_TAIL_BYTES = 4096

_READ_CHUNK = 65536
#: A "line" longer than this is delivered in pieces rather than held in memory.
_MAX_LINE_BYTES = 32 * 1024 * 1024
#: After the supervisor told the reader to stop (a process that escaped every sweep holds a
#: pipe), how long it may still take what is buffered.
_DRAIN_MAX_S = 10.0


def _open_log(path: Path) -> int:
    # Under .tmops every folder on the way is checked (no link) and missing ones made 0700.
    try:
        fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, create_dirs=True)
    except WorkspaceError as exc:
        raise WorkspaceError(f"cannot open the agent log: {exc.message}", hint=exc.hint) from exc
    except OSError as exc:
        raise WorkspaceError(f"cannot open the agent log {path}: {exc.strerror}") from exc
    with contextlib.suppress(OSError):
        os.fchmod(fd, FILE_MODE)
    return fd


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


class AgentIO:
    """The pipes and the log of one agent process, served by its reader thread.

    ``on_line`` receives every stdout line (decoded as UTF-8 with replacement, newline
    stripped) on the reader thread; an exception it raises is logged once and ignored.
    """

    def __init__(self, log_path: Path, on_line: Callable[[str], None], stdin: str | None) -> None:
        self.log_path = log_path
        #: The agent's pid, for log messages; set once it runs.
        self.pid = 0
        #: ``time.monotonic()`` of the last byte on stdout or stderr (for the idle limit).
        self.last_output = 0.0
        #: stdout lines read.
        self.lines = 0
        self._on_line = on_line
        self._stdin = stdin
        self._log_fd = -1
        self._log_failed = False
        self._stderr_tail = bytearray()
        self._callback_errors = 0
        self._long_line_warned = False

    def open_log(self) -> None:
        """Open the log file (appending, 0600, never through a symlink).

        :raises WorkspaceError: the log file is a symlink or cannot be opened.
        """
        self._log_fd = _open_log(self.log_path)

    def close_log(self) -> None:
        if self._log_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
        self._log_fd = -1

    def stderr_tail(self) -> str:
        """The last :data:`STDERR_TAIL_BYTES` of stderr, decoded."""
        tail = bytes(self._stderr_tail)
        if len(tail) >= STDERR_TAIL_BYTES:
            tail = tail.lstrip(bytes(range(0x80, 0xC0)))  # a character cut in half
        return tail.decode("utf-8", errors="replace")

    def run(self, popen: subprocess.Popen[bytes], abort_fd: int) -> None:
        """The reader thread: until end-of-file on both streams, or ``abort_fd`` is readable
        (then only what is already buffered is taken). Closes the agent's pipes at the end."""
        try:
            self._loop(popen, abort_fd)
        except Exception as exc:
            logger.opt(exception=exc).error(
                "tmops supervisor: reading the output of agent pid {} failed", self.pid
            )
        finally:
            for file in (popen.stdin, popen.stdout, popen.stderr):
                if file is not None:
                    with contextlib.suppress(OSError):
                        file.close()

    def _loop(self, popen: subprocess.Popen[bytes], abort_fd: int) -> None:
        if popen.stdout is None or popen.stderr is None:  # pragma: no cover - always piped
            return
        streams = {
            popen.stdout.fileno(): _Stream(is_err=False),
            popen.stderr.fileno(): _Stream(is_err=True),
        }
        poller = select.poll()
        for fd in streams:
            poller.register(fd, select.POLLIN)
        poller.register(abort_fd, select.POLLIN)
        feeder = _StdinFeeder(popen.stdin, self._stdin, poller)

        drain_until: float | None = None
        while streams or feeder.open:
            events = poller.poll(None if drain_until is None else 0)
            if drain_until is not None and (not events or time.monotonic() > drain_until):
                break  # told to stop: everything buffered has been taken
            for fd, mask in events:
                if fd == abort_fd:
                    poller.unregister(fd)
                    drain_until = time.monotonic() + _DRAIN_MAX_S
                    feeder.close()
                elif fd == feeder.fd:
                    feeder.write(mask)
                elif fd in streams:
                    data = os.read(fd, _READ_CHUNK)
                    if data:
                        self.last_output = time.monotonic()
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
                    self.pid,
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
        self.lines += 1
        self._log(text)
        try:
            self._on_line(text)
        except Exception as exc:
            self._callback_errors += 1
            if self._callback_errors == 1:
                logger.opt(exception=exc).warning(
                    "tmops supervisor: on_line failed on a line of agent pid {}; "
                    "reading goes on and further failures are not logged",
                    self.pid,
                )

    def _log(self, text: str) -> None:
        if self._log_failed:
            return
        # The agent has the real keys in its environment and may print them; the log must not
        # keep them. Line by line, so a secret is never split across two redactions.
        data = (redact_text(text) + "\n").encode("utf-8", errors="replace")
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
