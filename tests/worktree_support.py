"""Shared helpers of the worktree tests: a real project with a bare remote, features in the
states cleanup must tell apart, and an independent measure of a folder (``du``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tmops_core.agents.processes import boot_clock, boot_id, process_start_time
from tmops_core.service.operations import Service
from tmops_core.workspace.features import InitRequest

from .engine_support import in_memory_service, open_store, scripted_config

NOW = "2026-01-01T00:00:00.000000Z"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def du_bytes(path: Path) -> int:
    """The disk ``path`` takes by ``du`` itself, the measure cleanup's report is checked on."""
    output = subprocess.run(
        ["du", "-s", "--block-size=1", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return int(output.split()[0])


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under ``root`` (links not followed) with a digest of what it is."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                found[relative] = "link:" + os.readlink(path)
            elif path.is_file():
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[relative] = "dir"
    return found


def new_project(base: Path) -> tuple[Path, Path]:
    """A git project on ``main`` with one commit, ``.env`` ignored, pushed to a bare remote."""
    remote = base / "remote.git"
    root = base / "project"
    root.mkdir()
    git(base, "init", "-q", "--bare", str(remote))
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "dev")
    (root / ".gitignore").write_text(".env\n")
    (root / "app.py").write_text("print('app')\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "initial")
    git(root, "remote", "add", "origin", str(remote))
    git(root, "push", "-q", "origin", "main")
    return root, remote


def commit_in(worktree: Path, name: str, text: str) -> str:
    (worktree / name).write_text(text)
    git(worktree, "add", name)
    git(worktree, "commit", "-q", "-m", f"add {name}")
    return git(worktree, "rev-parse", "HEAD").strip()


def add_caches(worktree: Path) -> None:
    """What agents and tools leave in a worktree: a venv, node_modules, byte code."""
    (worktree / ".venv" / "lib").mkdir(parents=True)
    (worktree / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (worktree / ".venv" / "lib" / "big.bin").write_bytes(os.urandom(256 * 1024))
    (worktree / "node_modules" / "left-pad").mkdir(parents=True)
    (worktree / "node_modules" / "left-pad" / "index.js").write_text("module.exports = 1\n")
    (worktree / "__pycache__").mkdir()
    (worktree / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0" * 5000)


@dataclass
class Project:
    root: Path
    remote: Path
    service: Service

    def init(self, feature: str) -> Path:
        result = self.service.init(InitRequest(feature=feature, workspace=self.root))
        return result.worktree

    def cancel(self, feature: str) -> None:
        self.service.cancel(feature, workspace=self.root)

    def queue(self, feature: str) -> None:
        self.service.start(feature, workspace=self.root, spawn=False, force=True)

    def run_it(self, feature: str) -> None:
        """Queue the run and admit it for an engine that is this process: ``running``."""
        self.queue(feature)
        store = open_store(self.root)
        start = process_start_time(os.getpid())
        assert start is not None
        engine, _ = store.acquire_lease(
            pid=os.getpid(), start_time=start, boot_id=boot_id(),
            lease_until=boot_clock() + 600, now=NOW, alive=lambda _: False,
        )  # fmt: skip
        store.admit_run(feature, "initial", engine_id=engine.id, engine_pid=os.getpid(), now=NOW)
        store.close()

    def status(self, feature: str) -> dict[str, Any]:
        return self.service.status(feature, workspace=self.root, take_over=False)


def project(base: Path, **features: Any) -> Project:
    root, remote = new_project(base)
    data: Mapping[str, Any] = scripted_config(base / "state", **features)
    return Project(root, remote, in_memory_service(data))
