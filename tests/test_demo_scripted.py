"""`tmops demo` with its default provider: the scripted agent, registered and chosen by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tmops_core.plugins import create_plugin_manager
from tmops_core.surfaces.demo import DEMO_PROVIDER, run_demo, scripted_agent_config
from tmops_hookspecs import AgentRequest, WorkspaceError


def test_the_scripted_agent_is_a_provider_like_the_others(tmp_path: Path) -> None:
    registered = create_plugin_manager().providers()[DEMO_PROVIDER]
    provider = registered.spec.factory({})
    request = AgentRequest(
        feature="slugify", run="001", phase="tester", role_instructions="be the tester",
        prompt="-p go", working_dir=tmp_path, extra_dirs=(tmp_path / "cp",),
    )  # fmt: skip
    argv = provider.build_invocation(request).argv
    assert argv[:3] == (sys.executable, "-m", "tmops_plugins.scripted_agent")
    assert argv[argv.index("-p") + 1] == "-p go"
    assert argv[argv.index("--add-dir") + 1] == str(tmp_path / "cp")
    # the core's config names the provider only: no program, no module
    data = scripted_agent_config()
    assert data["providers"] == {DEMO_PROVIDER: {"timeout_s": 300, "idle_timeout_s": 120}}


def test_the_demo_runs_the_scripted_provider(tmp_path: Path) -> None:
    lines: list[str] = []
    code = run_demo(provider=DEMO_PROVIDER, directory=tmp_path / "demo", echo=lines.append)
    text = "\n".join(lines)
    assert code == 0, text
    assert "played by scripted (the scripted local agent" in text
    assert "slugify: completed" in text


def test_the_demo_refuses_an_unknown_provider(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no provider named 'nope'") as caught:
        run_demo(provider="nope", directory=tmp_path / "demo", echo=lambda _: None)
    assert "scripted" in (caught.value.hint or "")
    assert not (tmp_path / "demo").exists()  # nothing made for a run that cannot start
