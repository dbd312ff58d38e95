"""start refuses what would waste a run: a TASK_SPEC.md still the template, a run already served."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.surfaces.cli import cli
from tmops_core.workspace.features import InitRequest
from tmops_core.workspace.layout import utc_now
from tmops_core.workspace.project_files import task_spec_template
from tmops_hookspecs import FeatureError

from .engine_support import in_memory_service, scripted_config, write_config
from .takeover_support import make_project, wait_until


def _untouched(tmp_path: Path) -> tuple[Service, Path, Path]:
    """The demo project with its feature initialised and TASK_SPEC.md left as init wrote it."""
    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state"))
    spec = service.init(InitRequest(feature=DEMO_FEATURE, workspace=root)).task_spec
    return service, root, spec


def test_start_refuses_the_untouched_template_and_says_what_to_do(tmp_path: Path) -> None:
    service, root, spec = _untouched(tmp_path)
    try:
        spec.write_text(spec.read_text() + "   \n\n")  # trailing whitespace changes nothing
        with pytest.raises(FeatureError) as refused:
            service.start(DEMO_FEATURE, workspace=root, spawn=False)
        message = str(refused.value)
        assert "still the template" in message
        assert str(spec.resolve()) in message  # the absolute path to edit
        assert f"tmops start {DEMO_FEATURE} --force" in message
        status = service.status(DEMO_FEATURE, workspace=root)
        assert (status["status"], status["run_id"]) == ("initialized", None)  # nothing queued
    finally:
        service.close()


def test_start_goes_on_once_the_spec_is_edited(tmp_path: Path) -> None:
    service, root, spec = _untouched(tmp_path)
    try:
        spec.write_text(spec.read_text().replace("<role>", "a maintainer"))
        assert service.start(DEMO_FEATURE, workspace=root, spawn=False)["status"] == "queued"
    finally:
        service.close()


def test_force_starts_on_the_template(tmp_path: Path) -> None:
    service, root, _ = _untouched(tmp_path)
    try:
        assert service.start(DEMO_FEATURE, workspace=root, spawn=False, force=True)["status"] == (
            "queued"
        )
    finally:
        service.close()


def test_the_cli_refuses_the_template_and_force_gets_past_it(tmp_path: Path) -> None:
    service, root, spec = _untouched(tmp_path)
    service.close()
    # An agent program that is not installed: the check after the template's, so --force is
    # seen to get past the template without an engine being started.
    data = scripted_config(tmp_path / "state", provider={"command": str(tmp_path / "gone")})
    config = write_config(tmp_path / "tmops.yaml", data)
    base = ["--config", str(config), "start", DEMO_FEATURE, "--workspace", str(root)]
    refused = CliRunner().invoke(cli, base)
    assert refused.exit_code == 1
    assert "still the template" in refused.output
    assert str(spec.resolve()) in refused.output
    forced = CliRunner().invoke(cli, [*base, "--force"])
    assert forced.exit_code == 1
    assert "still the template" not in forced.output
    assert "is not installed" in forced.output


# -- a run already queued or running ----------------------------------------------------------


def test_start_of_a_queued_run_no_engine_serves_starts_one(tmp_path: Path) -> None:
    """The engine that should serve a queued run is gone: start answers, it does not refuse."""
    project = make_project(tmp_path, fault="orchestrator:slow=60")
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        again = project.cli("start", DEMO_FEATURE)
        assert again.returncode == 0, again.stderr
        assert "no engine served it: one was started" in again.stdout
        wait_until(lambda: project.live_agent("orchestrator"), timeout=60, what="the agent")
    finally:
        project.cli("cancel", DEMO_FEATURE)
        project.close()


def test_start_of_a_run_a_live_engine_serves_is_an_error_naming_watch_and_cancel(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, fault="orchestrator:slow=60")
    try:
        first = project.cli("start", DEMO_FEATURE)
        assert first.returncode == 0, first.stderr
        wait_until(lambda: project.live_agent("orchestrator"), timeout=60, what="the agent")
        again = project.cli("start", DEMO_FEATURE)
        assert again.returncode == 1, again.stdout
        assert "is already running" in again.stderr
        assert f"tmops watch {DEMO_FEATURE}" in again.stderr
        assert f"tmops cancel {DEMO_FEATURE}" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        project.cli("cancel", DEMO_FEATURE)
        project.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_mcp_tool_refuses_the_template_unless_force(tmp_path: Path) -> None:
    from mcp import Client

    from tmops_core.surfaces.mcp_server import build_server

    project = make_project(tmp_path, fault="orchestrator:slow=60")
    spec = project.root / ".tmops" / DEMO_FEATURE / "runs" / "initial" / "TASK_SPEC.md"
    spec.write_text(task_spec_template(DEMO_FEATURE, "initial", utc_now()))
    try:
        async with Client(build_server(project.service, workspace=project.root)) as client:
            tool = "tmops_start_orchestration"
            refused = await client.call_tool(tool, {"feature": DEMO_FEATURE})
            assert refused.is_error is True
            text = refused.content[0].text  # type: ignore[union-attr]
            assert "still the template" in text
            assert str(spec.resolve()) in text
            assert "force: true" in text
            forced = await client.call_tool(tool, {"feature": DEMO_FEATURE, "force": True})
            assert forced.is_error is False, forced.content
            assert forced.structured_content is not None
            assert forced.structured_content["status"] == "queued"
            await client.call_tool("tmops_cancel", {"feature": DEMO_FEATURE})
    finally:
        project.close()
