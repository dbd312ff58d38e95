"""Shared helpers of the engine tests: a project, its config and a run driven to the end.

The agent is the scripted stand-in for ``claude -p`` (``tmops-scripted-agent``), driven by the
real ``claude-code`` provider; faults are injected with ``TMOPS_SCRIPTED_FAULT`` through
``providers.<name>.env``. Used by ``test_engine_*.py``, ``test_concurrency.py`` and
``test_start_cli.py``; a plain module, not a conftest: it holds no fixture.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tmops_core.config import LoadedConfig, load_config, parse_config
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.demo_project import DEMO_FEATURE, DEMO_TASK_SPEC, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.store import STORE_NAME, AttemptRecord, SQLiteStore, Store
from tmops_core.workspace.features import InitRequest, InitResult

AGENT = str(Path(sys.executable).with_name("tmops-scripted-agent"))
TEST_COMMAND = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
PHASES = ("orchestrator", "tester", "implementer", "verifier")
SHORT_WORKFLOW = ["orchestrator", "tester"]
COMPLETIONS = {
    "orchestrator": "001-discovery-trigger.md",
    "tester": "003-tests-complete.md",
    "implementer": "005-impl-complete.md",
    "verifier": "007-verify-complete.md",
}
TRIGGERS = ("004-impl-trigger.md", "006-verify-trigger.md")
TEST_SUBJECT = "test(slug): "
FEAT_SUBJECT = "feat(slug): "
WAIT_S = 60.0


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def scripted_config(
    state: Path,
    *,
    fault: str = "",
    provider: Mapping[str, Any] | None = None,
    jsonl: Path | None = None,
    **features: Any,
) -> dict[str, Any]:
    """Config data: the claude-code provider runs the scripted agent (state kept in ``state``)."""
    env = {"TMOPS_SCRIPTED_STATE_DIR": str(state)}
    if fault:
        env["TMOPS_SCRIPTED_FAULT"] = fault
    data: dict[str, Any] = {
        "providers": {
            "claude-code": {
                "command": AGENT,
                "permission_mode": "bypassPermissions",
                "env": env,
                **(provider or {}),
            }
        },
        "features": {
            "default_provider": "claude-code",
            "test_command": TEST_COMMAND,
            "checkpoint_timeout": 30,
            **features,
        },
    }
    if jsonl is not None:
        data["telemetry"] = {"outputs": {"jsonl": {"path": str(jsonl)}}}
    return data


def in_memory_service(data: Mapping[str, Any]) -> Service:
    return Service(LoadedConfig(parse_config(dict(data)), None), create_plugin_manager())


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data)))
    path.chmod(0o600)
    return path


def file_service(path: Path) -> Service:
    """A service whose config comes from a file, so a spawned engine reads the same config."""
    return Service(load_config(path), create_plugin_manager())


def new_feature(service: Service, root: Path, feature: str = DEMO_FEATURE) -> InitResult:
    result = service.init(InitRequest(feature=feature, workspace=root))
    result.task_spec.write_text(DEMO_TASK_SPEC)
    return result


def serve(service: Service, root: Path) -> None:
    assert service.serve_engine(workspace=root, idle_exit_s=0.2, retry_backoff_s=(0.05,))


def open_store(root: Path) -> Store:
    store = SQLiteStore.open_existing(root / ".tmops" / STORE_NAME)
    assert store is not None
    return store


def wait_for(
    service: Service, feature: str, root: Path, *, done: Callable[[str], bool], timeout: float
) -> dict[str, Any]:
    """Poll ``status()`` until ``done(status)``; the last status either way."""
    deadline = time.monotonic() + timeout
    while True:
        status = service.status(feature, workspace=root)
        if done(status["status"]) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def ended(state: str) -> bool:
    return state not in {"queued", "running"}


def jsonl_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Finished:
    """A project whose feature was started and driven by the engine until the queue emptied."""

    service: Service
    root: Path
    init: InitResult
    answer: dict[str, Any]
    start_s: float
    queued_status: str
    store: Store

    @property
    def feature(self) -> str:
        return self.init.feature

    def status(self) -> dict[str, Any]:
        return self.service.status(self.feature, workspace=self.root)

    def attempts(self, phase: str | None = None) -> list[AttemptRecord]:
        rows = self.store.attempts(self.feature, self.init.run)
        return [a for a in rows if phase is None or a.phase == phase]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = self.service.events_since(self.feature, workspace=self.root)
        return [e for e in rows if kind is None or e["event_type"] == f"orchestration.{kind}"]

    def close(self) -> None:
        self.store.close()
        self.service.close()


def run_workflow(
    base: Path,
    data: Mapping[str, Any],
    *,
    prepare: Callable[[InitResult], None] | None = None,
) -> Finished:
    """Make the demo project in ``base``, init + start its feature and serve the queue."""
    root = create_demo_project(base / "p").path
    service = in_memory_service(data)
    init = new_feature(service, root)
    if prepare is not None:
        prepare(init)
    began = time.monotonic()
    answer = service.start(init.feature, workspace=root, spawn=False)
    start_s = time.monotonic() - began
    queued = service.status(init.feature, workspace=root)["status"]
    serve(service, root)
    return Finished(service, root, init, answer, start_s, queued, open_store(root))


def by_phase(rows: list[AttemptRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.phase] = counts.get(row.phase, 0) + 1
    return counts
