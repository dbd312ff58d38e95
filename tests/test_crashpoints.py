"""tmops_core.orchestration.crashpoints: a named point kills the process only when asked."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tmops_core.orchestration.crashpoints import CRASH_POINTS

_PROGRAM = """
from tmops_core.orchestration.crashpoints import crash_point
for _ in range(3):
    crash_point("after-commit")
    print("passed", flush=True)
"""


def _run(crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {"TMOPS_CRASH_AT": crash_at} if crash_at else {}
    return subprocess.run(
        [sys.executable, "-c", _PROGRAM], env=env, capture_output=True, text=True, check=False
    )


def test_unset_crash_points_do_nothing() -> None:
    result = _run(None)
    assert result.returncode == 0
    assert result.stdout.count("passed") == 3


@pytest.mark.parametrize(("target", "passes"), [("after-commit", 0), ("after-commit:3", 2)])
def test_the_named_point_kills_with_sigkill(target: str, passes: int) -> None:
    result = _run(target)
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.count("passed") == passes


def test_another_point_is_passed_through() -> None:
    assert _run("before-commit").returncode == 0


def test_the_points_are_named_once() -> None:
    assert len(set(CRASH_POINTS)) == len(CRASH_POINTS)
