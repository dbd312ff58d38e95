"""tmops prompt / tmops_get_prompt: what a person pastes into a manual agent session."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tmops_core.service.demo_project import create_demo_project
from tmops_core.surfaces.cli import cli
from tmops_hookspecs import FeatureError
from tmops_plugins.phases import load_instructions

from .engine_support import in_memory_service, new_feature, scripted_config, write_config


def test_the_prompt_of_a_phase_has_its_instructions_and_absolute_paths(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state"))
    try:
        init = new_feature(service, root)
        answer = service.prompt(init.feature, "tester", workspace=root)
        events = service.events_since(init.feature, workspace=root)
    finally:
        service.close()
    # a person took the phase over: the audit trail says so
    given = [e for e in events if e["event_type"] == "orchestration.phase.prompt_given"]
    assert [e["data"]["phase"] for e in given] == ["tester"]
    assert answer["role"] == "tester"
    assert answer["instructions"] == load_instructions("tester")
    assert "You are the TESTER." in answer["prompt"]
    for path in (init.worktree, init.checkpoint_dir, init.task_spec):
        assert str(path) in answer["prompt"]
        assert Path(path).is_absolute()
    assert answer["checkpoint"] == str(Path(init.checkpoint_dir) / "003-tests-complete.md")


def test_an_unknown_phase_is_an_error_naming_the_installed_ones(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state"))
    try:
        init = new_feature(service, root)
        with pytest.raises(FeatureError, match="no phase named 'testr'") as refused:
            service.prompt(init.feature, "testr", workspace=root)
    finally:
        service.close()
    assert "implementer" in str(refused.value)


def test_the_cli_prints_instructions_prompt_and_the_checkpoint_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = create_demo_project(tmp_path / "p").path
    data = scripted_config(tmp_path / "state")
    service = in_memory_service(data)
    try:
        init = new_feature(service, root)
    finally:
        service.close()
    config = write_config(tmp_path / "tmops.yaml", data)
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["--config", str(config), "prompt", init.feature, "verifier"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"# verifier of {init.feature} (run {init.run}): role instructions"
    assert "You are the VERIFIER." in result.output
    checkpoint = Path(init.checkpoint_dir) / "007-verify-complete.md"
    assert lines[-2] == f"# work in {init.worktree}; when done, write {checkpoint}"
