"""Fuzzing every MCP tool: in memory (both client modes) and over stdio (a real ``tmops mcp``).

Each example is one ``tools/call``. Every answer must be a result or ``isError`` with a message
(no protocol error, no crash), within :data:`~tests.fuzz.conftest.CALL_TIMEOUT_S`; an invalid
call (:func:`~tests.fuzz.mcp_strategies.invalid_calls`) must be ``isError``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters

from tmops_core.service.operations import Service
from tmops_core.surfaces.mcp_server import build_server

from .conftest import EXAMPLES, fuzz_settings
from .mcp_strategies import Call, Context, invalid_calls, valid_calls
from .mcp_support import FuzzClient, fuzz_client, problem_with

pytestmark = pytest.mark.fuzz

TMOPS = Path(sys.executable).with_name("tmops")
#: a stdio call crosses a pipe and a process: a tenth of the examples unless CI says otherwise
STDIO_EXAMPLES = int(os.environ.get("TMOPS_FUZZ_STDIO_EXAMPLES", max(1, EXAMPLES // 10)))


def a_file_in(folder: Path) -> Path:
    path = folder / "a-file.txt"
    path.write_text("not a folder\n")
    return path


@pytest.fixture(scope="module", params=["auto", "legacy"])
def in_memory(
    request: pytest.FixtureRequest, fuzz_service: Service, fuzz_repo: Path
) -> Iterator[tuple[FuzzClient, Context]]:
    """``auto`` calls the handlers directly; ``legacy`` goes through JSON-RPC messages."""
    client = Client(build_server(fuzz_service, workspace=fuzz_repo), mode=request.param)
    with fuzz_client(client, "in-memory") as fuzz:
        yield fuzz, fuzz.context(fuzz_service, fuzz_repo, a_file_in(fuzz_repo.parent))


@pytest.fixture(scope="module")
def over_stdio(
    fuzz_service: Service, fuzz_repo: Path, fuzz_config: Path
) -> Iterator[tuple[FuzzClient, Context]]:
    params = StdioServerParameters(
        command=str(TMOPS),
        args=["--config", str(fuzz_config), "mcp", "--workspace", str(fuzz_repo)],
        # the caller's PATH (git), and a HOME of its own: no user config reaches the server
        env={"PATH": os.environ["PATH"], "HOME": str(fuzz_repo.parent)},
        cwd=str(fuzz_repo.parent),
    )
    with fuzz_client(Client(params), "stdio") as fuzz:
        yield fuzz, fuzz.context(fuzz_service, fuzz_repo, a_file_in(fuzz_repo.parent))


def check(fuzz: FuzzClient, call: Call) -> None:
    tool, args, wrong = call
    result = fuzz.call(tool, args)
    problem = problem_with(result, tool, must_fail=bool(wrong))
    shown = repr(args) if len(repr(args)) < 500 else f"{repr(args)[:500]}..."
    assert problem is None, f"{tool} {wrong or 'valid-shaped'}: {problem}; arguments {shown}"


def test_in_memory_tool_lists_every_tool(in_memory: tuple[FuzzClient, Context]) -> None:
    # the fuzzers take their tools from list_tools(): an empty list would fuzz nothing
    assert {tool.name for tool in in_memory[1].tools} >= {"tmops_init_feature", "tmops_cancel"}


# The strategies need the server's tools, known only once it runs: drawn with st.data().


@given(data=st.data())
@fuzz_settings()
def test_in_memory_invalid_calls_are_refused(
    in_memory: tuple[FuzzClient, Context], data: st.DataObject
) -> None:
    fuzz, context = in_memory
    check(fuzz, data.draw(invalid_calls(context), label="call"))


@given(data=st.data())
@fuzz_settings()
def test_in_memory_valid_shaped_calls_answer_properly(
    in_memory: tuple[FuzzClient, Context], data: st.DataObject
) -> None:
    fuzz, context = in_memory
    check(fuzz, data.draw(valid_calls(context), label="call"))


@given(data=st.data())
@fuzz_settings(STDIO_EXAMPLES)
def test_stdio_calls_answer_properly(
    over_stdio: tuple[FuzzClient, Context], data: st.DataObject
) -> None:
    fuzz, context = over_stdio
    calls = st.one_of(invalid_calls(context), valid_calls(context))
    check(fuzz, data.draw(calls, label="call"))
