"""The MCP server's resources, prompts, tool hints and instructions, through the SDK's in-memory
``Client`` against ``build_server`` (both connect modes, as in ``test_mcp_server.py``).

The same are read over a real stdio subprocess in ``test_mcp_stdio.py`` and by the MCP
Inspector CLI in ``test_mcp_inspector.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS, TextResourceContents

from tmops_core.service import status as status_module
from tmops_core.service.operations import Service
from tmops_core.surfaces.mcp_server import TOOL_HINTS, build_server

from .conftest import Connect
from .mcp_support import ALLOWED_NAME, PHASES, TOOLS

TEMPLATES = {
    "tmops://features/{feature}/status",
    "tmops://features/{feature}/checkpoints/{name}",
    "tmops://features/{feature}/summary",
}
OUTSIDE_TEXT = "text of a file outside the project"
TRIGGER = (
    "# Checkpoint: 001-discovery-trigger.md\n**From:** Orchestrator\n**To:** Tester\n"
    "**Timestamp:** 2025-08-20 09:34:30\n**Feature:** auth-api\n**Run:** initial\n"
)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the project that no read may ever show."""
    secret = tmp_path / "outside" / "secret.md"
    secret.parent.mkdir()
    secret.write_text(OUTSIDE_TEXT + "\n")
    return secret


def checkpoints_of(repo: Path, feature: str = "auth-api", run: str = "initial") -> Path:
    return repo / ".tmops" / feature / "runs" / run / "checkpoints"


def only_text(contents: list[Any], uri: str) -> str:
    assert len(contents) == 1
    content = contents[0]
    assert isinstance(content, TextResourceContents)
    assert content.uri == uri
    return content.text


async def read(client: Client, uri: str) -> tuple[str, str | None]:
    """The text and mime type of the resource at ``uri``."""
    result = await client.read_resource(uri)
    return only_text(result.contents, uri), result.contents[0].mime_type


async def refused(client: Client, uri: str) -> MCPError:
    with pytest.raises(MCPError) as caught:
        await client.read_resource(uri)
    return caught.value


# -- listing --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_feature_list_and_the_three_templates_are_listed(connect: Connect) -> None:
    async with connect() as client:
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
    assert [(r.uri, r.mime_type) for r in resources] == [("tmops://features", "application/json")]
    assert {t.uri_template for t in templates} == TEMPLATES
    mimes = {t.uri_template.rsplit("/", 1)[-1]: t.mime_type for t in templates}
    assert mimes == {"status": "application/json", "{name}": "text/markdown",
                     "summary": "text/markdown"}  # fmt: skip
    for item in [*resources, *templates]:
        assert item.title
        assert item.description


# -- reading --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_feature_list_is_the_services_list(
    connect: Connect, service: Service, repo: Path
) -> None:
    async with connect() as client:
        empty, mime = await read(client, "tmops://features")
        await client.call_tool("tmops_init_feature", {"feature": "billing"})
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        listed, _ = await read(client, "tmops://features")
        tool = await client.call_tool("tmops_list_features", {})
    assert mime == "application/json"
    assert json.loads(empty) == {"features": [], "total_cost_usd": 0.0}
    data = json.loads(listed)
    assert [row["feature"] for row in data["features"]] == ["auth-api", "billing"]
    assert data == {
        "features": service.list_features(workspace=repo),
        "total_cost_usd": service.project_cost(workspace=repo),
    }
    assert data == tool.structured_content


@pytest.mark.anyio
async def test_the_status_resource_is_the_status_and_follows_the_files(
    connect: Connect, service: Service, repo: Path
) -> None:
    uri = "tmops://features/auth-api/status"
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        before, mime = await read(client, uri)
        (checkpoints_of(repo) / "001-discovery-trigger.md").write_text(TRIGGER)
        after, _ = await read(client, uri)
    assert mime == "application/json"
    first, second = json.loads(before), json.loads(after)
    assert (first["status"], first["checkpoints"]) == ("initialized", [])
    assert second["status"] == "in_progress"
    assert second["current_phase"] == "tester"
    assert [c["name"] for c in second["checkpoints"]] == ["001-discovery-trigger.md"]
    assert [p["phase"] for p in second["phase_progress"]["phases"]] == PHASES
    assert second == service.status("auth-api", workspace=repo, take_over=False)


