"""The MCP server as a real ``tmops mcp`` subprocess over stdio.

The SDK client (both protocol eras) and raw newline-delimited JSON-RPC, which shows that stdout
carries nothing but protocol.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import anyio
import pytest
from mcp import Client, ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS
from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_PROTOCOL_VERSION

from tmops_core import __version__

from .mcp_support import ALLOWED_NAME, PHASES, TIMEOUT_S, TMOPS, TOOLS, server_env, text_of


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stdio_params(repo: Path, cwd: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=str(TMOPS),
        args=["mcp", "--workspace", str(repo)],
        env=server_env(),
        cwd=str(cwd),
    )


@pytest.mark.anyio
async def test_stdio_session_initializes_lists_inits_and_reports_status(
    repo: Path, tmp_path: Path
) -> None:
    errlog = tmp_path / "server-stderr.txt"
    with anyio.fail_after(TIMEOUT_S), errlog.open("w") as err:
        async with (
            stdio_client(stdio_params(repo, tmp_path / "work"), errlog=err) as (read, write),
            ClientSession(read, write) as session,
        ):
            hello = await session.initialize()
            tools = (await session.list_tools()).tools
            init = await session.call_tool("tmops_init_feature", {"feature": "auth-api"})
            status = await session.call_tool("tmops_get_status", {"feature": "auth-api"})
            unknown = await session.call_tool("tmops_get_status", {"feature": "no-such"})
            malicious = await session.call_tool(
                "tmops_init_feature", {"feature": "../../../etc/passwd"}
            )

    assert hello.protocol_version == LATEST_HANDSHAKE_VERSION
    assert hello.server_info.name == "tmops"
    assert hello.server_info.version == __version__
    assert "tmops_init_feature" in (hello.instructions or "")
    assert {tool.name for tool in tools} == TOOLS
    assert all(tool.input_schema["additionalProperties"] is False for tool in tools)

    assert init.is_error is False
    assert init.structured_content is not None
    assert init.structured_content["workspace"] == str(repo)
    assert Path(init.structured_content["task_spec"]).is_file()
    assert "\n" not in text_of(init)

    assert status.is_error is False
    assert status.structured_content is not None
    phases = status.structured_content["phase_progress"]["phases"]
    assert [(p["phase"], p["status"]) for p in phases] == [(p, "pending") for p in PHASES]
    assert status.structured_content["next_action"].startswith("edit TASK_SPEC.md, then start")

    assert unknown.is_error is True
    assert "no feature named 'no-such'" in text_of(unknown)
    assert malicious.is_error is True
    assert ALLOWED_NAME in text_of(malicious)
    assert not (tmp_path / "etc").exists()


@pytest.mark.anyio
async def test_stdio_client_speaks_the_current_protocol_too(repo: Path, tmp_path: Path) -> None:
    with anyio.fail_after(TIMEOUT_S):
        async with Client(stdio_params(repo, tmp_path / "work")) as client:
            protocol = client.protocol_version
            name = client.server_info.name
            init = await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
            listing = await client.call_tool("tmops_list_features", {})
            bad = await client.call_tool("tmops_get_status", {"feature": "auth-api", "x": 1})
    assert protocol == LATEST_PROTOCOL_VERSION
    assert name == "tmops"
    assert init.is_error is False
    assert listing.structured_content is not None
    assert [f["feature"] for f in listing.structured_content["features"]] == ["auth-api"]
    assert bad.is_error is True
    assert "Extra inputs are not permitted" in text_of(bad)


def tmops_prompt(repo: Path, cwd: Path, feature: str, phase: str) -> str:
    """What `tmops prompt FEATURE PHASE` prints, from the real command."""
    result = subprocess.run(
        [str(TMOPS), "prompt", feature, phase, "--workspace", str(repo)],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, env=server_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.anyio
async def test_stdio_resources_prompts_and_tool_hints(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("text of a file outside the project\n")
    status_uri = "tmops://features/auth-api/status"
    with anyio.fail_after(TIMEOUT_S * 2):
        async with (
            stdio_client(stdio_params(repo, tmp_path / "work")) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = (await session.list_tools()).tools
            resources = (await session.list_resources()).resources
            templates = (await session.list_resource_templates()).resource_templates
            init = await session.call_tool("tmops_init_feature", {"feature": "auth-api"})
            assert init.structured_content is not None
            checkpoints = Path(init.structured_content["checkpoint_dir"])
            (checkpoints / "001-discovery-trigger.md").write_text("# plan, by hand\n")
            (checkpoints / "003-tests-complete.md").symlink_to(outside)
            features = await session.read_resource("tmops://features")
            status = await session.read_resource(status_uri)
            plan = await session.read_resource(
                "tmops://features/auth-api/checkpoints/001-discovery-trigger.md"
            )
            errors = {}
            for tail in ("checkpoints/..%2Foutside.md", "checkpoints/003-tests-complete.md",
                         "summary"):  # fmt: skip
                with pytest.raises(MCPError) as caught:
                    await session.read_resource(f"tmops://features/auth-api/{tail}")
                errors[tail] = caught.value.error
            prompts = (await session.list_prompts()).prompts
            texts = {}
            for prompt in prompts:
                answer = await session.get_prompt(prompt.name, {"feature": "auth-api"})
                assert answer.messages[0].content.type == "text"
                texts[prompt.name] = answer.messages[0].content.text

    assert all(tool.annotations is not None and tool.title for tool in tools)
    hints = {tool.name: tool.annotations for tool in tools}
    assert hints["tmops_get_status"].read_only_hint is True  # type: ignore[union-attr]
    assert hints["tmops_cancel"].destructive_hint is True  # type: ignore[union-attr]
    assert [str(r.uri) for r in resources] == ["tmops://features"]
    assert {t.uri_template for t in templates} == {
        "tmops://features/{feature}/status",
        "tmops://features/{feature}/checkpoints/{name}",
        "tmops://features/{feature}/summary",
    }
    rows = json.loads(features.contents[0].text)["features"]  # type: ignore[union-attr]
    assert [(r["feature"], r["status"]) for r in rows] == [("auth-api", "in_progress")]
    data = json.loads(status.contents[0].text)  # type: ignore[union-attr]
    assert status.contents[0].mime_type == "application/json"
    assert [c["name"] for c in data["checkpoints"]] == ["001-discovery-trigger.md"]
    assert plan.contents[0].text == "# plan, by hand\n"  # type: ignore[union-attr]
    # a bad or absent name is invalid params; a file tmops refuses to open, an internal error
    assert {tail: e.code for tail, e in errors.items()} == {
        "checkpoints/..%2Foutside.md": INVALID_PARAMS,
        "checkpoints/003-tests-complete.md": INTERNAL_ERROR,
        "summary": INVALID_PARAMS,
    }
    assert (
        "invalid checkpoint name '../outside.md'" in errors["checkpoints/..%2Foutside.md"].message
    )
    assert "is a symlink" in errors["checkpoints/003-tests-complete.md"].message
    assert "SUMMARY.md of 'auth-api' run 'initial' is not written yet" in errors["summary"].message
    assert all("outside the project" not in e.message for e in errors.values())
    # each prompt is exactly what `tmops prompt FEATURE PHASE` prints
    assert [p.name for p in prompts][: len(PHASES)] == PHASES
    for phase, text in texts.items():
        assert text == tmops_prompt(repo, tmp_path / "work", "auth-api", phase), phase


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def test_stdout_carries_nothing_but_json_rpc(repo: Path, tmp_path: Path) -> None:
    config = tmp_path / "tmops.yaml"
    config.write_text("telemetry:\n  outputs:\n    console: true\n")  # events: really emitted
    config.chmod(0o600)
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": LATEST_HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "tmops_init_feature", "arguments": {"feature": "auth-api"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "tmops_get_status", "arguments": {"feature": "no-such"}},
        },
    ]
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [str(TMOPS), "mcp", "--workspace", str(repo)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=tmp_path / "work",
            env=server_env(TMOPS_CONFIG=str(config)),
        )
        assert process.stdin is not None
        assert process.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        reader.start()
        try:
            process.stdin.write("".join(json.dumps(r) + "\n" for r in requests))
            process.stdin.flush()
            # Wait for every answer before closing stdin: on EOF the SDK stops the server
            # and drops the answers of requests still in flight.
            received: list[str] = []
            answered: set[int] = set()
            deadline = time.monotonic() + TIMEOUT_S
            while answered != {1, 2, 3, 4}:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                assert line is not None, f"stdout closed early; got {received}"
                received.append(line)
                with_id = json.loads(line)
                if isinstance(with_id, dict) and "id" in with_id:
                    answered.add(with_id["id"])
            process.stdin.close()
            assert process.wait(timeout=TIMEOUT_S) == 0
            reader.join(timeout=TIMEOUT_S)
            while (line := lines.get(timeout=1)) is not None:
                received.append(line)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()

    messages = []
    for line in received:
        message = json.loads(line)  # every stdout line is JSON ...
        assert message["jsonrpc"] == "2.0"  # ... and JSON-RPC
        messages.append(message)
    by_id = {m["id"]: m for m in messages if "id" in m}
    assert set(by_id) == {1, 2, 3, 4}
    assert by_id[1]["result"]["serverInfo"] == {"name": "tmops", "version": __version__}
    assert by_id[1]["result"]["protocolVersion"] == LATEST_HANDSHAKE_VERSION
    assert {t["name"] for t in by_id[2]["result"]["tools"]} == TOOLS
    assert by_id[3]["result"]["isError"] is False
    assert by_id[3]["result"]["structuredContent"]["feature"] == "auth-api"
    assert by_id[4]["result"]["isError"] is True
    assert "no feature named 'no-such'" in by_id[4]["result"]["content"][0]["text"]
    # The telemetry event and the server's log went to stderr, never to stdout.
    stderr_text = stderr_path.read_text()
    assert "orchestration.feature.initialized" in stderr_text
    assert "orchestration.feature.initialized" not in "".join(received)
    assert "Tool 'tmops_get_status' failed" in stderr_text
