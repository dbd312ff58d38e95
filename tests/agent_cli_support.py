"""What the end-to-end tests of the agent CLIs driven against a fake model API share: finding
the real binary (skip, or fail where CI requires it), one session run as tmops runs it, and
what a whole run of the test-first script must have left behind.

The whole four-phase runs go through :func:`tests.test_e2e_claude.run_tmops`; the script the
fake model plays is :func:`tests.fake_tdd_script.tdd_script`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tmops_core.store import AttemptRecord
from tmops_hookspecs import AgentRequest, AgentResult, Provider

from .conftest import make_repo
from .fake_tdd_script import CODE_FILE, HEADERS, TEST_FILE
from .test_e2e_claude import ROLES, Outcome, git_log

__all__ = [
    "CHECKPOINTS",
    "assert_auth_error_at_once",
    "assert_priced_per_answer",
    "assert_tdd_run_completed",
    "real_binary",
    "run_session",
]

#: the checkpoints of a four-phase run, in the order the roles write them
CHECKPOINTS = tuple(HEADERS)


def real_binary(variable: str, program: str, install: str) -> Path:
    """The CLI named by ``TMOPS_<X>_BIN`` (``variable``) or ``program`` on PATH; the test is
    skipped without one, and fails instead where ``TMOPS_REQUIRE_<X>=1`` (CI)."""
    named = os.environ.get(variable) or shutil.which(program)
    if named and Path(named).is_file():
        return Path(named)
    why = f"no {program}: {install}, or set {variable}"
    required = variable.replace("_BIN", "").replace("TMOPS_", "TMOPS_REQUIRE_")
    if os.environ.get(required) == "1":
        pytest.fail(f"{required}=1 but {why}")
    pytest.skip(why)


def run_session(provider: Provider, tmp_path: Path, **request: Any) -> AgentResult:
    """One session as tmops starts it, in a new repository under ``tmp_path``: the provider's
    argv, env and stdin, its lines, its judgement."""
    worktree = make_repo(tmp_path / "repo")
    invocation = provider.build_invocation(
        AgentRequest(
            feature="slug", run="initial", phase="tester", role_instructions="",
            working_dir=worktree, **request,
        )
    )  # fmt: skip
    env = {"PATH": os.environ.get("PATH", os.defpath), **invocation.env}
    done = subprocess.run(
        invocation.argv, cwd=worktree, env=env, input=invocation.stdin or "",
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    events = [event for line in done.stdout.splitlines() for event in provider.parse_line(line)]
    return provider.finish(done.returncode, events, done.stderr)


def assert_tdd_run_completed(outcome: Outcome, by_role: Counter[str]) -> None:
    """The four roles of :func:`tests.fake_tdd_script.tdd_script` each succeeded at the first
    attempt, in model turns of their own: every checkpoint written, the gates saw red then
    green, the tests committed before the code."""
    why = outcome.describe()
    assert outcome.status["status"] == "completed", why
    assert [(a.phase, a.attempt, a.outcome) for a in outcome.attempts] == [
        (role, 1, "succeeded") for role in ROLES
    ], why
    assert all(by_role[role] >= 2 for role in ROLES), by_role
    for name in (*CHECKPOINTS, "SUMMARY.md"):
        assert (outcome.checkpoints / name).is_file(), name
    assert "No module named 'slug'" in (outcome.logs / "gate-tester.log").read_text()
    assert "3 passed" in (outcome.logs / "gate-implementer.log").read_text()
    assert (outcome.worktree / TEST_FILE).is_file()
    assert (outcome.worktree / CODE_FILE).is_file()
    subjects = git_log(outcome.worktree, "main..HEAD")
    test_commit = next(i for i, s in enumerate(subjects) if s.startswith("test(slug)"))
    code_commit = next(i for i, s in enumerate(subjects) if s.startswith("feat(slug)"))
    assert code_commit < test_commit, subjects  # newest first: the tests came first


def assert_priced_per_answer(attempt: AttemptRecord, answers: int) -> None:
    """Tokens the agent reported for ``answers`` answers of a fake model API (120 in and 30 out
    each), priced by tmops at 2 and 8 USD the million (the agent reported no cost)."""
    assert (attempt.input_tokens, attempt.output_tokens) == (120 * answers, 30 * answers)
    assert attempt.cost_usd == pytest.approx((240 * answers + 240 * answers) / 1e6)


def assert_auth_error_at_once(outcome: Outcome, by_role: Counter[str]) -> None:
    """The orchestrator's one attempt ended as an auth error (HTTP 401) after one model request,
    and the run failed without a retry."""
    why = outcome.describe()
    assert outcome.status["status"] == "failed", why
    assert [(a.phase, a.attempt, a.outcome) for a in outcome.attempts] == [
        ("orchestrator", 1, "auth_error")
    ], why
    assert "401" in (outcome.attempts[0].message or ""), why
    assert by_role == {"orchestrator": 1}, by_role
