"""`tmops demo --provider claude-code` runs the real Claude Code where it is installed.

Here "installed" is the binary from the claude-agent-sdk wheel, put on PATH as `claude`, and
the model behind it is the local fake of the Messages API with the slugify script.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tmops_core.surfaces.demo import run_demo

from .fake_anthropic import FakeAnthropic
from .fake_tdd_script import tdd_script

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow


def test_the_demo_with_claude_code_runs_the_real_cli(
    claude_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").symlink_to(claude_bin)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    lines: list[str] = []
    with FakeAnthropic(tdd_script()) as fake:
        # What a user's shell would hold; the agents' environment allowlist passes these on.
        for name, value in {
            "ANTHROPIC_BASE_URL": fake.url,
            "ANTHROPIC_API_KEY": "dummy",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "HOME": str(home),
            "IS_SANDBOX": "1",
        }.items():
            monkeypatch.setenv(name, value)
        code = run_demo(provider="claude-code", directory=tmp_path / "demo", echo=lines.append)
        by_role = dict(fake.requests_by_role)
    text = "\n".join(lines)
    assert code == 0, text
    assert "played by claude-code (Claude Code" in text
    assert "slugify: completed" in text
    # every role was a real CLI session against the fake model
    assert {"orchestrator", "tester", "implementer", "verifier"} <= set(by_role)
    assert "feat(slug)" in text or "work left uncommitted" in text
