"""MCP: ``tmops_get_status`` over stdio against a no-op tool, and the cold start of a server."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench_init import default_service
from bench_stats import dist, ms, ratio, target

STATUS_TARGET = 1.3  # tmops_get_status within 1.3x a no-op tool, p50 and p95
STATUS_TARGET_NAMES = (
    "tmops_get_status p50 <= 1.3x no-op p50",
    "tmops_get_status p95 <= 1.3x no-op p95",
)

NOOP_SERVER = '''\
from pydantic import BaseModel
from mcp.server.mcpserver import MCPServer


class Pong(BaseModel):
    ok: bool
    feature: str


mcp = MCPServer("noop", version="0.0.0")


@mcp.tool()
def noop(feature: str) -> Pong:
    """Do nothing and say so."""
    return Pong(ok=True, feature=feature)


if __name__ == "__main__":
    mcp.run()
'''

MCP_FEATURE = "status-bench"
STATUS_ARGS = {"feature": MCP_FEATURE}
MINIMAL_ARGS = {"feature": MCP_FEATURE, "include_sessions": False, "include_checkpoints": False}


def tmops_command() -> list[str]:
    script = Path(sys.executable).with_name("tmops")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tmops_core.surfaces.cli"]


def prepare_mcp_repo(work: Path) -> Path:
    """A project with one feature whose first two phases are done (so status has checkpoints
    to list), under the default config and plugins, as `tmops mcp` will see it."""
    from tmops_core.service.demo_project import create_demo_project
    from tmops_core.workspace.features import InitRequest

    repo = work / "mcp-repo"
    create_demo_project(repo)
    service = default_service()
    try:
        result = service.init(InitRequest(feature=MCP_FEATURE, workspace=repo))
        specs = service.plugins.phases()
        for name in service.config.features.default_phases[:2]:
            spec = specs[name].spec
            for checkpoint in filter(None, (spec.trigger_checkpoint, spec.completion_checkpoint)):
                (result.checkpoint_dir / checkpoint).write_text(
                    f"# Checkpoint: {checkpoint}\n**From:** Bench\n**To:** Bench\n"
                    f"**Feature:** {MCP_FEATURE}\n**Run:** {result.run}\n**Status:** complete\n",
                    encoding="utf-8",
                )
    finally:
        service.close()
    return repo


def _server_params(argv: list[str], cwd: Path) -> Any:
    from mcp import StdioServerParameters

    return StdioServerParameters(command=argv[0], args=argv[1:], cwd=str(cwd))


async def _timed_calls(
    sessions: list[tuple[str, Any, str, dict[str, Any]]], warmup: int, calls: int
) -> dict[str, list[float]]:
    """One call on each session in turn, ``warmup + calls`` times; the last ``calls`` count."""
    out: dict[str, list[float]] = {key: [] for key, *_ in sessions}
    for index in range(warmup + calls):
        for key, session, tool, arguments in sessions:
            t0 = time.perf_counter_ns()
            result = await session.call_tool(tool, arguments)
            elapsed = time.perf_counter_ns() - t0
            if result.is_error:
                raise RuntimeError(f"{tool} failed: {result.content}")
            if index >= warmup:
                out[key].append(ms(elapsed))
    return out


async def _mcp_round_trips(
    status_argv: list[str], noop_argv: list[str], repo: Path, args: argparse.Namespace, errlog: Any
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, list[float]]]:
    from mcp import ClientSession, stdio_client

    # The client's share of each round trip: the SDK client re-validates the structured
    # content against the tool's output schema on every call (validate_tool_result).
    validation: dict[str, list[float]] = defaultdict(list)
    original = ClientSession.validate_tool_result

    async def timed_validate(self: Any, name: str, result: Any) -> None:
        t0 = time.perf_counter_ns()
        try:
            await original(self, name, result)
        finally:
            validation[name].append(ms(time.perf_counter_ns() - t0))

    ClientSession.validate_tool_result = timed_validate  # type: ignore[method-assign]
    sizes: dict[str, int] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            opened = {}
            for key, argv in (("noop", noop_argv), ("status", status_argv)):
                streams = await stack.enter_async_context(
                    stdio_client(_server_params(argv, repo), errlog=errlog)
                )
                opened[key] = await stack.enter_async_context(ClientSession(*streams))
                await opened[key].initialize()
            sessions = [
                ("noop", opened["noop"], "noop", {"feature": MCP_FEATURE}),
                ("status", opened["status"], "tmops_get_status", STATUS_ARGS),
                # informative: the same server without the optional sessions and checkpoints
                ("status_minimal", opened["status"], "tmops_get_status", MINIMAL_ARGS),
            ]
            for key, session, tool, arguments in sessions:
                first = await session.call_tool(tool, arguments)
                if first.is_error:
                    raise RuntimeError(f"{tool} failed: {first.content}")
                sizes[key] = len(first.model_dump_json(by_alias=True, exclude_none=True))
            latencies = await _timed_calls(sessions, args.warmup, args.calls)
    finally:
        ClientSession.validate_tool_result = original  # type: ignore[method-assign]
    statuses = validation["tmops_get_status"][-2 * args.calls :]
    client = {
        "noop": validation["noop"][-args.calls :],
        "status": statuses[0::2],
        "status_minimal": statuses[1::2],
    }
    return latencies, sizes, client


async def _server_side_in_process(repo: Path, samples: int) -> dict[str, dict[str, Any]]:
    """Each server's ``call_tool`` in this process (argument validation, the tool, conversion
    and output validation of the result; no transport), and a JSON dump + parse of the result."""
    from mcp.types import CallToolResult

    from tmops_core.surfaces.mcp_server import build_server

    namespace: dict[str, Any] = {"__name__": "noop_in_process"}
    exec(compile(NOOP_SERVER, "noop_server.py", "exec"), namespace)  # noqa: S102 - our own code
    service = default_service()
    out: dict[str, dict[str, Any]] = {}
    try:
        servers = (
            ("noop", namespace["mcp"], "noop"),
            ("status", build_server(service, workspace=repo), "tmops_get_status"),
        )
        for key, server, tool in servers:
            call: list[float] = []
            codec: list[float] = []
            for index in range(samples + 20):
                t0 = time.perf_counter_ns()
                result = await server.call_tool(tool, {"feature": MCP_FEATURE})
                t1 = time.perf_counter_ns()
                text = result.model_dump_json(by_alias=True, exclude_none=True)
                CallToolResult.model_validate_json(text)
                t2 = time.perf_counter_ns()
                if index >= 20:
                    call.append(ms(t1 - t0))
                    codec.append(ms(t2 - t1))
            out[key] = {"call_tool_ms": dist(call), "json_dump_and_parse_ms": dist(codec)}
    finally:
        service.close()
    return out


def _status_in_process(repo: Path, samples: int) -> list[float]:
    """``Service.status`` called directly (what the tool does, without MCP)."""
    service = default_service()
    out = []
    try:
        for index in range(samples + 20):
            t0 = time.perf_counter_ns()
            service.status(MCP_FEATURE, workspace=repo)
            if index >= 20:
                out.append(ms(time.perf_counter_ns() - t0))
    finally:
        service.close()
    return out


async def _cold_start(argv: list[str], cwd: Path, errlog: Any) -> float:
    from mcp import ClientSession, stdio_client

    t0 = time.perf_counter_ns()
    async with (
        stdio_client(_server_params(argv, cwd), errlog=errlog) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        elapsed = time.perf_counter_ns() - t0
    return ms(elapsed)


def _wall_ms(argv: list[str]) -> float:
    t0 = time.perf_counter_ns()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return ms(time.perf_counter_ns() - t0)


def _mcp_status(
    args: argparse.Namespace, status_argv: list[str], noop_argv: list[str], repo: Path, errlog: Any
) -> dict[str, Any]:
    import anyio

    latencies, sizes, client = anyio.run(
        _mcp_round_trips, status_argv, noop_argv, repo, args, errlog
    )
    status_d, noop_d = dist(latencies["status"]), dist(latencies["noop"])
    return {
        "description": f"call_tool round trip over stdio (SDK ClientSession), {args.calls} calls "
        f"after {args.warmup} warm-up, the servers called in turn",
        "status_ms": status_d,
        "floor_noop_ms": noop_d,
        "ratio_p50": ratio(status_d["p50"], noop_d["p50"]),
        "ratio_p95": ratio(status_d["p95"], noop_d["p95"]),
        "status_minimal_ms": dist(latencies["status_minimal"]),
        "profile": {
            "service_status_in_process_ms": dist(_status_in_process(repo, args.calls)),
            "client_validate_tool_result_ms": {k: dist(v) for k, v in client.items()},
            "server_in_process": anyio.run(_server_side_in_process, repo, args.calls),
            "result_json_bytes": sizes,
        },
    }


def _cold_starts(
    args: argparse.Namespace, status_argv: list[str], noop_argv: list[str], repo: Path, errlog: Any
) -> dict[str, Any]:
    import anyio

    tmops_cold, noop_cold, sdk_import, bare = [], [], [], []
    for _ in range(args.cold):
        tmops_cold.append(anyio.run(_cold_start, status_argv, repo, errlog))
        noop_cold.append(anyio.run(_cold_start, noop_argv, repo, errlog))
        sdk_import.append(_wall_ms([sys.executable, "-c", "import mcp.server.mcpserver"]))
        bare.append(_wall_ms([sys.executable, "-c", "pass"]))
    tmops_d, import_d = dist(tmops_cold), dist(sdk_import)
    return {
        "description": "spawn -> initialize answered (SDK stdio client), against the wall time "
        "of importing the SDK in a fresh interpreter; no target",
        "tmops_mcp_ms": tmops_d,
        "noop_server_ms": dist(noop_cold),
        "import_mcp_server_mcpserver_ms": import_d,
        "python_bare_ms": dist(bare),
        "ratio_p50_tmops_vs_import": ratio(tmops_d["p50"], import_d["p50"]),
    }


def run_mcp(
    args: argparse.Namespace, work: Path, results: dict[str, Any], sections: set[str]
) -> None:
    repo = prepare_mcp_repo(work)
    noop = work / "noop_server.py"
    noop.write_text(NOOP_SERVER, encoding="utf-8")
    status_argv = [*tmops_command(), "mcp", "--workspace", str(repo)]
    noop_argv = [sys.executable, str(noop)]
    with open(work / "mcp-servers.log", "w", encoding="utf-8") as errlog:
        if "mcp" in sections:
            status = _mcp_status(args, status_argv, noop_argv, repo, errlog)
            results["mcp_status"] = status
            for name, key in zip(STATUS_TARGET_NAMES, ("ratio_p50", "ratio_p95"), strict=True):
                results["targets"].append(target(name, status[key], STATUS_TARGET))
        if "cold" in sections:
            results["cold_start"] = _cold_starts(args, status_argv, noop_argv, repo, errlog)