@pytest.mark.anyio
async def test_reading_the_status_of_a_run_whose_engine_died_starts_nothing(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run whose engine died: the tool takes it over, the resource only reports it.
    monkeypatch.setattr(status_module, "_engine", lambda *_: "dead")
    take_overs: list[Path] = []
    monkeypatch.setattr(
        Service, "_take_over", lambda self, layout, store: take_overs.append(layout.project_root)
    )
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        text, _ = await read(client, "tmops://features/auth-api/status")
        assert take_overs == []
        await client.call_tool("tmops_get_status", {"feature": "auth-api"})
    assert json.loads(text)["engine"] == "dead"
    assert len(take_overs) == 1  # the tool did take over: the spy sees a start


@pytest.mark.anyio
async def test_a_checkpoint_reads_as_written_for_each_name_the_status_lists(
    connect: Connect, repo: Path
) -> None:
    bodies = {
        "001-discovery-trigger.md": TRIGGER,
        "003-tests-complete.md": "# Tests\n\nré-écrit à la main ✓\n",
    }
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        for name, body in bodies.items():
            (checkpoints_of(repo) / name).write_text(body)
        status, _ = await read(client, "tmops://features/auth-api/status")
        names = [c["name"] for c in json.loads(status)["checkpoints"]]
        texts = {
            name: await read(client, f"tmops://features/auth-api/checkpoints/{name}")
            for name in names
        }
    assert names == sorted(bodies)
    assert texts == {name: (body, "text/markdown") for name, body in bodies.items()}


@pytest.mark.anyio
async def test_the_summary_is_refused_until_written_then_read(connect: Connect, repo: Path) -> None:
    uri = "tmops://features/auth-api/summary"
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        early = await refused(client, uri)
        summary = "# Checkpoint: SUMMARY.md\n**Status:** complete\n"
        (checkpoints_of(repo) / "SUMMARY.md").write_text(summary)
        text, mime = await read(client, uri)
    assert early.error.code == INVALID_PARAMS
    assert early.error.message == (
        "SUMMARY.md of 'auth-api' run 'initial' is not written yet: tmops writes it when the run "
        "completes, once the verifier phase's 007-verify-complete.md is accepted (the run is "
        "initialized now)"
    )
    assert (text, mime) == (summary, "text/markdown")


@pytest.mark.anyio
async def test_the_resources_read_the_current_run(connect: Connect, repo: Path) -> None:
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        (checkpoints_of(repo) / "SUMMARY.md").write_text("first run\n")
        await client.call_tool("tmops_init_feature", {"feature": "auth-api", "runType": "retry"})
        (checkpoints_of(repo, run="retry") / "SUMMARY.md").write_text("second run\n")
        text, _ = await read(client, "tmops://features/auth-api/summary")
    assert text == "second run\n"


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("tail", ["status", "summary", "checkpoints/001-discovery-trigger.md"])
async def test_an_unknown_or_invalid_feature_is_a_clear_error(
    connect: Connect, repo: Path, tail: str
) -> None:
    async with connect() as client:
        unknown = await refused(client, f"tmops://features/no-such/{tail}")
        invalid = await refused(client, f"tmops://features/Auth-Api/{tail}")
        encoded = await refused(client, f"tmops://features/..%2F..%2Fetc/{tail}")
    assert unknown.error.code == INVALID_PARAMS
    assert unknown.error.message.startswith(f"no feature named 'no-such' in {repo}")
    for error in (invalid, encoded):
        assert error.error.code == INVALID_PARAMS
        assert ALLOWED_NAME in error.error.message
    assert not (repo / ".tmops").exists()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("..%2Fx", "invalid checkpoint name '../x'"),
        ("..%2F..%2F..%2Foutside%2Fsecret.md", "invalid checkpoint name '../../../outside"),
        ("%2Fetc%2Fpasswd", "invalid checkpoint name '/etc/passwd'"),
        ("..", "invalid checkpoint name '..'"),
        (".hidden.md", "invalid checkpoint name '.hidden.md'"),
        ("a%00b.md", "invalid checkpoint name 'a\\x00b.md'"),
        ("003-tests-complete.md", "run 'initial' of 'auth-api' has no checkpoint"),
        (
            "TASK_SPEC.md",
            "has no checkpoint 'TASK_SPEC.md'; its checkpoints: 001-discovery-trigger.md (see "
            "tmops://features/auth-api/status)",
        ),
    ],
)
async def test_a_bad_or_absent_checkpoint_name_is_a_clear_error_and_reads_nothing(
    connect: Connect, repo: Path, outside: Path, name: str, expected: str
) -> None:
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        (checkpoints_of(repo) / "001-discovery-trigger.md").write_text(TRIGGER)
        error = await refused(client, f"tmops://features/auth-api/checkpoints/{name}")
    assert error.error.code == INVALID_PARAMS
    assert expected in error.error.message
    assert OUTSIDE_TEXT not in error.error.message


