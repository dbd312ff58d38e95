"""Strict input: MCP tool arguments are taken only as their schema types them (no "no" for
false, no 1 for true, no "5" for 5), and no error quotes more than 64 characters of a bad
value, over the SDK's in-memory client and on the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError

from tmops_core.service.operations import Service
from tmops_core.surfaces.cli import cli
from tmops_core.surfaces.mcp_input import StrictTool, make_strict
from tmops_core.surfaces.mcp_server import build_server

from .conftest import Connect
from .mcp_support import TOOLS, text_of

#: every boolean and integer argument of every tool (a test checks the list is complete)
TYPED: dict[tuple[str, str], str] = {
    ("tmops_get_status", "include_sessions"): "boolean",
    ("tmops_get_status", "include_checkpoints"): "boolean",
    ("tmops_start_orchestration", "resume"): "boolean",
    ("tmops_start_orchestration", "accept_branch"): "boolean",
    ("tmops_start_orchestration", "force"): "boolean",
    ("tmops_pause", "now"): "boolean",
    ("tmops_resume", "accept_branch"): "boolean",
    ("tmops_rollback", "dry_run"): "boolean",
    ("tmops_cleanup", "dry_run"): "boolean",
    ("tmops_cleanup", "force"): "boolean",
}
NOT_A_BOOLEAN = ["no", "yes", "true", "false", "0", 1, 0, 1.0, None, [], {}]
NOT_AN_INTEGER = ["5", 5.0, True, None, []]
#: arguments each tool needs
REQUIRED: dict[str, dict[str, Any]] = {
    "tmops_list_features": {},
    "tmops_cleanup": {},
    "tmops_get_prompt": {"feature": "auth-api", "phase": "tester"},
    "tmops_rollback": {"feature": "auth-api", "phase": "tester"},
}
#: a 1 MB value, of a letter no message has a run of
HUGE = "q" * (1024 * 1024)
#: "about 300 characters": the longest, a bad feature name, says what a name may be
SHORT = 320


@pytest.fixture
def connect(service: Service, repo: Path) -> Connect:
    return lambda: Client(build_server(service, workspace=repo))


def _required(tool: str) -> dict[str, Any]:
    return dict(REQUIRED.get(tool, {"feature": "auth-api"}))


@pytest.mark.anyio
async def test_the_schemas_type_every_argument_and_the_table_lists_every_typed_one(
    connect: Connect,
) -> None:
    async with connect() as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    typed = {}
    for name, tool in tools.items():
        schema = tool.input_schema
        assert schema["additionalProperties"] is False, name
        assert "strict" not in str(schema), name  # strictness is the server's, not a schema key
        for argument, spec in schema["properties"].items():
            assert "type" in spec or "anyOf" in spec or "enum" in spec, (name, argument)
            if spec.get("type") in ("boolean", "integer"):
                typed[name, argument] = spec["type"]
                assert isinstance(spec["default"], bool | int), (name, argument)
    assert typed == TYPED


@pytest.mark.anyio
@pytest.mark.parametrize(("tool", "argument"), sorted(TYPED))
async def test_a_boolean_or_integer_argument_takes_nothing_else(
    connect: Connect, repo: Path, tool: str, argument: str
) -> None:
    kind = TYPED[tool, argument]
    expected = "Input should be a valid boolean" if kind == "boolean" else "valid integer"
    async with connect() as client:
        for bad in NOT_A_BOOLEAN if kind == "boolean" else NOT_AN_INTEGER:
            result = await client.call_tool(tool, {**_required(tool), argument: bad})
            assert result.is_error is True, (argument, bad)
            text = text_of(result)
            assert f"invalid arguments: {argument}: {expected}, got " in text, (bad, text)
            assert "\n" not in text
    assert not (repo / ".tmops").exists()  # nothing was done with a value taken for another


@pytest.mark.anyio
async def test_true_and_false_are_still_taken(connect: Connect) -> None:
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        for flag in (True, False):
            result = await client.call_tool(
                "tmops_get_status",
                {"feature": "auth-api", "include_sessions": flag, "include_checkpoints": flag},
            )
            assert result.is_error is False, text_of(result)


def _string_arguments() -> list[tuple[str, str]]:
    cases = [(tool, "workspace") for tool in sorted(TOOLS)]
    cases += [(tool, "feature") for tool in sorted(TOOLS - {"tmops_list_features"})]
    cases += [
        (tool, "phase")
        for tool in ("tmops_get_prompt", "tmops_retry", "tmops_approve", "tmops_rollback")
    ]
    cases += [
        ("tmops_start_orchestration", "provider"),
        ("tmops_init_feature", "runType"),
        ("tmops_get_status", HUGE),  # an unknown argument's name
    ]
    return cases


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tool", "argument"),
    [pytest.param(t, a, id=f"{t}-{a[:20]}") for t, a in _string_arguments()],
)
async def test_a_1mb_value_gives_a_short_error_quoting_64_characters_of_it(
    connect: Connect, repo: Path, tool: str, argument: str
) -> None:
    value = "/" + HUGE if argument == "workspace" else HUGE
    async with connect() as client:
        # the feature is initialised, so that every tool gets as far as each argument
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        result = await client.call_tool(tool, {**_required(tool), argument: value})
    assert result.is_error is True
    text = text_of(result)
    # a refused workspace names the allowed roots: the server's project
    assert len(text) < SHORT + (len(str(repo)) if argument == "workspace" else 0), text[:SHORT]
    assert "q" * 65 not in text


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["init", HUGE], id="init"),
        pytest.param(["status", HUGE], id="status"),
        pytest.param(["init", "auth-api", "--branch", HUGE], id="branch"),
    ],
)
def test_the_cli_quotes_at_most_64_characters_of_a_1mb_value(
    repo: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert "q" * 65 not in result.output
    assert len(result.output) < SHORT + len(str(repo)), result.output[:SHORT]


@pytest.mark.anyio
async def test_an_integer_argument_takes_only_an_integer() -> None:
    # no tool has one yet: the same strict tool, built as the server builds its tools
    async def tmops_sample(count: int = 1) -> str:
        return f"{count}"

    tool = make_strict(StrictTool.from_function(tmops_sample))
    assert tool.parameters["properties"]["count"]["type"] == "integer"
    assert await tool.run({"count": 5}, None) == "5"  # type: ignore[arg-type]
    for bad in NOT_AN_INTEGER:
        with pytest.raises(ToolError, match=r"invalid arguments: count: Input should be a valid"):
            await tool.run({"count": bad}, None)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("sent", ["null", "[]", "{}", '"/"'])
async def test_a_string_argument_is_the_string_sent_never_json_decoded(
    connect: Connect, sent: str
) -> None:
    # "null" would otherwise be null: the server's default workspace instead of an error
    async with connect() as client:
        result = await client.call_tool("tmops_list_features", {"workspace": sent})
    assert result.is_error is True
    assert f"workspace {sent!r} must be the absolute path of an existing folder" in text_of(result)
