"""What a fuzzed MCP call must answer, and the client the in-memory and stdio fuzzers share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import Client
from mcp.types import CallToolResult, Tool

from tmops_core.service.operations import Service

from .conftest import CALL_TIMEOUT_S, CALLS, READY_FEATURE
from .mcp_strategies import Args, Context


class FuzzClient:
    """An MCP client kept open across examples, driven from sync hypothesis tests."""

    def __init__(self, portal: BlockingPortal, client: Client, transport: str) -> None:
        self.portal = portal
        self.client = client
        self.transport = transport

    def call(self, tool: str, args: Args) -> CallToolResult:
        """The answer, or an exception: a protocol error, or TimeoutError for a hang."""

        async def guarded() -> CallToolResult:
            with anyio.fail_after(CALL_TIMEOUT_S):
                return await self.client.call_tool(tool, args)

        CALLS[self.transport] += 1
        return self.portal.call(guarded)

    def context(self, service: Service, workspace: Path, a_file: Path) -> Context:
        async def tools() -> list[Tool]:
            return list((await self.client.list_tools()).tools)

        return Context(
            tools=self.portal.call(tools),
            workspace=str(workspace),
            a_file=str(a_file),
            phases=frozenset(service.plugins.phases()),
            providers=frozenset(service.plugins.providers()),
        )


@contextmanager
def fuzz_client(client: Client, transport: str) -> Iterator[FuzzClient]:
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(client) as entered,
    ):
        fuzz = FuzzClient(portal, entered, transport)
        init = fuzz.call("tmops_init_feature", {"feature": READY_FEATURE})
        assert init.is_error is False, init.content
        yield fuzz


def problem_with(result: CallToolResult, tool: str, *, must_fail: bool) -> str | None:
    """Why ``result`` is not a proper answer, or None: a crash is an error without a message
    (the SDK hides an unexpected exception's text), a success has its structured content."""
    texts = [c.text for c in result.content if c.type == "text"]
    text = "\n".join(texts)
    if result.is_error:
        bare = f"Error executing tool {tool}"
        if not text.strip() or text.strip() == bare:
            return f"crash: an error without a message ({text!r}): see the server's log"
        return None
    if must_fail:
        return f"answered without an error: {text[:300]!r}"
    if result.structured_content is None or not text:
        return f"a success without its structured content or text: {text[:300]!r}"
    return None
