"""Helpers shared by the tests of ``tmops init`` (``test_features*.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from tmops_core.service.operations import Service
from tmops_core.surfaces.cli import cli
from tmops_core.workspace.features import InitRequest, InitResult


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def branch_exists(repo: Path, branch: str) -> bool:
    result = subprocess.run(
        [
            "git",
            "-c",
            "safe.directory=*",
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/heads/{branch}",
        ],
        cwd=repo,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def write_config(repo: Path, text: str) -> Path:
    path = repo / "tmops.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def init(
    repo: Path, feature: str = "auth-api", *, config: Path | None = None, **kw: Any
) -> InitResult:
    service = Service.load(config)
    try:
        return service.init(InitRequest(feature=feature, workspace=repo, **kw))
    finally:
        service.close()


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)
