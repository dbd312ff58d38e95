"""The kill harness's plumbing: engines killed dead, restarted the way a user does.

A :class:`KillProject` is the demo project with features initialised for the scripted agent
(its journal on), a config FILE (so every engine, whoever starts it, reads the same config) and
the service of that file. An engine is started here with ``TMOPS_CRASH_AT`` set
(:func:`start_engine`) to die at a named crash point, or found through ``/proc`` and killed with
SIGKILL at any moment (:func:`kill_engines`); it is restarted as a user would, with
``tmops start FEATURE [--resume]`` in a process of its own (:func:`user_start`), which spawns
the next engine WITHOUT ``TMOPS_CRASH_AT``. :meth:`KillProject.finish` waits for the runs and
the engine to end and checks the invariants (:mod:`tests.kill_checks`).

Used by ``test_kill_harness.py`` and ``benchmarks/soak.py``; a plain module, not a conftest.
Only processes this harness started (the engines of its own project) are ever signalled, by pid
after a start-time check.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.engine_support import file_service, new_feature, scripted_config, write_config
from tests.kill_checks import Findings, Subject, check_project, engine_processes
from tmops_core.agents.processes import process_alive, process_start_time
from tmops_core.lifecycle import LIVE_ATTEMPT_STATES
from tmops_core.orchestration.crashpoints import CRASH_ENV
from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.store import STORE_NAME, SQLiteStore
from tmops_core.workspace.features import InitResult
from tmops_plugins.scripted_journal import JOURNAL_ENV

__all__ = [
    "CRASH_ENV",
    "KillProject",
    "environment",
    "kill_engines",
    "kill_project",
    "start_engine",
    "user_start",
]

TMOPS = str(Path(sys.executable).with_name("tmops"))
_POLL_S = 0.05
#: How long unfinished runs may go without any engine before they count as stuck (an engine
#: spawned by ``tmops start`` shows in /proc before ``start`` returns; this is slack).
_ORPHANED_RUN_S = 5.0


def environment(crash_at: str | None = None) -> dict[str, str]:
    """This process's environment, with ``TMOPS_CRASH_AT`` set to ``crash_at`` or removed."""
    env = {name: value for name, value in os.environ.items() if name != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    return env


@dataclass
class KillProject:
    """A demo project whose features run with the scripted agent, its journal on."""

    base: Path
    root: Path
    config: Path
    journal: Path
    service: Service
    inits: dict[str, InitResult]

    def subjects(self) -> list[Subject]:
        return [
            Subject(i.feature, i.run, i.branch, i.worktree, i.checkpoint_dir, i.run_dir)
            for i in self.inits.values()
        ]

    def statuses(self) -> dict[str, str]:
        """Each feature's run status, read from a fresh connection to the store."""
        store = SQLiteStore.open_existing(self.root / ".tmops" / STORE_NAME)
        assert store is not None
        try:
            found = {}
            for feature, init in self.inits.items():
                run = store.run(feature, init.run)
                found[feature] = run.status if run else "missing"
            return found
        finally:
            store.close()

    def moment(self) -> dict[str, str]:
        """Where each run stands now: ``queued``; ``agent:<phase>`` (an attempt of that phase
        is open: its agent runs, or ran when the engine died); ``handoff:<phase>`` (running
        with no agent: checkpoint, gates, commit, transition, summary); or how it ended."""
        store = SQLiteStore.open_existing(self.root / ".tmops" / STORE_NAME)
        assert store is not None
        try:
            found = {}
            for feature, init in self.inits.items():
                run = store.run(feature, init.run)
                if run is None or run.status != "running":
                    found[feature] = run.status if run else "missing"
                    continue
                live = [a.phase for a in store.attempts(feature, init.run)
                        if a.state in LIVE_ATTEMPT_STATES]  # fmt: skip
                found[feature] = f"agent:{live[-1]}" if live else f"handoff:{run.current_phase}"
            return found
        finally:
            store.close()

    def active(self) -> list[str]:
        return [f for f, status in self.statuses().items() if status in {"queued", "running"}]

    def wait_ended(self, timeout: float) -> bool:
        """Wait until every run has ended; False after ``timeout``, or as soon as unfinished
        runs have had no engine for ``_ORPHANED_RUN_S`` (nobody will ever move them on)."""
        deadline = time.monotonic() + timeout
        served = time.monotonic()
        while self.active():
            now = time.monotonic()
            if engine_processes(self.root):
                served = now
            if now > deadline or now - served > _ORPHANED_RUN_S:
                return False
            time.sleep(_POLL_S)
        return True

    def wait_no_engine(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while engine_processes(self.root):
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def finish(self, timeout: float) -> Findings:
        """Wait up to ``timeout`` for every run to end, then for the engine to exit (it idles
        2 s first), then check every invariant. A run still going is ``stuck``."""
        self.wait_ended(timeout)
        self.wait_no_engine(timeout)
        return check_project(self.root, self.journal, self.subjects())

    def close(self) -> None:
        """Kill what is left of this project's engines (a stuck run's), close the service."""
        kill_engines(self)
        self.service.close()


def kill_project(
    base: Path, features: Sequence[str] = (DEMO_FEATURE,), **settings: Any
) -> KillProject:
    """The demo project in ``base/p`` with ``features`` initialised, and its config file."""
    root = create_demo_project(base / "p").path
    journal = base / "journal"
    data = scripted_config(base / "state", **settings)
    data["providers"]["claude-code"]["env"][JOURNAL_ENV] = str(journal)
    config = write_config(base / "tmops.yaml", data)
    service = file_service(config)
    inits = {feature: new_feature(service, root, feature) for feature in features}
    return KillProject(base, root, config, journal, service, inits)


def start_engine(project: KillProject, crash_at: str | None) -> subprocess.Popen[bytes]:
    """``tmops engine`` for the project, as ``tmops start`` spawns it, with ``TMOPS_CRASH_AT``."""
    logs = project.root / ".tmops" / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    log = os.open(logs / "engine.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                  0o600)  # fmt: skip
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "tmops_core.surfaces.cli", "--config", str(project.config),
             "engine", "--workspace", str(project.root)],
            cwd=project.root, env=environment(crash_at), stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(log)


def user_start(
    project: KillProject,
    feature: str,
    *,
    resume: bool,
    crash_at: str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """``tmops start FEATURE [--resume]`` as a user types it; the engine it spawns inherits
    ``TMOPS_CRASH_AT=crash_at`` (the soak's named-point kills), by default none."""
    argv = [TMOPS, "--config", str(project.config), "start", feature,
            "--workspace", str(project.root), *(["--resume"] if resume else [])]  # fmt: skip
    return subprocess.run(
        argv, cwd=project.root, env=environment(crash_at), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _sigkill(pid: int, started: int) -> bool:
    """SIGKILL ``pid`` if it is still the process that started at ``started`` (a pidfd pins
    it, so a pid reused meanwhile is never hit)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if process_start_time(pid) != started:
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def kill_engines(project: KillProject, timeout: float = 10.0) -> list[int]:
    """SIGKILL every engine serving the project and wait until they are dead; their pids."""
    killed = []
    for pid in engine_processes(project.root):
        started = process_start_time(pid)
        if started is not None and _sigkill(pid, started):
            killed.append((pid, started))
    deadline = time.monotonic() + timeout
    # Dead means dead or a zombie: init reaps the engines `tmops start` spawned, the caller
    # the ones it spawned itself.
    while any(process_alive(pid, started) for pid, started in killed):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return [pid for pid, _ in killed]
