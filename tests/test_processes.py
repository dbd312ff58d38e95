"""Processes found through /proc: start times, orphans and trees, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tmops_core.agents.processes import (
    MARK_ENV,
    kill_process_tree,
    process_alive,
    process_start_time,
    reap_orphans,
)

from .test_supervisor import (
    GRANDCHILD_IN_OWN_SESSION,
    Agent,
    gone,
    read_line,
    script_writer,
    wait_for,
)


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], list[str]]:
    return script_writer(tmp_path)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    factory = Agent(tmp_path)
    yield factory
    factory.cleanup()


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _sleeper(**kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-S", "-c", "import time; time.sleep(60)"],
        start_new_session=True,
        **kwargs,  # type: ignore[call-overload]
    )


def test_process_alive_checks_pid_and_start_time(
    agent: Agent, script: Callable[[str], list[str]]
) -> None:
    proc = agent(script("import time\nprint('up')\ntime.sleep(60)\n"))
    pid = proc.start()
    start_time = proc.start_time
    assert start_time == process_start_time(pid)
    assert process_alive(pid, start_time)
    assert not process_alive(pid, start_time + 1)
    proc.stop()
    assert not process_alive(pid, start_time)
    assert process_start_time(pid) is None
    assert not process_alive(2**22 + 1, 0)


def test_reap_orphans_kills_live_records_only() -> None:
    live = _sleeper()
    stubborn = _sleeper()
    dead = _sleeper()
    try:
        dead.kill()
        dead.wait()
        live_start = process_start_time(live.pid)
        stubborn_start = process_start_time(stubborn.pid)
        assert live_start is not None
        assert stubborn_start is not None
        records = [
            (live.pid, live_start),
            (dead.pid, live_start),  # gone
            (stubborn.pid, stubborn_start + 7),  # the pid now belongs to another process
            (os.getpid(), process_start_time(os.getpid()) or 0),  # never tmops itself
        ]
        killed = reap_orphans(records, grace_s=1)
        assert killed == [live.pid]
        assert live.wait(5) == -signal.SIGTERM
        assert stubborn.poll() is None
        assert reap_orphans([(live.pid, live_start)]) == []
    finally:
        for proc in (live, stubborn):
            proc.kill()
            proc.wait()


def test_reap_orphans_finds_marked_processes() -> None:
    mark = uuid.uuid4().hex  # unique: parallel test runs must not reap each other's
    marked = _sleeper(env={**os.environ, MARK_ENV: mark})
    other = _sleeper(env={**os.environ, MARK_ENV: "another-mark"})
    try:
        # The kernel fills /proc/<pid>/environ a moment after the exec closed Popen's pipe.
        needle = f"{MARK_ENV}={mark}".encode()
        assert wait_for(lambda: needle in _environ(marked.pid))
        assert reap_orphans([], grace_s=1, marks=[mark]) == [marked.pid]
        assert marked.wait(5) == -signal.SIGTERM
        assert other.poll() is None
    finally:
        for proc in (marked, other):
            proc.kill()
            proc.wait()


def test_kill_process_tree_reaches_other_sessions(script: Callable[[str], list[str]]) -> None:
    argv = [*script(GRANDCHILD_IN_OWN_SESSION), "stubborn"]
    parent = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        grandchild = int(read_line(parent.stdout).split()[0])
        kill_process_tree(parent.pid, grace_s=0.2)
        assert parent.wait(5) == -signal.SIGTERM
        assert gone(grandchild, timeout=2)
        kill_process_tree(parent.pid)  # gone already: nothing to do
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
