"""An engine that cannot start is never silent: ``start`` (CLI and MCP) fails with the reason and
the run is marked failed with it, instead of waiting "queued" for an engine that never comes.

The engine is the real background ``tmops engine``. It is stopped from starting three ways: a
link planted at ``.tmops/logs/engine.log`` (or the lock, or the logs folder), a Python
environment in which it dies with a traceback on start-up (a module it imports is shadowed
through ``PYTHONPATH``, which only the new process reads), and a config it refuses (made
writable by every user after the caller loaded it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from mcp import Client

from tests.engine_support import (
    WAIT_S,
    ended,
    file_service,
    new_feature,
    open_store,
    scripted_config,
    wait_for,
    write_config,
)
from tests.links_support import KINDS, Outside, says_remove_the_link
from tmops_core.orchestration.daemon import first_error
from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.store import STORE_NAME
from tmops_core.surfaces.cli import cli
from tmops_core.surfaces.mcp_server import build_server

BROKEN = "this Python environment is broken: yaml cannot be imported"


@dataclass
class Project:
    root: Path
    config: Path
    service: Service

    def start(self, *more: str) -> Result:
        argv = ["--config", str(self.config), "start", DEMO_FEATURE, "--workspace", str(self.root)]
        return CliRunner().invoke(cli, [*argv, *more], catch_exceptions=False)

    def run_row(self) -> tuple[str, str | None]:
        store = open_store(self.root)
        try:
            run = store.run(DEMO_FEATURE, "initial")
        finally:
            store.close()
        assert run is not None
        return run.status, run.last_error


def make_project(base: Path) -> Project:
    root = create_demo_project(base / "p").path
    data = scripted_config(base / "state", default_phases=["orchestrator"], max_retries=0)
    config = write_config(base / "tmops.yaml", data)
    service = file_service(config)
    new_feature(service, root)
    return Project(root, config, service)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    made = make_project(tmp_path)
    yield made
    made.service.close()


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    return Outside.make(tmp_path / "outside")


# -- a link where the engine keeps its lock and its log ------------------------------------------

LINKED = {
    "engine-log": Path("logs/engine.log"),
    "logs-folder": Path("logs"),
    "engine-lock": Path("engine.lock"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", sorted(LINKED))
def test_start_exits_1_naming_the_link_and_the_run_is_failed_with_it(
    project: Project, outside: Outside, where: str, kind: str
) -> None:
    link = outside.plant(project.root / ".tmops" / LINKED[where], kind)
    result = project.start()
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert says_remove_the_link(result.output, link), result.output
    assert f"tmops start {DEMO_FEATURE} --resume" in result.output
    status, error = project.run_row()
    assert status == "failed"
    assert error is not None
    assert str(link) in error
    assert outside.unchanged()


def test_once_the_link_is_gone_the_failed_run_resumes_and_completes(
    project: Project, outside: Outside
) -> None:
    link = outside.plant(project.root / ".tmops" / "logs" / "engine.log", "file")
    assert project.start().exit_code == 1
    link.unlink()
    result = project.start("--resume")
    assert result.exit_code == 0, result.output
    final = wait_for(project.service, DEMO_FEATURE, project.root, done=ended, timeout=WAIT_S)
    assert final["status"] == "completed", final["last_error"]
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_a_linked_store_is_refused_by_start_and_status(
    project: Project, outside: Outside, kind: str
) -> None:
    link = outside.plant(project.root / ".tmops" / STORE_NAME, kind)
    for command in ("start", "status"):
        argv = ["--config", str(project.config), command, DEMO_FEATURE]
        result = CliRunner().invoke(cli, [*argv, "--workspace", str(project.root)])
        assert result.exit_code == 1, result.output
        assert says_remove_the_link(result.output, link), result.output
    assert outside.unchanged()


# -- an engine that dies on start-up ------------------------------------------------------------


@dataclass
class Died:
    project: Project
    result: Result
    status: tuple[str, str | None]
    after: dict[str, object]


@pytest.fixture(scope="module")
def died(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Died]:
    base = tmp_path_factory.mktemp("died")
    shadow = base / "shadow"
    shadow.mkdir()
    (shadow / "yaml.py").write_text(f"raise RuntimeError({BROKEN!r})\n")
    made = make_project(base)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(shadow))  # read by the spawned engine only
        result = made.start()
    yield Died(made, result, made.run_row(), made.service.status(DEMO_FEATURE, workspace=made.root))
    made.service.close()


def test_start_exits_1_when_the_engine_dies_on_start_up(died: Died) -> None:
    assert died.result.exit_code == 1, died.result.output
    assert "the engine exited at start-up" in died.result.output


def test_start_reports_the_error_the_engine_died_of(died: Died) -> None:
    assert f"RuntimeError: {BROKEN}" in died.result.output
    assert "engine.log" in died.result.output  # where the whole traceback is


def test_the_run_is_failed_with_the_reason_not_left_queued(died: Died) -> None:
    status, error = died.status
    assert status == "failed"
    assert error is not None
    assert BROKEN in error


def test_status_shows_the_failed_run_and_its_reason(died: Died) -> None:
    assert died.after["status"] == "failed"
    assert BROKEN in str(died.after["last_error"])
    assert "tmops resume" in str(died.after["next_action"])


# -- the MCP tool ------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_mcp_start_is_an_error_with_the_reason_when_the_engine_refuses_to_start(
    project: Project,
) -> None:
    project.config.chmod(0o666)  # loaded already by this server; the new engine refuses it
    async with Client(build_server(project.service, workspace=project.root)) as client:
        result = await client.call_tool("tmops_start_orchestration", {"feature": DEMO_FEATURE})
        status = await client.call_tool("tmops_get_status", {"feature": DEMO_FEATURE})
    assert result.is_error is True
    text = " ".join(getattr(part, "text", "") for part in result.content)
    assert "writable by every user" in text
    assert f"chmod o-w {project.config}" in text
    assert status.structured_content is not None
    assert status.structured_content["status"] == "failed"
    assert "writable by every user" in status.structured_content["last_error"]


# -- reading the error back --------------------------------------------------------------------


def test_first_error_takes_a_user_error_with_its_hint() -> None:
    output = "Error: config x is writable by every user\n  hint: chmod o-w x\nlater\n  other\n"
    assert first_error(output) == "config x is writable by every user hint: chmod o-w x"


def test_first_error_takes_the_exception_line_of_a_traceback() -> None:
    output = (
        "Traceback (most recent call last):\n"
        '  File "a.py", line 1, in <module>\n'
        "    import yaml\n"
        "RuntimeError: broken\n"
        "During handling...\n"
    )
    assert first_error(output) == "RuntimeError: broken"


def test_first_error_takes_a_logged_error() -> None:
    output = "04:06:20.926 INFO    up\n04:06:20.930 ERROR   the store is locked\n"
    assert first_error(output) == "the store is locked"


def test_first_error_of_no_output_says_so() -> None:
    assert first_error("\n") == "it wrote nothing"
