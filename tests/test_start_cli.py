"""``tmops start`` / ``watch`` / ``demo`` and the MCP start tool, with the real background engine.

The CLI is invoked through click's CliRunner with ``--config <file>`` (mode 0600) naming the
scripted agent as the claude-code provider's command; ``start`` spawns ``tmops engine`` as a
detached process that reads the same file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result
from mcp import Client

from tests.engine_support import (
    SHORT_WORKFLOW,
    WAIT_S,
    ended,
    file_service,
    new_feature,
    scripted_config,
    wait_for,
    write_config,
)
from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.surfaces.cli import cli
from tmops_core.surfaces.mcp_server import build_server


def tmops(*args: str, timeout: float = WAIT_S) -> Result:
    """Invoke the CLI in-process, but give up after ``timeout`` (``watch`` and ``--wait``
    follow a run with no time limit of their own; a run that never ends must fail the test,
    not hang it)."""
    outcome: list[Result | BaseException] = []

    def invoke() -> None:
        try:
            outcome.append(CliRunner().invoke(cli, list(args), catch_exceptions=False))
        except BaseException as exc:  # re-raised in the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=invoke, name="tmops-cli", daemon=True)
    worker.start()
    worker.join(timeout)
    assert outcome, f"`tmops {' '.join(args)}` did not finish within {timeout} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


@dataclass
class CliProject:
    root: Path
    config: Path
    service: Service


def cli_project(base: Path, **settings: Any) -> CliProject:
    """The demo project with its feature initialised, and a config file for the CLI."""
    root = create_demo_project(base / "p").path
    config = write_config(base / "tmops.yaml", scripted_config(base / "state", **settings))
    service = file_service(config)
    new_feature(service, root)
    return CliProject(root, config, service)


# -- tmops start (background) and tmops watch -----------------------------------------------------


@dataclass
class Started:
    project: CliProject
    result: Result
    #: the run's state as soon as ``tmops start`` returned
    after_start: str
    status: dict[str, Any]


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    project = cli_project(tmp_path_factory.mktemp("cli-start"))
    result = tmops(
        "--config", str(project.config), "start", DEMO_FEATURE, "--workspace", str(project.root)
    )
    after_start = project.service.status(DEMO_FEATURE, workspace=project.root)["status"]
    status = wait_for(project.service, DEMO_FEATURE, project.root, done=ended, timeout=WAIT_S)
    yield Started(project, result, after_start, status)
    project.service.close()


def test_start_returns_at_once_with_the_run_id(started: Started) -> None:
    assert started.result.exit_code == 0, started.result.output
    assert started.after_start in {"queued", "running"}  # the agents' work takes seconds
    assert f"(run id {started.status['run_id']})" in started.result.output
    assert "queued" in started.result.output


def test_start_spawns_the_background_engine_which_completes_the_run(started: Started) -> None:
    assert started.status["status"] == "completed", started.status["last_error"]
    assert started.status["phase_progress"]["completed"] == 4
    assert (started.project.root / ".tmops" / "logs" / "engine.log").is_file()


def test_watch_after_completion_prints_the_final_status_and_exits_0(started: Started) -> None:
    assert started.status["status"] == "completed"
    project = started.project
    result = tmops(
        "--config", str(project.config), "watch", DEMO_FEATURE, "--workspace", str(project.root)
    )
    assert result.exit_code == 0, result.output
    assert "verifier -> end" in result.output
    assert result.output.splitlines()[-1].startswith(f"{DEMO_FEATURE}: completed; next: ")


def test_start_of_a_completed_run_exits_1_with_a_hint(started: Started) -> None:
    assert started.status["status"] == "completed"
    project = started.project
    result = tmops(
        "--config", str(project.config), "start", DEMO_FEATURE, "--workspace", str(project.root)
    )
    assert result.exit_code == 1
    assert "has completed" in result.output
    assert f"tmops init {DEMO_FEATURE} --retry" in result.output
    assert "Traceback" not in result.output


# -- tmops start --wait ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def waited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Result]:
    project = cli_project(tmp_path_factory.mktemp("cli-wait"), default_phases=SHORT_WORKFLOW)
    yield tmops(
        "--config",
        str(project.config),
        "start",
        DEMO_FEATURE,
        "--workspace",
        str(project.root),
        "--wait",
    )
    project.service.close()


def test_start_wait_exits_0_when_the_run_completes(waited: Result) -> None:
    assert waited.exit_code == 0, waited.output
    assert waited.output.splitlines()[-1].startswith(f"{DEMO_FEATURE}: completed")


def test_start_wait_prints_the_transitions(waited: Result) -> None:
    lines = waited.output.splitlines()
    transitions = [line.split(" ", 1)[1].split(" (")[0] for line in lines if " -> " in line]
    assert transitions == ["orchestrator -> tester", "tester -> end"]
    assert any("session.started" in line for line in lines)


def test_start_wait_exits_1_when_the_run_fails(tmp_path: Path) -> None:
    project = cli_project(
        tmp_path, fault="*:crash:always", max_retries=0, default_phases=SHORT_WORKFLOW
    )
    try:
        result = tmops(
            "--config",
            str(project.config),
            "start",
            DEMO_FEATURE,
            "--workspace",
            str(project.root),
            "--wait",
        )
    finally:
        project.service.close()
    assert result.exit_code == 1, result.output
    assert f"{DEMO_FEATURE}: failed" in result.output
    assert "exit code 3" in result.output


# -- tmops demo -----------------------------------------------------------------------------------


def test_demo_runs_the_workflow_and_prints_the_commits_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the scripted agent keeps state there
    result = tmops("demo", "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    commits = [line.split(maxsplit=1)[1] for line in lines if line.startswith("  ")]
    assert [c.split(":")[0] for c in commits[:2]] == ["feat(slug)", "test(slug)"]
    summary = next(line for line in lines if line.startswith("summary: "))
    path = Path(summary.removeprefix("summary: "))
    assert path.name == "SUMMARY.md"
    assert path.is_file()


def test_demo_with_claude_code_but_no_claude_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = tmops("demo", "--provider", "claude-code", "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 1
    assert "provider 'claude-code' runs 'claude', which is not installed" in result.output
    assert not (tmp_path / "demo").exists()  # refused before anything was made
    assert "Traceback" not in result.output


# -- MCP: tmops_start_orchestration ---------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_mcp_start_returns_at_once_and_the_run_completes(tmp_path: Path) -> None:
    project = cli_project(tmp_path, default_phases=SHORT_WORKFLOW)
    try:
        async with Client(build_server(project.service, workspace=project.root)) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            schema = tools["tmops_start_orchestration"].input_schema
            assert schema["additionalProperties"] is False
            result = await client.call_tool("tmops_start_orchestration", {"feature": DEMO_FEATURE})
            right_after = await client.call_tool("tmops_get_status", {"feature": DEMO_FEATURE})
            assert result.is_error is False
            assert right_after.structured_content is not None
            # the call waited for the engine to come up, not for the agents' work (seconds)
            assert right_after.structured_content["status"] in {"queued", "running"}
            started = result.structured_content
            assert started is not None
            assert started["status"] == "queued"
            assert started["run_id"]
            deadline = time.monotonic() + WAIT_S
            while True:
                status = await client.call_tool("tmops_get_status", {"feature": DEMO_FEATURE})
                data = status.structured_content
                assert data is not None
                if ended(data["status"]) or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.1)
    finally:
        project.service.close()
    assert data["status"] == "completed", data["last_error"]
    assert data["run_id"] == started["run_id"]


@pytest.mark.anyio
async def test_mcp_start_of_an_unknown_feature_is_an_error(tmp_path: Path) -> None:
    project = cli_project(tmp_path)
    try:
        async with Client(build_server(project.service, workspace=project.root)) as client:
            result = await client.call_tool(
                "tmops_start_orchestration", {"feature": "nothing-here"}
            )
    finally:
        project.service.close()
    assert result.is_error is True
    assert "was not initialised" in result.content[0].text  # type: ignore[union-attr]
