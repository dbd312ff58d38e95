"""Constants and helpers shared by the tests of the MCP server (``tmops mcp``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mcp.types import CallToolResult

TMOPS = Path(sys.executable).with_name("tmops")
TOOLS = {
    "tmops_init_feature",
    "tmops_start_orchestration",
    "tmops_list_features",
    "tmops_get_status",
    "tmops_cancel",
    "tmops_cleanup",
    "tmops_get_prompt",
    "tmops_pause",
    "tmops_resume",
    "tmops_retry",
    "tmops_approve",
    "tmops_rollback",
}
PHASES = ["orchestrator", "tester", "implementer", "verifier"]
ALLOWED_NAME = "a feature name is 3 to 20 characters of lowercase letters a-z, digits 0-9"
TIMEOUT_S = 60


def text_of(result: CallToolResult) -> str:
    assert len(result.content) == 1
    content = result.content[0]
    assert content.type == "text"
    return content.text


def server_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **extra}
