"""The MCP server driven by the MCP Inspector CLI (Node), an independent client.

The Inspector is pinned in ``.ci/run``; these tests are skipped when it is not installed, except
under ``TMOPS_REQUIRE_INSPECTOR=1`` (which ``.ci/run`` sets).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .mcp_support import ALLOWED_NAME, PHASES, TIMEOUT_S, TMOPS, TOOLS, server_env

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
INSPECTOR_VERSION = "0.15.0"  # the newest release without `engines.node >= 22`; see .ci/run
INSPECTOR_DEFAULT = REPO_ROOT / ".ci" / "cache" / "inspector" / "node_modules" / ".bin"


@pytest.fixture
def inspector() -> Path:
    override = os.environ.get("TMOPS_INSPECTOR")
    path = Path(override) if override else INSPECTOR_DEFAULT / "mcp-inspector"
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = (
        f"the MCP Inspector CLI is not installed at {path}; .ci/run installs it with "
        f"`npm install --prefix .ci/cache/inspector --no-audit --no-fund "
        f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}`"
    )
    if os.environ.get("TMOPS_REQUIRE_INSPECTOR") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run_inspector(inspector: Path, repo: Path, cwd: Path, *options: str) -> dict[str, Any]:
    # The server command goes first and --tool-arg last: it swallows everything after it.
    argv = [str(inspector), "--cli", str(TMOPS), "mcp", "--workspace", str(repo), *options]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd,
        env=server_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def call_tool(inspector: Path, repo: Path, cwd: Path, tool: str, *args: str) -> dict[str, Any]:
    options = ["--method", "tools/call", "--tool-name", tool]
    return run_inspector(inspector, repo, cwd, *options, "--tool-arg", *args)


def test_inspector_lists_the_three_tools(inspector: Path, repo: Path, tmp_path: Path) -> None:
    answer = run_inspector(inspector, repo, tmp_path / "work", "--method", "tools/list")
    tools = {tool["name"]: tool for tool in answer["tools"]}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool["inputSchema"]["additionalProperties"] is False
        assert "outputSchema" in tool
    assert tools["tmops_init_feature"]["inputSchema"]["required"] == ["feature"]


def test_inspector_inits_a_feature_then_reads_its_status(
    inspector: Path, repo: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    init = call_tool(inspector, repo, work, "tmops_init_feature", "feature=auth-api")
    assert init["isError"] is False
    data = init["structuredContent"]
    assert data["feature"] == "auth-api"
    assert data["branch"] == "feature/auth-api"
    assert data["workspace"] == str(repo)
    assert data["created"] is True
    assert Path(data["task_spec"]).is_file()
    assert init["content"] == [{"type": "text", "text": init["content"][0]["text"]}]
    assert "\n" not in init["content"][0]["text"]

    status = call_tool(inspector, repo, work, "tmops_get_status", "feature=auth-api")
    assert status["isError"] is False
    phases = status["structuredContent"]["phase_progress"]["phases"]
    assert [(p["phase"], p["status"]) for p in phases] == [(p, "pending") for p in PHASES]
    assert status["structuredContent"]["next_action"].startswith("edit TASK_SPEC.md, then start")

    # Strings become booleans through the input schema.
    lean = call_tool(
        inspector,
        repo,
        work,
        "tmops_get_status",
        "feature=auth-api",
        "include_sessions=false",
        "include_checkpoints=false",
    )
    assert "sessions" not in lean["structuredContent"]
    assert "checkpoints" not in lean["structuredContent"]

    retry = call_tool(
        inspector, repo, work, "tmops_init_feature", "feature=auth-api", "runType=retry"
    )
    assert retry["structuredContent"]["run"] == "retry"


def test_inspector_sees_errors_as_is_error(inspector: Path, repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    unknown = call_tool(inspector, repo, work, "tmops_get_status", "feature=no-such")
    assert unknown["isError"] is True  # Inspector 0.15.0 exits 0 on isError: check the JSON
    assert "no feature named 'no-such'" in unknown["content"][0]["text"]
    assert "structuredContent" not in unknown

    malicious = call_tool(inspector, repo, work, "tmops_init_feature", "feature=../../etc/x")
    assert malicious["isError"] is True
    assert ALLOWED_NAME in malicious["content"][0]["text"]
    assert not (repo / ".tmops").exists()


def test_inspector_shows_each_tools_title_and_hints(
    inspector: Path, repo: Path, tmp_path: Path
) -> None:
    answer = run_inspector(inspector, repo, tmp_path / "work", "--method", "tools/list")
    hints = {tool["name"]: (tool["title"], tool["annotations"]) for tool in answer["tools"]}
    keys = {"title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}
    for name, (title, shown) in hints.items():
        assert set(shown) == keys, name
        assert shown["title"] == title, name
    assert hints["tmops_list_features"][1]["readOnlyHint"] is True
    assert hints["tmops_get_status"][1]["readOnlyHint"] is True
    assert hints["tmops_get_prompt"][1]["readOnlyHint"] is True
    assert hints["tmops_cancel"][1]["readOnlyHint"] is False
    assert hints["tmops_cancel"][1]["destructiveHint"] is True
    assert hints["tmops_cancel"][1]["idempotentHint"] is True
    assert hints["tmops_init_feature"][1]["idempotentHint"] is True
    assert hints["tmops_init_feature"][1]["destructiveHint"] is False


def test_inspector_lists_the_resources_and_reads_the_status_template(
    inspector: Path, repo: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    listed = run_inspector(inspector, repo, work, "--method", "resources/list")
    templates = run_inspector(inspector, repo, work, "--method", "resources/templates/list")
    init = call_tool(inspector, repo, work, "tmops_init_feature", "feature=auth-api")
    checkpoints = Path(init["structuredContent"]["checkpoint_dir"])
    (checkpoints / "001-discovery-trigger.md").write_text("# plan, by hand\n")
    uri = "tmops://features/auth-api/status"
    status = run_inspector(inspector, repo, work, "--method", "resources/read", "--uri", uri)
    features = run_inspector(
        inspector, repo, work, "--method", "resources/read", "--uri", "tmops://features"
    )

    assert [(r["uri"], r["mimeType"]) for r in listed["resources"]] == [
        ("tmops://features", "application/json")
    ]
    assert {t["uriTemplate"] for t in templates["resourceTemplates"]} == {
        "tmops://features/{feature}/status",
        "tmops://features/{feature}/checkpoints/{name}",
        "tmops://features/{feature}/summary",
    }
    [content] = status["contents"]
    assert (content["uri"], content["mimeType"]) == (uri, "application/json")
    data = json.loads(content["text"])
    assert (data["feature"], data["status"], data["current_phase"]) == (
        "auth-api", "in_progress", "tester",
    )  # fmt: skip
    assert [p["phase"] for p in data["phase_progress"]["phases"]] == PHASES
    assert [c["name"] for c in data["checkpoints"]] == ["001-discovery-trigger.md"]
    rows = json.loads(features["contents"][0]["text"])["features"]
    assert [row["feature"] for row in rows] == ["auth-api"]


def test_inspector_reads_a_checkpoint_and_refuses_a_path(
    inspector: Path, repo: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    init = call_tool(inspector, repo, work, "tmops_init_feature", "feature=auth-api")
    checkpoints = Path(init["structuredContent"]["checkpoint_dir"])
    (checkpoints / "001-discovery-trigger.md").write_text("# plan, by hand\n")
    base = "tmops://features/auth-api/checkpoints/"
    plan = run_inspector(
        inspector, repo, work, "--method", "resources/read", "--uri",
        base + "001-discovery-trigger.md",
    )  # fmt: skip
    assert plan["contents"][0]["text"] == "# plan, by hand\n"
    argv = [str(inspector), "--cli", str(TMOPS), "mcp", "--workspace", str(repo),
            "--method", "resources/read", "--uri", base + "..%2F..%2FTASK_SPEC.md"]  # fmt: skip
    refused = subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=work, env=server_env(),
        check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "MCP error -32602: invalid checkpoint name '../../TASK_SPEC.md'" in refused.stderr
    assert "Task Specification" not in refused.stdout + refused.stderr


def test_inspector_lists_a_prompt_per_phase_and_gets_one(
    inspector: Path, repo: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    listed = run_inspector(inspector, repo, work, "--method", "prompts/list")
    init = call_tool(inspector, repo, work, "tmops_init_feature", "feature=auth-api")
    answer = run_inspector(
        inspector, repo, work, "--method", "prompts/get", "--prompt-name", "implementer",
        "--prompt-args", "feature=auth-api",
    )  # fmt: skip
    names = [prompt["name"] for prompt in listed["prompts"]]
    assert names[: len(PHASES)] == PHASES
    for prompt in listed["prompts"]:
        assert prompt["arguments"] == [
            {"name": "feature", "description": prompt["arguments"][0]["description"],
             "required": True}
        ]  # fmt: skip
    [message] = answer["messages"]
    assert message["role"] == "user"
    text = message["content"]["text"]
    assert text.startswith("# implementer of auth-api (run initial): role instructions\n")
    data = init["structuredContent"]
    for path in (data["worktree"], data["task_spec"], data["checkpoint_dir"]):
        assert path in text
    assert f"write {Path(data['checkpoint_dir']) / '005-impl-complete.md'}\n" in text


def test_ci_installs_the_pinned_inspector_and_requires_it() -> None:
    lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    install = (
        "npm install --prefix .ci/cache/inspector --no-audit --no-fund "
        f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}"
    )
    test_line = next(i for i, line in enumerate(lines) if line.endswith("python -m pytest"))
    install_line = next(i for i, line in enumerate(lines) if line.strip() == install)
    require_line = lines.index("export TMOPS_REQUIRE_INSPECTOR=1")
    assert install_line < require_line < test_line
    assert all("@modelcontextprotocol/inspector@" not in line for line in lines[test_line:])
    assert ".ci/cache" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    installed = INSPECTOR_DEFAULT.parent / "@modelcontextprotocol" / "inspector" / "package.json"
    if installed.is_file():
        assert json.loads(installed.read_text())["version"] == INSPECTOR_VERSION
