"""The scripted agent's journal: which sessions ran, when, and alongside which others.

Opt-in, for the kill harness and the soak (``tests/test_kill_harness.py``,
``benchmarks/soak.py``): with :data:`JOURNAL_ENV` naming a folder, every session that knows its
role appends a ``start`` line to ``<folder>/journal.jsonl`` and, when it ends by itself (or on
SIGTERM), an ``end`` line. While it lives it holds an exclusive ``flock`` on its own lock file
``<folder>/live/<feature>.<pid>.lock``; before writing its ``start`` line it tries a shared lock
on every other lock file of its feature, and each one it cannot get belongs to an agent of the
same feature that is alive right now: those are listed in ``alongside``. The kernel drops a
lock when its process dies, however it dies (SIGKILL included), so ``alongside`` never names a
dead agent and never misses a live one: of two overlapping agents, the later one always sees
the earlier (each takes its own lock before it looks).

Lines are one ``write`` on an ``O_APPEND`` descriptor, so concurrent agents never interleave::

    {"event": "start", "pid": 4242, "role": "tester", "feature": "slugify", "run": "initial",
     "session_id": "...", "resumed": false, "mark": "<TMOPS_AGENT_MARK or null>",
     "time": 1767225600.123, "alongside": [{"pid": 4200, "role": "orchestrator"}]}
    {"event": "end", "pid": 4242, "time": 1767225601.456, "exit_code": 0}

This module owns the journal and the lock files. It must never change what a session does
(a journal that cannot be written is told on stderr and the session goes on), never block (every
lock is tried, not waited for), and never delete a lock file (its owner may be about to lock it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .scripted_session import Context

__all__ = ["JOURNAL_ENV", "MARK_ENV", "Journal", "open_journal", "read_journal"]

JOURNAL_ENV = "TMOPS_SCRIPTED_JOURNAL"
#: The agent mark tmops puts in every agent's environment (``tmops_core.agents.processes``).
MARK_ENV = "TMOPS_AGENT_MARK"
JOURNAL_FILE = "journal.jsonl"
LIVE_DIR = "live"


class Journal:
    """One session's entry in the journal: its lock held until :meth:`close`."""

    def __init__(self, folder: Path, lock_fd: int, err: TextIO) -> None:
        self.folder = folder
        self._lock_fd: int | None = lock_fd
        self._err = err

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line (a failure is told on stderr; the session goes on)."""
        line = (json.dumps(dict(record), sort_keys=True) + "\n").encode()
        try:
            fd = os.open(
                self.folder / JOURNAL_FILE,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
        except OSError as exc:
            print(f"scripted agent: cannot write the journal: {exc}", file=self._err)
            return
        try:
            os.write(fd, line)  # one write on O_APPEND: whole lines, never interleaved
        except OSError as exc:
            print(f"scripted agent: cannot write the journal: {exc}", file=self._err)
        finally:
            os.close(fd)

    def close(self, exit_code: int) -> None:
        """Write the ``end`` line and drop the lock (a killed session gets neither)."""
        if self._lock_fd is None:
            return
        self.append(
            {"event": "end", "pid": os.getpid(), "time": time.time(), "exit_code": exit_code}
        )
        os.close(self._lock_fd)
        self._lock_fd = None


def _alive_alongside(live: Path, feature: str, mine: Path) -> list[dict[str, Any]]:
    """The other agents of ``feature`` whose lock is held right now."""
    found: list[dict[str, Any]] = []
    for path in sorted(live.glob(f"{feature}.*.lock")):
        if path == mine:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            role = os.read(fd, 64).decode(errors="replace").strip()
            pid = path.name[len(feature) + 1 : -len(".lock")]
            found.append({"pid": int(pid) if pid.isdigit() else pid, "role": role})
        finally:
            os.close(fd)  # also drops the shared lock if it was taken
    return found


def open_journal(
    context: Context,
    *,
    session_id: str,
    resumed: bool,
    err: TextIO,
    environ: Mapping[str, str] | None = None,
) -> Journal | None:
    """Take this session's lock and write its ``start`` line; None when no journal is asked
    for (or it cannot be opened, which is told on ``err``)."""
    env = os.environ if environ is None else environ
    folder_text = env.get(JOURNAL_ENV, "")
    if not folder_text or not context.role:
        return None
    folder = Path(folder_text)
    feature = context.feature or "unknown"
    live = folder / LIVE_DIR
    mine = live / f"{feature}.{os.getpid()}.lock"
    try:
        live.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(
            mine, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as exc:
        print(f"scripted agent: cannot open the journal in {folder}: {exc}", file=err)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, context.role.encode())
    except OSError as exc:
        os.close(fd)
        print(f"scripted agent: cannot lock {mine}: {exc}", file=err)
        return None
    journal = Journal(folder, fd, err)
    journal.append(
        {
            "event": "start",
            "pid": os.getpid(),
            "role": context.role,
            "feature": feature,
            "run": context.run,
            "session_id": session_id,
            "resumed": resumed,
            "mark": env.get(MARK_ENV),
            "time": time.time(),
            "alongside": _alive_alongside(live, feature, mine),
        }
    )
    return journal


def read_journal(folder: Path) -> list[dict[str, Any]]:
    """Every line of the journal in ``folder`` (none if there is no journal yet)."""
    with contextlib.suppress(FileNotFoundError):
        text = (folder / JOURNAL_FILE).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return []
