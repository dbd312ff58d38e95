"""End to end: tmops' engine drives the REAL Gemini CLI through the ``gemini`` provider.

Only the model is faked (``tests/fake_gemini.py`` on 127.0.0.1, reached through
``GOOGLE_GEMINI_BASE_URL``): the CLI runs its agent loop, its ``write_file`` and
``run_shell_command`` tools write the tests, the code and the checkpoints, run pytest and commit,
and tmops does the rest as in production. The CLI's home is a temp folder (``GEMINI_CLI_HOME``)
whose settings turn off telemetry, usage statistics and update checks.

The binary is ``TMOPS_GEMINI_BIN`` or ``gemini`` on PATH; without one the tests are skipped,
except under ``TMOPS_REQUIRE_GEMINI=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project

from .acceptance_support import Site
from .agent_cli_support import real_binary
from .engine_support import write_config
from .fake_anthropic import OTHER, HttpError, Script, say
from .fake_gemini import DailyQuota, FakeGemini
from .fake_tdd_script import CODE_FILE, TEST_FILE, tdd_script
from .test_e2e_claude import AGENT_TEST_COMMAND, PYTEST, ROLES, git_log, run_tmops, stream_lines

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow

MODEL = "gemini-2.5-pro"  # named, so the CLI asks no router which model to use
SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
}


@pytest.fixture(scope="session")
def gemini_bin() -> Path:
    """The real Gemini CLI; skipped where missing unless ``TMOPS_REQUIRE_GEMINI=1``."""
    return real_binary("TMOPS_GEMINI_BIN", "gemini", "npm install @google/gemini-cli@0.61.0")


def config_data(gemini: Path, base_url: str, home: Path, **features: Any) -> dict[str, Any]:
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(SETTINGS))
    return {
        "providers": {
            "gemini": {
                "command": str(gemini),
                "model": MODEL,
                "permission_mode": "yolo",
                "env": {
                    "GEMINI_API_KEY": "dummy",
                    "GOOGLE_GEMINI_BASE_URL": base_url,
                    "GEMINI_CLI_HOME": str(home),
                    "GEMINI_CLI_NO_RELAUNCH": "1",
                    "HOME": str(home),
                },
                "prices": {MODEL: {"input_per_mtok": 1.0, "output_per_mtok": 10.0}},
                "timeout_s": 180,
                "idle_timeout_s": 120,
            }
        },
        "features": {
            "default_provider": "gemini",
            "test_command": PYTEST,
            "max_retries": 2,
            **features,
        },
    }


def test_four_phases_with_the_real_gemini_cli(tmp_path: Path, gemini_bin: Path) -> None:
    with FakeGemini(tdd_script(test_command=AGENT_TEST_COMMAND)) as fake:
        outcome = run_tmops(tmp_path, config_data(gemini_bin, fake.url, tmp_path / "home"))
        by_role = fake.requests_by_role
    why = outcome.describe()

    assert outcome.status["status"] == "completed", why
    assert outcome.status["phase_progress"]["completed"] == 4, why
    assert (outcome.checkpoints / "SUMMARY.md").is_file(), why
    assert [(a.phase, a.attempt, a.outcome) for a in outcome.attempts] == [
        (role, 1, "succeeded") for role in ROLES
    ], why
    assert all(by_role[role] >= 2 for role in ROLES), by_role
    # the gates saw red after the tester and green after the implementer
    assert "No module named 'slug'" in (outcome.logs / "gate-tester.log").read_text()
    assert "3 passed" in (outcome.logs / "gate-implementer.log").read_text()
    assert (outcome.worktree / TEST_FILE).is_file()
    assert (outcome.worktree / CODE_FILE).is_file()
    green = subprocess.run(
        PYTEST, cwd=outcome.worktree, capture_output=True, text=True, check=False
    )
    assert green.returncode == 0, green.stdout + green.stderr
    subjects = git_log(outcome.worktree, "main..HEAD")
    assert [s.split("(")[0] for s in subjects[:2]] == ["feat", "test"], subjects
    # the CLI's session ids and tokens reached the store
    for role in ROLES:
        lines = stream_lines(outcome.logs / f"{role}.log")
        assert lines[0]["type"] == "init", lines
        assert lines[-1]["type"] == "result", lines
        (attempt,) = outcome.of(role)
        assert attempt.session_id == lines[0]["session_id"]
        # the CLI reports tokens, no cost: tmops prices them from providers.gemini.prices
        stats = lines[-1]["stats"]
        assert (attempt.input_tokens, attempt.output_tokens) == (
            stats["input_tokens"],
            stats["output_tokens"],
        )
        assert attempt.input_tokens
        expected = (stats["input_tokens"] * 1.0 + stats["output_tokens"] * 10.0) / 1e6
        assert attempt.cost_usd == pytest.approx(expected), attempt
        assert any(line["type"] == "tool_use" for line in lines)
    assert len({a.session_id for a in outcome.attempts}) == 4


def test_unauthorised_fails_with_an_auth_error(tmp_path: Path, gemini_bin: Path) -> None:
    with FakeGemini(tdd_script(faults=[HttpError(401, times=None)])) as fake:
        outcome = run_tmops(tmp_path, config_data(gemini_bin, fake.url, tmp_path / "home"))
    why = outcome.describe()

    assert outcome.status["status"] == "failed", why
    (attempt,) = outcome.attempts
    assert (attempt.phase, attempt.outcome) == ("orchestrator", "auth_error"), why
    assert "API key not valid" in (attempt.message or ""), why
    assert not (outcome.checkpoints / "001-discovery-trigger.md").exists()


def test_overloaded_once_is_retried_and_completes(tmp_path: Path, gemini_bin: Path) -> None:
    faults = [HttpError(503, times=1, role="orchestrator")]
    with FakeGemini(tdd_script(faults=faults, test_command=AGENT_TEST_COMMAND)) as fake:
        outcome = run_tmops(tmp_path, config_data(gemini_bin, fake.url, tmp_path / "home"))
        turns = [
            r.prompt.turn for r in fake.requests if r.prompt and r.prompt.role == "orchestrator"
        ]
    why = outcome.describe()

    assert outcome.status["status"] == "completed", why
    # the first model request got the 503; the CLI asked for the same turn again (its own
    # backoff), so tmops saw one attempt that succeeded
    assert turns[:2] == [0, 0], turns
    assert [(a.attempt, a.outcome) for a in outcome.of("orchestrator")] == [(1, "succeeded")], why
    assert (outcome.checkpoints / "SUMMARY.md").is_file(), why


def test_a_retry_resumes_the_cli_session(tmp_path: Path, gemini_bin: Path) -> None:
    tdd = tdd_script(test_command=AGENT_TEST_COMMAND)
    # the orchestrator's first session ends without its checkpoint; tmops' nudge (a prompt that
    # names no role) then plays the orchestrator's script in the same, resumed session
    steps = {**tdd.steps, "orchestrator": [[say("I will plan later.")]]}
    steps[OTHER] = tdd.steps["orchestrator"]
    with FakeGemini(Script(steps=steps)) as fake:
        outcome = run_tmops(tmp_path, config_data(gemini_bin, fake.url, tmp_path / "home"))
        nudged = [r for r in fake.requests if r.prompt and r.prompt.role == OTHER]
    why = outcome.describe()

    assert outcome.status["status"] == "completed", why
    first, second = outcome.of("orchestrator")
    assert (first.attempt, first.state) == (1, "rejected"), why
    assert (second.attempt, second.outcome) == (2, "succeeded"), why
    assert second.session_id == first.session_id, why  # --resume=<id> continued it
    # the resumed request carries the first session's conversation
    assert any("I will plan later." in json.dumps(r.body) for r in nudged), why


def test_a_daily_quota_pauses_the_run_as_usage_limited(tmp_path: Path, gemini_bin: Path) -> None:
    with FakeGemini(tdd_script(), quotas=[DailyQuota()]) as fake:
        data = config_data(gemini_bin, fake.url, tmp_path / "home", resume_after_usage_limit=False)
        outcome = run_tmops(tmp_path, data)
    why = outcome.describe()

    assert outcome.status["status"] == "paused", why
    (attempt,) = outcome.attempts
    assert (attempt.phase, attempt.outcome) == ("orchestrator", "usage_limited"), why
    assert "daily quota" in (attempt.message or ""), why


def test_tmops_start_wait_runs_the_gemini_cli(tmp_path: Path, gemini_bin: Path) -> None:
    """The same run as a person starts it: the ``tmops`` command, a config file, a spawned
    engine."""
    with FakeGemini(tdd_script(test_command=AGENT_TEST_COMMAND)) as fake:
        data = config_data(gemini_bin, fake.url, tmp_path / "home")
        root = create_demo_project(tmp_path / "p").path
        site = Site(tmp_path, root, write_config(tmp_path / "tmops.yaml", data), tmp_path / "s")
        run_dir = site.init(DEMO_FEATURE)
        started = site.cli("start", DEMO_FEATURE, "--wait", timeout=600)
        assert started.returncode == 0, started.stdout + started.stderr
    assert (run_dir / "checkpoints" / "SUMMARY.md").is_file(), started.stdout
    assert "completed" in site.cli("status", DEMO_FEATURE).stdout
