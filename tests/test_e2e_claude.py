"""End to end: tmops' engine drives the REAL Claude Code CLI through the ``claude-code`` provider.

Only the model is faked (``tests/fake_anthropic.py`` on 127.0.0.1): the CLI runs its whole agent
loop, its tools really write the tests and the code, run pytest and commit in the feature's
worktree, and tmops does the rest as in production: init, triggers, the tests-fail and
tests-pass gates, checkpoint validation, retries and SUMMARY.md. The service is built directly
and the engine served in this process (``serve_engine``), so the test sees every outcome in the
store.

The binary is ``TMOPS_CLAUDE_BIN`` or the one bundled in the ``claude-agent-sdk`` wheel; without
one the tests are skipped, except under ``TMOPS_REQUIRE_CLAUDE=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tmops_core.config import LoadedConfig, parse_config
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.demo_project import DEMO_FEATURE, DEMO_TASK_SPEC, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.store import AttemptRecord, SQLiteStore
from tmops_core.workspace.features import InitRequest
from tmops_plugins.phases import load_instructions

from .fake_anthropic import (
    OTHER,
    FakeAnthropic,
    HttpError,
    Script,
    bash,
)
from .fake_tdd_script import CODE_FILE, TEST_FILE, tdd_script

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow

ROLES = ("orchestrator", "tester", "implementer", "verifier")
RUN = "initial"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
#: what the scripted agent types to run the tests (the venv's python: PATH may lack it)
AGENT_TEST_COMMAND = " ".join(PYTEST)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- a project, a service, a run ----------------------------------------------------------------


@dataclass
class Outcome:
    root: Path
    worktree: Path
    checkpoints: Path
    logs: Path
    status: dict[str, Any]
    attempts: list[AttemptRecord]

    def of(self, phase: str) -> list[AttemptRecord]:
        return [a for a in self.attempts if a.phase == phase]

    def describe(self) -> str:
        """Everything worth reading when an assertion fails."""
        lines = [f"status: {self.status['status']}", f"last_error: {self.status['last_error']}"]
        lines += [
            f"attempt {a.phase}#{a.attempt}: {a.state} {a.outcome} session={a.session_id} "
            f"message={a.message!r}"
            for a in self.attempts
        ]
        for log in sorted(self.logs.glob("*.log")) if self.logs.is_dir() else []:
            lines.append(f"--- {log.name} (last 3000 chars)")
            lines.append(log.read_text(errors="replace")[-3000:])
        return "\n".join(lines)


def config_data(
    claude_bin: Path,
    base_url: str,
    home: Path,
    *,
    max_retries: int = 2,
    **provider: Any,
) -> dict[str, Any]:
    home.mkdir(parents=True, exist_ok=True)
    return {
        "providers": {
            "claude-code": {
                "command": str(claude_bin),
                "permission_mode": "bypassPermissions",
                "env": {
                    "ANTHROPIC_BASE_URL": base_url,
                    "ANTHROPIC_API_KEY": "dummy",
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                    "CLAUDE_CODE_MAX_RETRIES": "0",
                    "CLAUDE_CONFIG_DIR": str(home / ".claude"),
                    "HOME": str(home),
                    "IS_SANDBOX": "1",
                },
                "timeout_s": 180,
                "idle_timeout_s": 120,
                **provider,
            }
        },
        "features": {
            "default_provider": "claude-code",
            "test_command": PYTEST,
            "max_retries": max_retries,
        },
    }


def run_tmops(tmp_path: Path, data: Mapping[str, Any]) -> Outcome:
    """Create the slugify demo project, init the feature, start it and serve the engine."""
    root = create_demo_project(tmp_path / "project").path
    service = Service(LoadedConfig(parse_config(dict(data)), None), create_plugin_manager())
    try:
        init = service.init(InitRequest(feature=DEMO_FEATURE, workspace=root))
        assert init.run == RUN
        init.task_spec.write_text(DEMO_TASK_SPEC, encoding="utf-8")
        service.start(DEMO_FEATURE, workspace=root, spawn=False)
        assert service.serve_engine(workspace=root, idle_exit_s=0.2, retry_backoff_s=(0.1,))
        status = service.status(DEMO_FEATURE, workspace=root)
    finally:
        service.close()
    store = SQLiteStore(root / ".tmops" / "tmops.db")
    try:
        attempts = store.attempts(DEMO_FEATURE, RUN)
    finally:
        store.close()
    return Outcome(
        root=root,
        worktree=init.worktree,
        checkpoints=init.checkpoint_dir,
        logs=init.run_dir / "logs",
        status=status,
        attempts=attempts,
    )


def stream_lines(log: Path) -> list[dict[str, Any]]:
    """The stream-json objects in an agent log (stderr lines are prefixed, so skipped)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def git_log(worktree: Path, *args: str) -> list[str]:
    done = subprocess.run(
        ["git", "log", "--format=%s", *args],
        cwd=worktree,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.splitlines()


def changed_files(worktree: Path, subject: str) -> list[str]:
    """The files changed by the commit of the feature branch whose subject starts so."""
    done = subprocess.run(
        ["git", "log", "--format=", "--name-only", f"--grep=^{subject}", "main..HEAD"],
        cwd=worktree,
        check=True,
        capture_output=True,
        text=True,
    )
    return [line for line in done.stdout.splitlines() if line]


def system_text(body: Mapping[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, list):
        return "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    return str(system or "")


def with_other(script: Script, role: str) -> Script:
    """``script`` where a prompt naming no role (tmops' retry nudge on ``--resume``) plays
    ``role`` again from its first step."""
    return Script(
        steps={**script.steps, OTHER: script.steps[role]},
        faults=script.faults,
        final_text=script.final_text,
    )


# -- 1. the whole workflow ----------------------------------------------------------------------


def test_four_phases_with_the_real_cli(tmp_path: Path, claude_bin: Path) -> None:
    with FakeAnthropic(tdd_script(test_command=AGENT_TEST_COMMAND)) as fake:
        outcome = run_tmops(tmp_path, config_data(claude_bin, fake.url, tmp_path / "home"))
        by_role = fake.requests_by_role
        requests = fake.messages_requests
    why = outcome.describe()

    assert outcome.status["status"] == "completed", why
    assert outcome.status["last_error"] is None, why
    assert outcome.status["phase_progress"]["completed"] == 4, why
    assert (outcome.checkpoints / "SUMMARY.md").is_file(), why
    for name in (
        "001-discovery-trigger.md",
        "003-tests-complete.md",
        "005-impl-complete.md",
        "007-verify-complete.md",
    ):
        assert (outcome.checkpoints / name).is_file(), name
    # one attempt per phase, each one succeeded
    assert [(a.phase, a.attempt, a.state, a.outcome) for a in outcome.attempts] == [
        (role, 1, "completed", "succeeded") for role in ROLES
    ], why
    # every role talked to the model: each saw the prompt tmops wrote for it
    assert all(by_role[role] >= 2 for role in ROLES), by_role
    assert by_role[OTHER] == 0, by_role
    for role in ROLES:  # and its instructions through --append-system-prompt
        heading = load_instructions(role).splitlines()[0]
        assert all(
            heading in system_text(r.body) for r in requests if r.prompt and r.prompt.role == role
        ), role
        assert all(
            r.prompt.worktree == outcome.worktree and r.prompt.checkpoint_dir == outcome.checkpoints
            for r in requests
            if r.prompt
        )

    # the gates saw red after the tester and green after the implementer
    red = (outcome.logs / "gate-tester.log").read_text()
    assert "No module named 'slug'" in red, red
    assert "3 passed" in (outcome.logs / "gate-implementer.log").read_text()

    # the tests are green on the feature branch
    assert (outcome.worktree / TEST_FILE).is_file()
    assert (outcome.worktree / CODE_FILE).is_file()
    green = subprocess.run(
        PYTEST, cwd=outcome.worktree, capture_output=True, text=True, check=False
    )
    assert green.returncode == 0, green.stdout + green.stderr
    assert "3 passed" in green.stdout

    # test first: the tests' commit comes before the code's
    subjects = git_log(outcome.worktree, "main..HEAD")
    test_commit = next(i for i, s in enumerate(subjects) if s.startswith("test(slug)"))
    code_commit = next(i for i, s in enumerate(subjects) if s.startswith("feat(slug)"))
    assert code_commit < test_commit, subjects  # git log lists the newest first
    assert git_log(outcome.worktree, "-1", "--", TEST_FILE)[0].startswith("test(slug)")
    assert changed_files(outcome.worktree, "test(slug)") == [TEST_FILE]
    assert changed_files(outcome.worktree, "feat(slug)") == [CODE_FILE]

    # the real CLI's session ids, one per role, recorded by the engine
    sessions = outcome.status["sessions"]
    for role in ROLES:
        log = outcome.logs / f"{role}.log"
        lines = stream_lines(log)
        init = lines[0]
        assert (init["type"], init.get("subtype")) == ("system", "init"), lines[:1]
        assert init["claude_code_version"]
        assert init["cwd"] == str(outcome.worktree)
        result = lines[-1]
        assert result["type"] == "result", result
        assert result["is_error"] is False, result
        assert any(line["type"] == "assistant" for line in lines)
        assert any(line["type"] == "user" for line in lines)  # tool results
        assert sessions[role]["session_id"] == init["session_id"] == result["session_id"]
        assert sessions[role]["state"] == "completed"
        assert sessions[role]["attempts"] == 1
        assert outcome.of(role)[0].session_id == init["session_id"]
    assert len({sessions[role]["session_id"] for role in ROLES}) == 4


# -- 2. errors ----------------------------------------------------------------------------------


def test_unauthorised_fails_at_once_without_a_retry(tmp_path: Path, claude_bin: Path) -> None:
    with FakeAnthropic(tdd_script(faults=[HttpError(401, times=None)])) as fake:
        outcome = run_tmops(tmp_path, config_data(claude_bin, fake.url, tmp_path / "home"))
        by_role = fake.requests_by_role
    why = outcome.describe()

    assert outcome.status["status"] == "failed", why
    assert "authentication" in outcome.status["last_error"].lower(), why
    assert len(outcome.attempts) == 1, why
    (attempt,) = outcome.attempts
    assert (attempt.phase, attempt.attempt, attempt.outcome) == ("orchestrator", 1, "auth_error")
    assert attempt.state == "failed", why
    assert "401" in (attempt.message or ""), why
    assert not (outcome.checkpoints / "001-discovery-trigger.md").exists()
    assert by_role == {"orchestrator": 1}, by_role  # neither the CLI nor tmops tried again
    assert outcome.status["sessions"]["tester"]["state"] == "not_started"


def test_overloaded_then_fine_is_retried_and_completes(tmp_path: Path, claude_bin: Path) -> None:
    script = with_other(
        tdd_script(
            faults=[HttpError(529, times=1, role="orchestrator")],
            test_command=AGENT_TEST_COMMAND,
        ),
        "orchestrator",
    )
    with FakeAnthropic(script) as fake:
        outcome = run_tmops(tmp_path, config_data(claude_bin, fake.url, tmp_path / "home"))
    why = outcome.describe()

    assert outcome.status["status"] == "completed", why
    first, second = outcome.of("orchestrator")
    assert (first.attempt, first.state, first.outcome) == (1, "rejected", "transient_error"), why
    assert "529" in (first.message or ""), why
    assert (second.attempt, second.state, second.outcome) == (2, "completed", "succeeded"), why
    assert [len(outcome.of(role)) for role in ROLES[1:]] == [1, 1, 1], why
    assert (outcome.checkpoints / "SUMMARY.md").is_file()


def test_connection_refused_is_retried_then_fails(tmp_path: Path, claude_bin: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    outcome = run_tmops(tmp_path, config_data(claude_bin, url, tmp_path / "home", max_retries=1))
    why = outcome.describe()

    assert outcome.status["status"] == "failed", why
    assert [(a.phase, a.attempt, a.outcome) for a in outcome.attempts] == [
        ("orchestrator", 1, "transient_error"),
        ("orchestrator", 2, "transient_error"),
    ], why
    last_error = outcome.status["last_error"]
    assert "connect" in last_error.lower() or "ECONNREFUSED" in last_error, why


def test_max_turns_fails_each_attempt(tmp_path: Path, claude_bin: Path) -> None:
    # With --max-turns 1 the CLI makes one model request, runs its tool calls and stops with
    # error_max_turns. The orchestrator here looks around three times before writing its plan,
    # so neither attempt (the retry resumes the session and goes on one step) gets that far.
    look = [bash("git log --oneline", "Look at the history")]
    steps: Sequence[Any] = [look, look, look, *tdd_script().steps["orchestrator"]]
    script = Script(steps={"orchestrator": steps, OTHER: steps})
    with FakeAnthropic(script) as fake:
        data = config_data(claude_bin, fake.url, tmp_path / "home", max_retries=1, max_turns=1)
        outcome = run_tmops(tmp_path, data)
    why = outcome.describe()

    assert outcome.status["status"] == "failed", why
    assert [(a.phase, a.attempt, a.outcome) for a in outcome.attempts] == [
        ("orchestrator", 1, "failed"),
        ("orchestrator", 2, "failed"),
    ], why
    for attempt in outcome.attempts:
        assert "max turns" in (attempt.message or ""), why
    assert outcome.status["last_error"].startswith("orchestrator: reached max turns"), why
    assert not (outcome.checkpoints / "001-discovery-trigger.md").exists()
    results = [line for line in stream_lines(outcome.logs / "orchestrator.log") if
               line["type"] == "result"]  # fmt: skip
    assert [r["subtype"] for r in results] == ["error_max_turns"] * 2, results


def test_the_last_attempt_of_a_failed_run_is_not_marked_retry(
    tmp_path: Path, claude_bin: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    outcome = run_tmops(tmp_path, config_data(claude_bin, url, tmp_path / "home", max_retries=0))
    why = outcome.describe()
    assert outcome.status["status"] == "failed", why
    (attempt,) = outcome.attempts
    assert attempt.outcome == "transient_error", why
    assert attempt.state == "failed", why
    assert outcome.status["sessions"]["orchestrator"]["state"] == "failed", why
