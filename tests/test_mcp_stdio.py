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
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
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
