"""The control tools (pause, resume, approve, retry, rollback, cancel) from the SDK client over
a real ``tmops mcp`` stdio subprocess, on a live run of the scripted agent served by a
background engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from tmops_core.service.demo_project import DEMO_FEATURE

from .engine_support import SHORT_WORKFLOW, WAIT_S, scripted_config, write_config
from .mcp_support import TMOPS, server_env, text_of
from .takeover_support import engines_of, make_project

#: the whole conversation, engine runs included
DEADLINE_S = 240


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _until(session: ClientSession, status: str) -> dict[str, Any]:
    """Poll tmops_get_status until the run is in ``status``."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = await session.call_tool("tmops_get_status", {"feature": DEMO_FEATURE})
        assert result.structured_content is not None, text_of(result)
        if result.structured_content["status"] == status:
            return result.structured_content
        assert time.monotonic() < deadline, result.structured_content
        await anyio.sleep(0.1)


async def _call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, {"feature": DEMO_FEATURE, **arguments})
    assert result.is_error is False, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


@pytest.mark.anyio
async def test_every_control_verb_over_stdio_on_a_live_run(tmp_path: Path) -> None:
    project = make_project(
        tmp_path, fault="tester:slow=60", default_phases=SHORT_WORKFLOW,
        approve_before=["tester"],
    )  # fmt: skip
    params = StdioServerParameters(
        command=str(TMOPS), args=["--config", str(project.config), "mcp", "--workspace",
                                  str(project.root)],
        env=server_env(), cwd=str(tmp_path),
    )  # fmt: skip
    errlog = tmp_path / "server-stderr.txt"
    try:
        with anyio.fail_after(DEADLINE_S), errlog.open("w") as err:
            async with (
                stdio_client(params, errlog=err) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                await _call(session, "tmops_start_orchestration")
                waiting = await _until(session, "paused")
                assert waiting["pause_reason"] == "awaiting_approval"
                resume = await session.call_tool("tmops_resume", {"feature": DEMO_FEATURE})
                assert resume.is_error is True
                assert "tmops approve" in text_of(resume)
                assert (await _call(session, "tmops_approve"))["approved"] == "tester"
                await _until(session, "running")
                while project.live_agent("tester") is None:  # the slow tester runs
                    await anyio.sleep(0.05)
                paused = await _call(session, "tmops_pause", now=True)
                assert (paused["status"], paused["agents_stopped"]) == ("paused", 1)

                dry = await _call(session, "tmops_rollback", phase="orchestrator", dry_run=True)
                assert dry["dry_run"] is True
                assert dry["phases"] == SHORT_WORKFLOW
                done = await _call(session, "tmops_rollback", phase="orchestrator")
                assert done["status"] == "paused"
                assert done["backup_ref"].startswith(f"refs/tmops/{DEMO_FEATURE}/")

                write_config(  # the next engine: no gate, a tester that is not slow
                    project.config, scripted_config(project.state, default_phases=SHORT_WORKFLOW)
                )
                while engines_of(project.root):  # the engine of the old config idles out
                    await anyio.sleep(0.1)
                retried = await _call(session, "tmops_retry", phase="orchestrator")
                assert retried["retry_from"] == "orchestrator"
                completed = await _until(session, "completed")
                assert completed["phase_progress"]["completed"] == 2
                cancel = await session.call_tool("tmops_cancel", {"feature": DEMO_FEATURE})
                assert cancel.is_error is True  # a completed run cannot be cancelled
                again = await session.call_tool("tmops_pause", {"feature": DEMO_FEATURE})
                assert again.is_error is True
                assert "is completed: there is nothing to pause" in text_of(again)
    except BaseException:
        print(errlog.read_text())
        raise
    finally:
        project.close()
