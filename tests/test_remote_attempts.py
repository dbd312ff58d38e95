"""The core's side of an attempt run away from the engine (orchestration/remote.py): what a
worker refuses to run, and what the engine refuses to settle."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tmops_core.config import parse_config
from tmops_core.orchestration.remote import JOB_VERSION, RemoteAttempts
from tmops_core.plugins import create_plugin_manager
from tmops_core.surfaces.cli import cli
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import AgentRequest, AttemptSpec, TmopsError
from tmops_plugins.temporal.activities import HeartbeatHooks


def _host(root: Path, workspace: str = "team-a") -> RemoteAttempts:
    config = parse_config({"server": {"workspace_id": workspace}})
    return RemoteAttempts(config, create_plugin_manager(), Layout(root))


def _job(**changes: Any) -> dict[str, Any]:
    job = {"version": JOB_VERSION, "workspace": "team-a", "root": "/srv/p", "feature": "f",
           "run": "initial", "phase": "tester", "attempt": 1, "attempt_id": 7, "fencing": 3,
           "provider": "scripted", "branch": "feature/f", "base": "0" * 40,
           "worktree": ".tmops/worktrees/f", "checkpoint": "c/003.md", "log": "l/t.log",
           "extra_dirs": [], "prompt": "p", "role_instructions": "r",
           "resume_session_id": None, "max_turns": None, "allowed_tools": [],
           "max_budget_usd": None, "env_allow": [], "wall_clock_s": 60.0, "idle_s": 60.0,
           "checkpoint_grace_s": 5.0, "files": {}}  # fmt: skip
    return {**job, **changes}


def _spec(root: Path, fencing: int = 3) -> AttemptSpec:
    request = AgentRequest(feature="f", run="initial", phase="tester", role_instructions="r",
                           prompt="p", working_dir=root)  # fmt: skip
    return AttemptSpec(feature="f", run="initial", phase="tester", attempt=1, fencing=fencing,
                       provider="scripted", request=request, checkpoint=root / "c" / "003.md",
                       log_path=root / "l.log")  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"version": 99}, "run the same tmops on the engine and the workers"),
        ({"workspace": "team-b"}, "a job of workspace 'team-b' reached a worker of 'team-a'"),
        ({"lease": "../x"}, "is not a ref name part"),
        ({"branch": "--upload-pack=x"}, "not a branch name"),
        ({"worktree": "../elsewhere"}, "a path outside the project"),
        ({"checkpoint": "/etc/passwd"}, "a path outside the project"),
    ],
)
def test_a_worker_refuses_a_job_it_must_not_run(
    tmp_path: Path, changes: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(TmopsError, match=re.escape(refusal)):
        _host(tmp_path).run_job(_job(**changes), HeartbeatHooks(1.0))


def test_the_engine_refuses_a_result_under_another_token(tmp_path: Path) -> None:
    with pytest.raises(TmopsError, match="fencing token 2"):
        _host(tmp_path).settle(_spec(tmp_path, fencing=3), {"fencing": 2}, HeartbeatHooks(1.0))


def test_the_engine_refuses_a_checkpoint_written_outside_the_run(tmp_path: Path) -> None:
    result = {"fencing": 3, "files": {"../outside.md": "x"}, "result": {"outcome": "success"}}
    with pytest.raises(TmopsError, match="outside the run's checkpoints"):
        _host(tmp_path).settle(_spec(tmp_path), result, HeartbeatHooks(1.0))
    assert not (tmp_path.parent / "outside.md").exists()


def test_a_worker_serves_only_the_executor_the_config_names(tmp_path: Path) -> None:
    config = tmp_path / "tmops.yaml"
    config.write_text("server:\n  workspace_id: team-a\n")
    config.chmod(0o600)
    result = CliRunner().invoke(
        cli, ["--config", str(config), "worker", "--executor", "temporal",
              "--workspace", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "the config's executor is 'local'" in result.output
