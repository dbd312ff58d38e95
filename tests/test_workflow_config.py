"""The workflow is the phase list in config: a pip-installed phase joins it by name, and role
instructions can be replaced by a configured folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tmops_core.config import LoadedConfig, parse_config
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.operations import Service
from tmops_core.store import SQLiteStore
from tmops_core.workspace.features import InitRequest
from tmops_hookspecs import FeatureError

from .conftest import make_repo

# A stand-in agent for the `command` provider: it records what it was given and writes the
# completion checkpoint named in its arguments, as a header block naming feature and run, with
# what the orchestrator's must hold (a plan under ## Action Required).
AGENT = """\
import json, os, sys
folder, name, feature, run, phase, record = sys.argv[1:7]
instructions = sys.argv[7]
call = {"phase": phase, "instructions": instructions, "cwd": os.getcwd()}
with open(record, "a") as out:
    out.write(json.dumps(call) + "\\n")
body = (f"# Checkpoint: {name}\\n**From:** {phase}\\n**To:** Orchestrator\\n"
        f"**Feature:** {feature}\\n**Run:** {run}\\n**Status:** complete\\n\\n"
        "## Work Completed\\nreviewed\\n\\n## Action Required\\n- one test per criterion\\n\\n"
        "## Quality Score\\nQuality score: 8/10\\n"
        "Feature ready for merge: YES\\n")
temp = os.path.join(folder, "." + name + ".tmp")
with open(temp, "w") as handle:
    handle.write(body)
os.replace(temp, os.path.join(folder, name))
"""

COMPLETION = {
    "security-review": "009-security-complete.md",
    "orchestrator": "001-discovery-trigger.md",
}


def _service(tmp_path: Path, phases: list[str], **extra: Any) -> tuple[Service, Path, Path]:
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    record = tmp_path / "calls.jsonl"
    # One argv for every phase: the agent learns which checkpoint to write from the phase.
    script = tmp_path / "dispatch.py"
    script.write_text(
        "import subprocess, sys\n"
        f"names = {COMPLETION!r}\n"
        "folder, feature, run, phase, record, instructions = sys.argv[1:7]\n"
        f"sys.exit(subprocess.call([sys.executable, {str(agent)!r}, folder, names[phase], "
        "feature, run, phase, record, instructions]))\n"
    )
    data: dict[str, Any] = {
        "providers": {
            "command": {
                "command": sys.executable,
                "args": [
                    str(script), "{checkpoint_dir}", "{feature}", "{run}", "{phase}",
                    str(record), "{role_instructions}",
                ],
            }
        },
        "features": {
            "default_provider": "command",
            "default_phases": phases,
            "test_command": [sys.executable, "-c", "pass"],
            "max_retries": 0,
        },
        **extra,
    }  # fmt: skip
    service = Service(LoadedConfig(parse_config(data), None), create_plugin_manager())
    root = make_repo(tmp_path / "project")
    return service, root, record


def _init(service: Service, root: Path, feature: str = "audit") -> None:
    """Create the feature with a task spec of its own: start refuses the untouched template."""
    spec = service.init(InitRequest(feature=feature, workspace=root)).task_spec
    spec.write_text(f"# Task Specification: {feature}\n\nRecord what each phase is given.\n")


def _run(service: Service, root: Path, feature: str = "audit") -> dict[str, Any]:
    _init(service, root, feature)
    service.start(feature, workspace=root, spawn=False)
    service.serve_engine(workspace=root, idle_exit_s=0.1, retry_backoff_s=(0.05,))
    return service.status(feature, workspace=root)


def test_a_phase_from_a_pip_installed_plugin_runs_when_listed(tmp_path: Path) -> None:
    pytest.importorskip("tmops_security_review")
    service, root, record = _service(tmp_path, ["security-review"])
    try:
        status = _run(service, root)
    finally:
        service.close()
    assert status["status"] == "completed", status["last_error"]
    checkpoints = {c["name"] for c in status["checkpoints"]}
    # tmops wrote the phase's trigger, the agent its completion checkpoint
    assert {"008-security-trigger.md", "009-security-complete.md", "SUMMARY.md"} <= checkpoints
    [call] = [json.loads(line) for line in record.read_text().splitlines()]
    assert call["phase"] == "security-review"
    assert "SECURITY REVIEWER" in call["instructions"]
    attempts = SQLiteStore(root / ".tmops" / "tmops.db").attempts("audit", "initial")
    assert [(a.phase, a.state) for a in attempts] == [("security-review", "completed")]


def test_a_configured_instructions_folder_replaces_the_builtin_role_text(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "instance_instructions"
    folder.mkdir()
    (folder / "orchestrator.md").write_text("CUSTOM ORCHESTRATOR RULES\n")
    service, root, record = _service(
        tmp_path, ["orchestrator"], paths={"instructions": str(folder)}
    )
    try:
        status = _run(service, root)
    finally:
        service.close()
    assert status["status"] == "completed", status["last_error"]
    [call] = [json.loads(line) for line in record.read_text().splitlines()]
    assert call["instructions"] == "CUSTOM ORCHESTRATOR RULES\n"
    # the agent works in the feature's worktree, given as an absolute path
    assert call["cwd"] == str(root / ".tmops" / "worktrees" / "audit")


def test_a_workflow_naming_a_phase_nobody_provides_is_refused_at_start(tmp_path: Path) -> None:
    service, root, _ = _service(tmp_path, ["orchestrator", "no-such-phase"])
    try:
        _init(service, root)
        with pytest.raises(FeatureError, match="no-such-phase"):
            service.start("audit", workspace=root, spawn=False)
        status = service.status("audit", workspace=root)
    finally:
        service.close()
    assert status["status"] == "initialized"  # nothing was queued
