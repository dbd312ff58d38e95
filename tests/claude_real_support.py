"""Shared helpers of the tests driving the REAL Claude Code CLI against ``tests/fake_anthropic.py``.

A project laid out as tmops prepares one (:func:`make_project`), the real tmops prompt of a role
(:func:`phase_prompt`), the CLI run with the environment and argv of
``reference/claude-code-cli.md`` (:func:`run_claude`), and readers of what it leaves. Used by
``test_claude_real.py`` and ``test_claude_real_fake.py``; a plain module, it holds no fixture.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tmops_plugins.phases import tmops_register_phases

from .conftest import git, make_repo

FEATURE = "slug"
RUN = "initial"
TIMEOUT_S = 120
FIXTURES = Path(__file__).resolve().parent / "data" / "claude"
FIXTURE_ROOT = "/tmp/tmops-fixture"  # stands for tmp_path in the recorded fixtures
HEADER_FIELDS = ("From", "To", "Timestamp", "Feature", "Run", "Status")
PHASES = {phase.name: phase for phase in tmops_register_phases()}


# -- a project like the one tmops prepares --------------------------------------------------------


@dataclass(frozen=True)
class Project:
    root: Path
    worktree: Path  # on branch feature/slug, where the agent works
    checkpoints: Path
    home: Path  # HOME of the CLI; CLAUDE_CONFIG_DIR is home/.claude


def make_project(base: Path) -> Project:
    """A repository at ``base/project`` with the feature's worktree and run folders."""
    base.mkdir(exist_ok=True)
    root = make_repo(base / "project")
    worktree = root / ".tmops" / "worktrees" / FEATURE
    git(root, "worktree", "add", "-q", "-b", f"feature/{FEATURE}", str(worktree))
    run_dir = root / ".tmops" / FEATURE / "runs" / RUN
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    (run_dir / "TASK_SPEC.md").write_text("# slugify\nTurn titles into URL slugs.\n")
    home = base / "home"
    home.mkdir()
    return Project(root, worktree, checkpoints, home)


def phase_prompt(role: str, project: Project) -> tuple[str, str]:
    """The real tmops prompt and instructions of ``role`` for ``project``."""
    phase = PHASES[role]
    prompt = phase.prompt.format(
        feature=FEATURE,
        run=RUN,
        task_spec=project.checkpoints.parent / "TASK_SPEC.md",
        worktree=project.worktree,
        branch=f"feature/{FEATURE}",
        checkpoint_dir=project.checkpoints,
        trigger_checkpoint=phase.trigger_checkpoint,
        completion_checkpoint=phase.completion_checkpoint,
    )
    return prompt, phase.instructions


# -- running the CLI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    lines: list[dict[str, Any]]

    @property
    def init(self) -> dict[str, Any]:
        first = self.lines[0]
        assert (first["type"], first.get("subtype")) == ("system", "init"), first
        return first

    @property
    def result(self) -> dict[str, Any]:
        last = self.lines[-1]
        assert last["type"] == "result", last
        return last

    def blocks(self, line_type: str, block_type: str) -> list[dict[str, Any]]:
        """The content blocks of type ``block_type`` in the ``line_type`` lines, in order."""
        return [
            block
            for line in self.lines
            if line["type"] == line_type
            for block in line["message"]["content"]
            if isinstance(block, dict) and block.get("type") == block_type
        ]


def cli_env(base_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The whole environment of the CLI, as the reference prescribes; nothing inherited."""
    env = {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "HOME": str(home),
        # the venv first: the agent's `python -m pytest` needs pytest
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
    }
    if os.geteuid() == 0:  # bypassPermissions is refused to root outside a sandbox
        env["IS_SANDBOX"] = "1"
    return env | extra


def run_claude(
    claude_bin: Path,
    project: Project,
    base_url: str,
    prompt: str,
    instructions: str,
    *options: str,
    **env: str,
) -> CliRun:
    argv = [
        str(claude_bin),
        "-p",
        prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--append-system-prompt",
        instructions,
        "--permission-mode",
        "bypassPermissions",
        "--add-dir",
        str(project.checkpoints),
        *options,
    ]
    process = subprocess.Popen(
        argv,
        cwd=project.worktree,
        env=cli_env(base_url, project.home, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a timeout can end all of it
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"claude ran over {TIMEOUT_S} s\nstdout:\n{stdout}\nstderr:\n{stderr}")
    lines = []
    for line in stdout.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pytest.fail(f"stdout line is not JSON: {line!r}\nstderr:\n{stderr}")
    return CliRun(process.returncode, stdout, stderr, lines)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def flatten(path: str) -> str:
    """A path as the CLI names its folders in the config dir: not [A-Za-z0-9] becomes "-"."""
    return re.sub(r"[^A-Za-z0-9]", "-", path)


def record(name: str, run: CliRun, tmp_path: Path, base_url: str) -> None:
    """Rewrite fixture ``name`` from ``run`` under ``TMOPS_RECORD_CLAUDE_FIXTURES=1``."""
    if os.environ.get("TMOPS_RECORD_CLAUDE_FIXTURES") != "1":
        return
    text = run.stdout.replace(str(tmp_path), FIXTURE_ROOT)
    text = text.replace(flatten(str(tmp_path)), flatten(FIXTURE_ROOT))  # config folder names
    text = text.replace(base_url.removeprefix("http://"), "127.0.0.1:8765")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / name).write_text(text)


def header(checkpoint: Path) -> dict[str, str]:
    """The header block of a checkpoint: its first lines, ``**Field:** value``."""
    lines = checkpoint.read_text().splitlines()
    assert lines[0] == f"# Checkpoint: {checkpoint.name}"
    fields = {}
    for line in lines[1 : 1 + len(HEADER_FIELDS)]:
        match = re.fullmatch(r"\*\*(\w+):\*\* (.+)", line)
        assert match, line
        fields[match.group(1)] = match.group(2)
    assert tuple(fields) == HEADER_FIELDS
    return fields


def tool_names(run: CliRun) -> list[str]:
    return [block["name"] for block in run.blocks("assistant", "tool_use")]
