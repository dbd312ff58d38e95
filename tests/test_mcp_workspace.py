"""The ``workspace`` argument of every MCP tool reaches only the project the server serves and
the roots of ``server.workspaces``: another repository on the machine is refused, audited, and
left as it was (real git repositories, the SDK's in-memory client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult

from tmops_core.service.operations import Service
from tmops_core.surfaces.mcp_server import build_server
from tmops_core.surfaces.mcp_workspace import REFUSED_EVENT
from tmops_core.workspace.features import InitRequest
from tmops_core.workspace.layout import shown

from .conftest import git, make_repo
from .engine_support import in_memory_service, jsonl_events
from .mcp_support import TOOLS, text_of

#: arguments each tool needs besides the workspace
ARGUMENTS: dict[str, dict[str, Any]] = {
    "tmops_init_feature": {"feature": "billing"},
    "tmops_start_orchestration": {"feature": "auth-api", "force": True},
    "tmops_list_features": {},
    "tmops_get_status": {"feature": "auth-api"},
    "tmops_get_prompt": {"feature": "auth-api", "phase": "tester"},
    "tmops_cancel": {"feature": "auth-api"},
    "tmops_pause": {"feature": "auth-api"},
    "tmops_resume": {"feature": "auth-api"},
    "tmops_retry": {"feature": "auth-api"},
    "tmops_approve": {"feature": "auth-api"},
    "tmops_rollback": {"feature": "auth-api", "phase": "tester", "dry_run": True},
    "tmops_cleanup": {"dry_run": False, "force": True},
}
OUTSIDE = "is outside the projects this server may act on"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _service(tmp_path: Path, workspaces: tuple[str, ...] = ()) -> Service:
    return in_memory_service(
        {
            "server": {"workspaces": list(workspaces)},
            "telemetry": {"outputs": {"jsonl": {"path": str(tmp_path / "events.jsonl")}}},
        }
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    loaded = _service(tmp_path)
    yield loaded
    loaded.close()


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """Another repository on the machine, with a feature the server must not touch."""
    other = make_repo(tmp_path / "elsewhere")
    owner = in_memory_service({})
    owner.init(InitRequest(feature="auth-api", workspace=other))
    owner.close()
    return other


def _state(repo: Path) -> tuple[str, str, list[str]]:
    tmops = repo / ".tmops"
    files = sorted(str(p.relative_to(repo)) for p in tmops.rglob("*")) if tmops.exists() else []
    return git(repo, "branch", "--list"), git(repo, "worktree", "list", "--porcelain"), files


async def _call(service: Service, served: Path, tool: str, **arguments: Any) -> CallToolResult:
    async with Client(build_server(service, workspace=served)) as client:
        return await client.call_tool(tool, arguments)


def _refusals(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    events = jsonl_events(path) if path.exists() else []
    return [event for event in events if event["event_type"] == REFUSED_EVENT]


@pytest.mark.anyio
@pytest.mark.parametrize("tool", sorted(TOOLS))
async def test_every_tool_refuses_another_repository_and_leaves_it_alone(
    service: Service, repo: Path, elsewhere: Path, tmp_path: Path, tool: str
) -> None:
    assert set(ARGUMENTS) == TOOLS
    before = _state(elsewhere)
    result = await _call(service, repo, tool, **ARGUMENTS[tool], workspace=str(elsewhere))

    assert result.is_error is True
    text = text_of(result)
    assert f"workspace {shown(str(elsewhere))} {OUTSIDE} ({repo})" in text
    assert "server.workspaces" in text
    assert _state(elsewhere) == before
    assert not (repo / ".tmops").exists()
    [event] = _refusals(tmp_path)
    assert event["data"] == {
        "workspace": str(elsewhere)[:64],
        "length": len(str(elsewhere)),
        "allowed_roots": [str(repo)],
    }


@pytest.mark.anyio
async def test_a_symlink_into_another_repository_is_refused(
    service: Service, repo: Path, elsewhere: Path
) -> None:
    link = repo / "docs-link"
    link.symlink_to(elsewhere)
    before = _state(elsewhere)
    result = await _call(
        service, repo, "tmops_init_feature", feature="billing", workspace=str(link)
    )
    assert result.is_error is True
    assert OUTSIDE in text_of(result)
    assert _state(elsewhere) == before


@pytest.mark.anyio
async def test_a_repository_nested_in_the_served_project_is_another_project(
    service: Service, repo: Path
) -> None:
    nested = make_repo(repo / "vendor")
    result = await _call(
        service, repo, "tmops_init_feature", feature="billing", workspace=str(nested)
    )
    assert result.is_error is True
    assert OUTSIDE in text_of(result)
    assert not (nested / ".tmops").exists()


@pytest.mark.anyio
async def test_a_folder_of_the_served_project_names_the_served_project(
    service: Service, repo: Path
) -> None:
    (repo / "src").mkdir()
    result = await _call(
        service, repo, "tmops_init_feature", feature="billing", workspace=str(repo / "src")
    )
    assert result.is_error is False, text_of(result)
    assert result.structured_content is not None
    assert result.structured_content["workspace"] == str(repo)


@pytest.mark.anyio
async def test_a_missing_folder_outside_is_refused_without_saying_whether_it_exists(
    service: Service, repo: Path, elsewhere: Path
) -> None:
    missing = await _call(service, repo, "tmops_list_features", workspace=f"{elsewhere}/nothing")
    present = await _call(service, repo, "tmops_list_features", workspace=f"{elsewhere}/.git")
    for result in (missing, present):
        assert result.is_error is True
        assert OUTSIDE in text_of(result)


@pytest.mark.anyio
async def test_a_repository_under_a_root_of_server_workspaces_is_allowed(
    repo: Path, tmp_path: Path
) -> None:
    (tmp_path / "projects").mkdir()
    allowed = make_repo(tmp_path / "projects" / "billing-service")
    # the root is given through a symlink: it is resolved before comparing
    (tmp_path / "projects-link").symlink_to(tmp_path / "projects")
    service = _service(tmp_path, (str(tmp_path / "projects-link"),))
    try:
        result = await _call(
            service, repo, "tmops_init_feature", feature="billing", workspace=str(allowed)
        )
        outside = await _call(service, repo, "tmops_list_features", workspace=str(tmp_path))
    finally:
        service.close()
    assert result.is_error is False, text_of(result)
    assert (allowed / ".tmops" / "billing").is_dir()
    assert outside.is_error is True
    text = text_of(outside)
    assert f"({repo}, {tmp_path / 'projects'})" in text


@pytest.mark.anyio
async def test_a_linked_worktree_of_an_outside_repository_under_an_allowed_root_is_refused(
    repo: Path, tmp_path: Path
) -> None:
    # git's main working tree of this folder is outside (and has no .tmops yet): init would
    # act there
    outside = make_repo(tmp_path / "outside")
    (tmp_path / "projects").mkdir()
    linked = tmp_path / "projects" / "linked"
    git(outside, "worktree", "add", "-q", "-b", "side", str(linked))
    before = _state(outside)
    service = _service(tmp_path, (str(tmp_path / "projects"),))
    try:
        result = await _call(
            service, repo, "tmops_init_feature", feature="billing", workspace=str(linked)
        )
    finally:
        service.close()
    assert result.is_error is True
    assert OUTSIDE in text_of(result)
    assert _state(outside) == before
    assert not (outside / ".tmops").exists()


@pytest.mark.anyio
async def test_a_huge_workspace_is_refused_quoting_64_characters_of_it(
    service: Service, repo: Path, tmp_path: Path
) -> None:
    huge = "/" + "w" * (1024 * 1024)
    result = await _call(service, repo, "tmops_list_features", workspace=huge)
    assert result.is_error is True
    text = text_of(result)
    assert len(text) < 300 + len(str(repo))
    assert f"'{huge[:64]}'..." in text
    assert "w" * 64 not in text
    assert f"({len(huge)} characters)" in text
    [event] = _refusals(tmp_path)
    assert event["data"]["workspace"] == huge[:64]
    assert event["data"]["length"] == len(huge)