@pytest.mark.anyio
async def test_a_path_in_the_uri_matches_no_resource(connect: Connect, outside: Path) -> None:
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        error = await refused(client, "tmops://features/auth-api/checkpoints/../../x/secret.md")
    assert error.error.code == INVALID_PARAMS
    assert "Unknown resource" in error.error.message
    assert OUTSIDE_TEXT not in error.error.message


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["003-tests-complete.md", "SUMMARY.md"])
async def test_a_checkpoint_that_is_a_link_to_outside_is_refused_unread(
    connect: Connect, repo: Path, outside: Path, name: str
) -> None:
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        (checkpoints_of(repo) / name).symlink_to(outside)
        status, _ = await read(client, "tmops://features/auth-api/status")
        checkpoint = await refused(client, f"tmops://features/auth-api/checkpoints/{name}")
        summary = await refused(client, "tmops://features/auth-api/summary")
    assert json.loads(status)["checkpoints"] == []  # a link is no checkpoint
    link = checkpoints_of(repo) / name
    assert checkpoint.error.code == INTERNAL_ERROR  # the request is fine, the file is refused
    assert f"{link} is a symlink; tmops never follows links" in checkpoint.error.message
    if name == "SUMMARY.md":
        assert f"{link} is a symlink" in summary.error.message
    for error in (checkpoint, summary):
        assert OUTSIDE_TEXT not in error.error.message
    assert outside.read_text() == OUTSIDE_TEXT + "\n"  # nothing was written through it either


@pytest.mark.anyio
async def test_a_checkpoint_folder_that_is_a_link_to_outside_is_refused_unread(
    connect: Connect, repo: Path, outside: Path
) -> None:
    (outside.parent / "001-discovery-trigger.md").write_text(OUTSIDE_TEXT)
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        folder = checkpoints_of(repo)
        folder.rmdir()
        folder.symlink_to(outside.parent)
        status, _ = await read(client, "tmops://features/auth-api/status")
        error = await refused(
            client, "tmops://features/auth-api/checkpoints/001-discovery-trigger.md"
        )
        summary = await refused(client, "tmops://features/auth-api/summary")
    assert OUTSIDE_TEXT not in status
    assert json.loads(status)["checkpoints"] == []
    assert f"{folder} is a symlink" in error.error.message
    assert f"{folder} is a symlink" in summary.error.message
    assert OUTSIDE_TEXT not in error.error.message + summary.error.message


@pytest.mark.anyio
async def test_a_checkpoint_over_the_size_limit_is_refused(connect: Connect, repo: Path) -> None:
    async with connect() as client:
        await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        (checkpoints_of(repo) / "003-tests-complete.md").write_bytes(b"x" * (1024 * 1024 + 1))
        error = await refused(client, "tmops://features/auth-api/checkpoints/003-tests-complete.md")
    assert "is over 1048576 bytes" in error.error.message


# -- prompts --------------------------------------------------------------------------------------


def installed_phases(service: Service) -> list[str]:
    workflow = list(service.config.features.default_phases)
    return workflow + sorted(set(service.plugins.phases()) - set(workflow))


@pytest.mark.anyio
async def test_every_installed_phase_is_a_prompt_taking_a_feature(
    connect: Connect, service: Service
) -> None:
    async with connect() as client:
        prompts = (await client.list_prompts()).prompts
    assert [p.name for p in prompts][: len(PHASES)] == PHASES  # the workflow, in its order
    assert [p.name for p in prompts] == installed_phases(service)
    for prompt in prompts:
        assert prompt.title
        assert prompt.description
        assert [(a.name, a.required) for a in prompt.arguments or []] == [("feature", True)]


