"""Helpers of the engine liveness tests: real engine processes, killed, stopped and restarted.

A :class:`Project` is the demo project with its feature initialised and a config FILE, so that
an engine started by the CLI, by the MCP server or by :meth:`Project.engine` reads the same
config. The scripted agent runs as the claude-code provider's command; its state folder is
unique to the project, so every process of its agents (and of what they left running) is
found by that folder in its environment (:func:`leftovers`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.engine_support import (
    AGENT,
    WAIT_S,
    file_service,
    new_feature,
    open_store,
    scripted_config,
    write_config,
)
from tmops_core.agents.processes import process_alive, process_start_time
from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.store import AttemptRecord, RunRecord, Store
from tmops_plugins.scripted_session import STATE_ENV

TMOPS = str(Path(sys.executable).with_name("tmops"))
RUN = "initial"
LIVE = ("starting", "running")
ENDED = ("completed", "failed", "cancelled", "paused", "needs_review")

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@dataclass
class Project:
    base: Path
    root: Path
    config: Path
    state: Path
    service: Service
    store: Store
    engines: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # -- the store ---------------------------------------------------------------------------

    def run(self) -> RunRecord:
        record = self.store.run(DEMO_FEATURE, RUN)
        assert record is not None
        return record

    def wait_completed(self, *features: str, timeout: float = 2 * WAIT_S) -> None:
        """Wait until the current run of each of ``features`` has completed."""
        for feature in features:
            wait_until(
                functools.partial(self._completed, feature), timeout=timeout,
                what=f"{feature} completed",
            )  # fmt: skip

    def _completed(self, feature: str) -> bool:
        run = self.store.run(feature, RUN)
        return run is not None and run.status == "completed"

    def attempts(self, phase: str | None = None) -> list[AttemptRecord]:
        rows = self.store.attempts(DEMO_FEATURE, RUN)
        return [a for a in rows if phase is None or a.phase == phase]

    def live_agent(self, phase: str) -> AttemptRecord | None:
        """The phase's attempt whose agent runs (pid recorded), if there is one."""
        return next(
            (a for a in self.attempts(phase) if a.state in LIVE and a.pid and a.start_time),
            None,
        )

    # -- processes ---------------------------------------------------------------------------

    def engine(self, *extra: str) -> subprocess.Popen[bytes]:
        """``tmops engine`` for this project, as a child of the test (so a kill -9 leaves a
        zombie until the test reaps it)."""
        log = (self.base / "engines.log").open("ab")
        process = subprocess.Popen(
            [TMOPS, "--config", str(self.config), "engine", "--workspace", str(self.root),
             *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.engines.append(process)
        return process

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The real ``tmops`` command in a process of its own."""
        return subprocess.run(
            [TMOPS, "--config", str(self.config), *args, "--workspace", str(self.root)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def daemons(self, role: str) -> list[tuple[int, int | None]]:
        """The daemons the ``detach`` fault started for ``role``: (pid, start time or None)."""
        found = []
        for path in sorted(self.state.glob(f"detached-{role}-*.pid")):
            try:
                pid = int(path.read_text())
            except (OSError, ValueError):
                continue
            found.append((pid, process_start_time(pid)))
        return found

    def close(self) -> None:
        for process in self.engines:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
        for pid in leftovers(self.state):
            # listed alive, it may end before the kill (a cancel is stopping it): gone is fine
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.store.close()
        self.service.close()


def make_project(
    base: Path, *, fault: str = "", command_env: dict[str, str] | None = None,
    claude_env: dict[str, str] | None = None, **features: Any,
) -> Project:  # fmt: skip
    """The demo project, its feature initialised, whose ``claude-code`` provider runs the
    scripted agent (with ``fault``, ``claude_env``); with ``command_env``, the ``command``
    provider runs it too (from an argv template, that env on top of the shared state folder)."""
    root = create_demo_project(base / "p").path
    state = base / "state"
    data = scripted_config(state, fault=fault, **features)
    data["providers"]["claude-code"]["env"].update(claude_env or {})
    if command_env is not None:
        data["providers"]["command"] = {
            "command": AGENT,
            "args": ["-p", "--output-format", "stream-json", "--verbose", "--permission-mode",
                     "bypassPermissions", "--add-dir", "{checkpoint_dir}", "--", "{prompt}"],
            "env": {STATE_ENV: str(state), **command_env},
        }  # fmt: skip
    config = write_config(base / "tmops.yaml", data)
    service = file_service(config)
    new_feature(service, root)
    return Project(base, root, config, state, service, open_store(root))


def leftovers(state: Path) -> list[int]:
    """Live processes (zombies excluded) carrying the agents' state folder in their
    environment: agents, what they ran, and what they left running."""
    needle = f"{STATE_ENV}={state}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        start = process_start_time(int(name))
        if needle in environ.split(b"\0") and start and process_alive(int(name), start):
            found.append(int(name))
    return found


def engines_of(root: Path) -> list[int]:
    """Live ``tmops engine`` processes serving ``root``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        start = process_start_time(int(name))
        alive = start is not None and process_alive(int(name), start)
        if alive and b"engine" in argv and str(root).encode() in argv:
            found.append(int(name))
    return found


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@dataclass
class Followed:
    """What the store showed while a run was followed to its end."""

    run: RunRecord
    #: the most attempts of the feature that were live (starting or running) at one time
    most_live: int


def follow_to_end(project: Project, *, timeout: float = 90) -> Followed:
    """Sample the store until the run has ended, counting the live attempts at each sample."""
    most = 0
    deadline = time.monotonic() + timeout
    while True:
        live = [a for a in project.attempts() if a.state in LIVE]
        most = max(most, len(live))
        run = project.run()
        if run.status in ENDED:
            return Followed(run, most)
        assert time.monotonic() < deadline, f"the run never ended: {run}, live {live}"
        time.sleep(0.02)


def assert_no_overlap(attempts: list[AttemptRecord]) -> None:
    """Each attempt of the feature ended before the next one started (store timestamps)."""
    ordered = sorted(attempts, key=lambda a: a.id)
    for before, after in itertools.pairwise(ordered):
        assert before.finished_at is not None, f"attempt {before.id} never ended: {before}"
        assert before.finished_at <= after.started_at, (before, after)
