"""Helpers shared by the tests of the scripted local agent (``test_scripted_agent*.py``).

Its fixtures (``agent_env``, ``demo``, ``in_process``, ``runner``) are in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from tmops_core.service.demo_project import DEMO_FEATURE, DemoProject
from tmops_hookspecs import PhaseSpec
from tmops_plugins.phases import tmops_register_phases
from tmops_plugins.scripted_roles import LABEL
from tmops_plugins.scripted_session import FAULT_ENV

RUN = "initial"
PHASES: dict[str, PhaseSpec] = {spec.name: spec for spec in tmops_register_phases()}
COMPLETION = {name: spec.completion_checkpoint for name, spec in PHASES.items()}


@attrs.frozen
class Session:
    """One finished agent process."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[Any]:
        """The stream-json lines, parsed (each one must be JSON)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def init(self) -> dict[str, Any]:
        first: dict[str, Any] = self.lines[0]
        return first

    @property
    def result(self) -> dict[str, Any]:
        last: dict[str, Any] = self.lines[-1]
        assert last["type"] == "result", last
        return last

    def tool_uses(self) -> list[dict[str, Any]]:
        return [
            block
            for line in self.lines
            if line["type"] == "assistant"
            for block in line["message"]["content"]
            if block["type"] == "tool_use"
        ]


@attrs.frozen
class Demo:
    project: DemoProject
    checkpoints: Path
    spec: Path

    @property
    def path(self) -> Path:
        return self.project.path

    def prompt(self, role: str) -> str:
        phase = PHASES[role]
        return phase.prompt.format(
            feature=DEMO_FEATURE,
            run=RUN,
            task_spec=self.spec,
            worktree=self.path,
            branch=f"feature/{DEMO_FEATURE}",
            checkpoint_dir=self.checkpoints,
            trigger_checkpoint=phase.trigger_checkpoint or "",
            completion_checkpoint=phase.completion_checkpoint,
        )

    def checkpoint(self, role: str) -> Path:
        return self.checkpoints / COMPLETION[role]

    def argv(self, role: str | None, *extra: str, prompt: str | None = None) -> list[str]:
        text = prompt if prompt is not None else self.prompt(str(role))
        return [
            "-p",
            text,
            "--output-format",
            "stream-json",
            "--verbose",
            "--append-system-prompt",
            "role instructions",
            "--permission-mode",
            "acceptEdits",
            "--add-dir",
            str(self.checkpoints),
            "--allowedTools",
            "Read,Write",
            "Bash(git add:*)",
            *extra,
        ]

    def trigger(self, name: str, sender: str = "Orchestrator", to: str = "Implementer") -> None:
        """A trigger checkpoint as tmops' orchestrator step writes it."""
        (self.checkpoints / name).write_text(
            f"# Checkpoint: {name}\n**From:** {sender}\n**To:** {to}\n"
            f"**Timestamp:** 2026-01-01 10:00:00\n**Feature:** {DEMO_FEATURE}\n**Run:** {RUN}\n"
            "## Action Required\nGo on.\n"
        )


Runner = Callable[..., Session]


def run_subprocess(demo: Demo, argv: list[str], fault: str = "", **env: str) -> Session:
    environ = dict(os.environ, **env)
    if fault:
        environ[FAULT_ENV] = fault
    done = subprocess.run(
        [sys.executable, "-m", "tmops_plugins.scripted_agent", *argv],
        cwd=demo.path,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Session(done.returncode, done.stdout, done.stderr)


def header(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^\*\*(\w+):\*\* (.*)$", path.read_text(), re.M))


def section(path: Path, title: str) -> str:
    text = path.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no ## {title} in {path}"
    return match.group(1).strip()


def pytest_in(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=path,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
    )


def check_stream(session: Session) -> None:
    """The stream-json contract: init first, tool_use/tool_result pairs, result last."""
    assert session.returncode == 0, session.stderr
    init = session.init
    assert init["type"] == "system"
    assert init["subtype"] == "init"
    assert init["model"] == "scripted"
    assert init["claude_code_version"] == "scripted"
    assert init["tools"] == ["Read", "Write", "Bash"]
    session_id = init["session_id"]
    assert uuid.UUID(session_id)
    body = session.lines[1:-1]
    assert body, "no action at all"
    pending: str | None = None
    for line in body:
        assert line["session_id"] == session_id
        content = line["message"]["content"]
        assert len(content) == 1
        if line["type"] == "assistant":
            assert pending is None, "a tool_use without its tool_result"
            if content[0]["type"] == "tool_use":
                assert content[0]["name"] in {"Read", "Write", "Bash"}
                pending = content[0]["id"]
        else:
            assert line["type"] == "user"
            assert content[0]["type"] == "tool_result"
            assert content[0]["tool_use_id"] == pending
            pending = None
    assert body[-1]["type"] == "assistant"
    assert body[-1]["message"]["content"][0]["type"] == "text"
    result = session.result
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["session_id"] == session_id
    assert result["result"].startswith(f"[{LABEL}]")
    assert result["num_turns"] == sum(1 for line in body if line["type"] == "assistant")
    assert result["total_cost_usd"] == 0.0
    assert result["usage"] == {}
    assert result["permission_denials"] == []
    assert isinstance(result["duration_ms"], int)


def check_checkpoint(demo: Demo, role: str, sender: str, to: str) -> dict[str, str]:
    path = demo.checkpoint(role)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith(f"# Checkpoint: {path.name}\n")
    fields = header(path)
    assert fields["From"] == sender
    assert fields["To"] == to
    assert fields["Feature"] == DEMO_FEATURE
    assert fields["Run"] == RUN
    assert fields["Status"] == "complete"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", fields["Timestamp"])
    assert not [p for p in demo.checkpoints.iterdir() if p.name.endswith(".tmp")]
    return fields