@pytest.mark.anyio
async def test_a_prompt_is_the_role_instructions_and_the_phase_prompt_with_absolute_paths(
    connect: Connect, service: Service, repo: Path
) -> None:
    async with connect() as client:
        init = await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
        assert init.structured_content is not None
        answers = {
            phase: await client.get_prompt(phase, {"feature": "auth-api"})
            for phase in installed_phases(service)
        }
    paths = [init.structured_content[key] for key in ("worktree", "task_spec", "checkpoint_dir")]
    for phase, answer in answers.items():
        assert len(answer.messages) == 1
        message = answer.messages[0]
        assert message.role == "user"
        assert message.content.type == "text"
        text = message.content.text
        expected = service.prompt("auth-api", phase, workspace=repo)
        assert expected["instructions"].strip() in text
        assert expected["prompt"].strip() in text
        last = "# then `tmops resume auth-api` checks it and goes on\n"
        assert text.endswith(f"write {expected['checkpoint']}\n{last}")
        for path in paths:
            assert Path(path).is_absolute()
            assert path in text, (phase, path)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("feature", "expected"),
    [
        ("no-such", "feature 'no-such' was not initialised by tmops in"),
        ("../../etc", ALLOWED_NAME),
        ("$(touch pwned)", ALLOWED_NAME),
    ],
)
async def test_a_prompt_for_an_unknown_or_invalid_feature_is_a_clear_error(
    connect: Connect, repo: Path, feature: str, expected: str
) -> None:
    async with connect() as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt("tester", {"feature": feature})
    assert caught.value.error.code == INVALID_PARAMS
    assert expected in caught.value.error.message
    assert not (repo / ".tmops").exists()


# -- tool hints and the instructions ---------------------------------------------------------------


@pytest.mark.anyio
async def test_every_tool_has_a_title_and_explicit_hints(connect: Connect) -> None:
    async with connect() as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) >= TOOLS
    for name, tool in tools.items():
        hints = tool.annotations
        assert hints is not None, name
        assert tool.title, name
        assert hints.title == tool.title
        flags = (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint,
                 hints.open_world_hint)  # fmt: skip
        assert None not in flags, name  # unset destructiveHint would mean "destructive"
        assert not (hints.read_only_hint and hints.destructive_hint), name
        if name in {"tmops_cancel", "tmops_pause", "tmops_rollback"}:
            assert hints.destructive_hint is True, name
    read_only = {name for name, tool in tools.items() if tool.annotations.read_only_hint}  # type: ignore[union-attr]
    assert {"tmops_list_features", "tmops_get_status", "tmops_get_prompt"} <= read_only
    assert {"tmops_init_feature", "tmops_cancel", "tmops_start_orchestration"}.isdisjoint(read_only)
    assert tools["tmops_init_feature"].annotations.idempotent_hint is True  # type: ignore[union-attr]
    cancel = tools["tmops_cancel"].annotations
    assert (cancel.destructive_hint, cancel.idempotent_hint) == (True, True)  # type: ignore[union-attr]


def test_a_tool_without_a_line_in_the_hints_table_is_refused(
    service: Service, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(TOOL_HINTS, "tmops_cancel")
    with pytest.raises(LookupError, match="tmops_cancel has no line in TOOL_HINTS"):
        build_server(service, workspace=repo)


@pytest.mark.anyio
async def test_the_instructions_name_every_tool_resource_template_and_prompt(
    connect: Connect,
) -> None:
    async with connect() as client:
        instructions = client.instructions or ""
        names = [tool.name for tool in (await client.list_tools()).tools]
        names += [str(r.uri) for r in (await client.list_resources()).resources]
        templates = (await client.list_resource_templates()).resource_templates
        names += [t.uri_template for t in templates]
        names += [p.name for p in (await client.list_prompts()).prompts]
    assert len(names) >= len(TOOLS) + 1 + len(TEMPLATES) + len(PHASES)
    missing = [name for name in names if name not in instructions]
    assert missing == []
    assert len(instructions) < 2000  # concise: it is sent to the model on every connection


@pytest.mark.anyio
async def test_docs_show_each_tools_title_and_hints(connect: Connect) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "mcp.md").read_text()
    async with connect() as client:
        tools = (await client.list_tools()).tools
    for tool in tools:
        hints = tool.annotations
        assert hints is not None
        flags = (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint,
                 hints.open_world_hint)  # fmt: skip
        row = " | ".join([f"| `{tool.name}`", str(tool.title), *(str(f).lower() for f in flags)])
        assert row + " |" in docs.splitlines(), row
