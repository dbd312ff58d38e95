"""start refuses a run that cannot get past its first step, before anything is queued."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from tmops_core.service.operations import Service
from tmops_core.surfaces.cli import cli
from tmops_hookspecs import ConfigError, FeatureError

from .engine_support import in_memory_service, new_feature, scripted_config


def _project(tmp_path: Path, **provider: Any) -> tuple[Service, Path]:
    from tmops_core.service.demo_project import create_demo_project

    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state", provider=provider))
    new_feature(service, root)
    return service, root


def _nothing_queued(service: Service, root: Path) -> None:
    status = service.status("slugify", workspace=root)
    assert status["status"] == "initialized"
    assert status["run_id"] is None


def test_an_agent_program_that_is_not_installed_is_refused(tmp_path: Path) -> None:
    service, root = _project(tmp_path, command=str(tmp_path / "no-such-claude"))
    try:
        with pytest.raises(FeatureError, match="is not installed") as refused:
            service.start("slugify", workspace=root, spawn=False)
        assert "providers.claude-code.command" in str(refused.value)
        _nothing_queued(service, root)
    finally:
        service.close()


def test_a_program_name_is_looked_up_on_the_agents_path(tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    service, root = _project(tmp_path, command="my-agent", env={"PATH": str(folder)})
    try:
        with pytest.raises(FeatureError, match="'my-agent'"):
            service.start("slugify", workspace=root, spawn=False)
        agent = folder / "my-agent"
        agent.write_text("#!/bin/sh\nexit 0\n")
        agent.chmod(agent.stat().st_mode | stat.S_IXUSR)
        assert service.start("slugify", workspace=root, spawn=False)["status"] == "queued"
    finally:
        service.close()


def test_an_invalid_permission_mode_is_refused(tmp_path: Path) -> None:
    service, root = _project(tmp_path, permission_mode="yolo")
    try:
        with pytest.raises(ConfigError, match="permission_mode"):
            service.start("slugify", workspace=root, spawn=False)
        _nothing_queued(service, root)
    finally:
        service.close()


def test_the_cli_exits_non_zero_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from .engine_support import write_config

    service, root = _project(tmp_path)
    service.close()
    config = write_config(
        tmp_path / "tmops.yaml",
        scripted_config(tmp_path / "state", provider={"command": str(tmp_path / "gone")}),
    )
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["--config", str(config), "start", "slugify"])
    assert result.exit_code == 1
    assert "is not installed" in result.output
    assert "hint:" in result.output
    assert "Traceback" not in result.output
