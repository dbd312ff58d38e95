"""The scale-out fleet on one machine: a Temporal dev server, a PostgreSQL database as the
engine's store, a bare repository as the shared remote, and ``tmops worker`` processes in clones
of their own, each committing under a git identity of its own (so the remote tells which
worker made a commit). The scripted agent keeps its journal in a folder all of them share.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.engine_support import (
    PHASES,
    file_service,
    git,
    new_feature,
    scripted_config,
    write_config,
)
from tests.kill_checks import marked_processes
from tests.takeover_support import Project
from tests.temporal_support import DevServer, Fleet
from tmops_core.service.demo_project import create_demo_project
from tmops_core.store import STORE_NAME, open_store
from tmops_plugins.scripted_journal import JOURNAL_ENV, read_journal

RUN = "initial"
ENDED = ("completed", "failed", "cancelled", "paused", "needs_review")


@dataclass
class Loopback:
    """The fleet, its features, the journal's folder and each worker's clone by name."""

    fleet: Fleet
    features: list[str]
    journal: Path
    heartbeat_timeout_s: float
    clones: dict[str, Path] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def project(self) -> Project:
        return self.fleet.project

    def worker(self, name: str) -> None:
        """A worker in a clone of its own, committing as ``worker-<name>``."""
        clone = self.fleet.clone(name)
        git(clone, "config", "user.name", identity(name))
        git(clone, "config", "user.email", f"{name}@loopback.invalid")
        self.clones[name] = clone
        self.processes[name] = self.fleet.worker(clone)

    def statuses(self) -> dict[str, str]:
        found = {}
        for feature in self.features:
            run = self.project.store.run(feature, RUN)
            found[feature] = run.status if run else "missing"
        return found

    def journal_starts(self) -> list[dict[str, Any]]:
        return [line for line in read_journal(self.journal) if line.get("event") == "start"]

    def agents_on(self, name: str) -> dict[int, dict[str, Any]]:
        """The agents running now in worker ``name``'s clone, by pid: their journal lines."""
        pids = marked_processes((), under=self.clones[name])
        return {line["pid"]: line for line in self.journal_starts() if line["pid"] in pids}

    def commits_by(self, name: str, repo: Path, *, after: float = 0.0) -> list[str]:
        """The commits of every ref of ``repo`` that worker ``name`` made after ``after``
        (committer time, seconds since the epoch)."""
        out = git(repo, "log", "--all", "--format=%H %ct %cn")
        found = []
        for line in out.splitlines():
            sha, when, committer = line.split(" ", 2)
            if committer == identity(name) and int(when) > after:
                found.append(sha)
        return found

    def pushes_by(self, name: str, *, after: float) -> list[str]:
        """The pushes of worker ``name`` the remote took after ``after`` (its reflog: when each
        ref was set): updates of the refs of the tries the worker's log shows it took."""
        remote = self.fleet.remote
        mine = {
            f"refs/tmops/{feature}/{RUN}/work/{phase}-{number}-": f"-a{try_}"
            for feature, phase, number, try_ in self.tries_of(name)
        }
        found = []
        for ref in git(remote, "for-each-ref", "--format=%(refname)", "refs/tmops/").split():
            if not any(ref.startswith(head) and ref.endswith(tail) for head, tail in mine.items()):
                continue
            log = git(remote, "reflog", "show", "--date=unix", "--format=%gd %H", ref)
            for line in log.splitlines():
                selector, sha = line.split(" ")
                if int(selector.rsplit("@{", 1)[1].rstrip("}")) > after:
                    found.append(f"{ref} {sha}")
        return found

    def tries_of(self, name: str) -> set[tuple[str, str, int, int]]:
        """The tries worker ``name`` took, from its log: (feature, phase, attempt, try)."""
        log = (self.clones[name].parent / f"{name}.log").read_text(errors="replace")
        pattern = rf"attempt (\d+) of ([a-z0-9-]+)/{RUN} ([a-z]+) \(try (\d+)\)"
        return {(f, p, int(n), int(t)) for n, f, p, t in re.findall(pattern, log)}


def identity(name: str) -> str:
    return f"worker-{name}"


def make_loopback(
    base: Path, server: DevServer, store_url: str, *, count: int, heartbeat_timeout_s: float,
    fault: str = "", **features: Any,
) -> Loopback:  # fmt: skip
    """The demo project with ``count`` features initialised, its store ``store_url``, its
    attempts on the temporal executor through ``server``, ``origin`` a bare repository."""
    root = create_demo_project(base / "p").path
    state, journal = base / "state", base / "journal"
    journal.mkdir(mode=0o700)
    data = scripted_config(state, fault=fault, **features)
    data["providers"]["claude-code"]["env"][JOURNAL_ENV] = str(journal)
    data["store"] = {"url": store_url}
    data["executor"] = {
        "name": "temporal", "address": server.address, "task_queue": "tmops",
        "heartbeat_timeout_s": heartbeat_timeout_s,
    }  # fmt: skip
    config = write_config(base / "tmops.yaml", data)
    service = file_service(config)
    names = [f"feature-{number:02d}" for number in range(1, count + 1)]
    for name in names:
        new_feature(service, root, name)
    remote = base / "remote.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    git(root, "remote", "add", "origin", str(remote))
    git(root, "push", "--quiet", "origin", "--all")
    git(remote, "symbolic-ref", "HEAD", "refs/heads/main")  # what a clone checks out
    git(remote, "config", "core.logAllRefUpdates", "always")  # a reflog: when each push came
    store = open_store(root / ".tmops" / STORE_NAME, url=store_url)
    project = Project(base, root, config, state, service, store)
    return Loopback(Fleet(project, remote, server), names, journal, heartbeat_timeout_s)


def wait_for(check: Callable[[], Any], *, timeout: float, pending: Callable[[], str]) -> Any:
    """Poll ``check`` until it returns something truthy; on timeout, fail saying what was
    still pending (``pending()``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s: {pending()}"
        time.sleep(0.1)


def not_completed(loopback: Loopback) -> str:
    """The features whose run has not completed, with their status, for a message."""
    left = {f: s for f, s in loopback.statuses().items() if s != "completed"}
    return f"{len(left)} of {len(loopback.features)} runs not completed: {left}"


def all_ended(loopback: Loopback) -> bool:
    return all(status in ENDED for status in loopback.statuses().values())


def figures(loopback: Loopback) -> dict[str, dict[str, int]]:
    """Per phase: the store's attempts, the agents started (the journal: Temporal's tries
    included), and the retries (agents started beyond one per feature and phase)."""
    attempts: Counter[str] = Counter()
    for feature in loopback.features:
        attempts.update(a.phase for a in loopback.project.store.attempts(feature, RUN))
    starts: Counter[str] = Counter()
    per_feature: Counter[tuple[str, str]] = Counter()
    for line in loopback.journal_starts():
        if line.get("run") == RUN and line.get("feature") in loopback.features:
            starts[str(line["role"])] += 1
            per_feature[(str(line["feature"]), str(line["role"]))] += 1
    retries: Counter[str] = Counter()
    for (_, phase), number in per_feature.items():
        retries[phase] += number - 1
    return {
        phase: {"attempts": attempts[phase], "agents": starts[phase], "retries": retries[phase]}
        for phase in PHASES
    }
