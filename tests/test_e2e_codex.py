"""End to end: tmops' engine drives the REAL Codex CLI through the ``codex`` provider.

Only the model is faked (``tests/fake_openai.py``, a Responses API on 127.0.0.1): Codex runs
its agent loop, its shell tool really writes the tests, the code and the checkpoints, runs
pytest and commits, and tmops does the rest (gates, checkpoint validation, retries).

The binary is ``TMOPS_CODEX_BIN`` (the npm package ``@openai/codex``, pinned in ``.ci/run``);
without it the tests are skipped, except under ``TMOPS_REQUIRE_CODEX=1``, where they fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tmops_hookspecs import AgentResult, Outcome
from tmops_plugins.claude_stream import RESUME_FAILED
from tmops_plugins.codex_provider import create_provider

from .agent_cli_support import (
    assert_auth_error_at_once,
    assert_priced_per_answer,
    assert_tdd_run_completed,
    run_session,
)
from .fake_anthropic import OTHER, HttpError
from .fake_openai import FakeOpenAI, codex_args
from .fake_tdd_script import tdd_script
from .test_e2e_claude import AGENT_TEST_COMMAND, PYTEST, ROLES, run_tmops, with_other

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow


def config_data(codex_bin: Path, base_url: str, home: Path, max_retries: int = 2) -> dict[str, Any]:
    (home / "codex").mkdir(parents=True, exist_ok=True)
    return {
        "providers": {
            "codex": {
                "command": str(codex_bin),
                "model": "gpt-test",
                "prices": {"gpt-test": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}},
                # git commits write the repository's .git, outside the worktree sandbox
                "permission_mode": "bypassPermissions",
                "args": codex_args(base_url),
                "env": {
                    "OPENAI_API_KEY": "dummy",
                    "CODEX_HOME": str(home / "codex"),  # never the user's ~/.codex
                    "HOME": str(home),
                },
                "timeout_s": 180,
                "idle_timeout_s": 120,
            }
        },
        "features": {
            "default_provider": "codex",
            "test_command": PYTEST,
            "max_retries": max_retries,
        },
    }


def test_four_phases_with_the_real_codex(tmp_path: Path, codex_bin: Path) -> None:
    with FakeOpenAI(tdd_script(test_command=AGENT_TEST_COMMAND)) as fake:
        outcome = run_tmops(tmp_path, config_data(codex_bin, fake.url, tmp_path / "home"))
        by_role = fake.requests_by_role
    assert_tdd_run_completed(outcome, by_role)
    # the thread ids Codex printed, and the tokens it reported, priced by tmops (Codex
    # reports no cost): each of the fake's answers counts 120 tokens in and 30 out
    for role in ROLES:
        (attempt,) = outcome.of(role)
        assert attempt.session_id, outcome.describe()
        assert f'"thread_id":"{attempt.session_id}"' in (outcome.logs / f"{role}.log").read_text()
        assert_priced_per_answer(attempt, by_role[role])


def test_unauthorised_fails_at_once_without_a_retry(tmp_path: Path, codex_bin: Path) -> None:
    with FakeOpenAI(tdd_script(faults=[HttpError(401, times=None)])) as fake:
        outcome = run_tmops(tmp_path, config_data(codex_bin, fake.url, tmp_path / "home"))
        by_role = fake.requests_by_role
    assert_auth_error_at_once(outcome, by_role)


@pytest.mark.parametrize("status", [429, 503])
def test_a_transient_error_once_is_retried_and_completes(
    tmp_path: Path, codex_bin: Path, status: int
) -> None:
    script = with_other(
        tdd_script(
            faults=[HttpError(status, times=1, role="orchestrator")],
            test_command=AGENT_TEST_COMMAND,
        ),
        "orchestrator",
    )
    with FakeOpenAI(script) as fake:
        outcome = run_tmops(tmp_path, config_data(codex_bin, fake.url, tmp_path / "home"))
        by_role = fake.requests_by_role
    why = outcome.describe()

    assert outcome.status["status"] == "completed", why
    assert by_role[OTHER] >= 1, by_role  # the retry resumed the thread with tmops' nudge
    first, second = outcome.of("orchestrator")
    assert (first.attempt, first.outcome) == (1, "transient_error"), why
    assert str(status) in (first.message or ""), why
    assert (second.attempt, second.outcome) == (2, "succeeded"), why
    assert second.session_id == first.session_id, why  # `codex exec resume` kept the thread
    assert (outcome.checkpoints / "SUMMARY.md").is_file()


def run_provider(codex_bin: Path, tmp_path: Path, url: str, **request: Any) -> AgentResult:
    """One session as tmops starts it: the provider's argv and env, its lines, its judgement."""
    settings = config_data(codex_bin, url, tmp_path / "home")["providers"]["codex"]
    return run_session(create_provider(settings), tmp_path, **request)


def test_a_thread_codex_does_not_know_is_a_failed_resume(tmp_path: Path, codex_bin: Path) -> None:
    with FakeOpenAI(tdd_script()) as fake:
        result = run_provider(
            codex_bin, tmp_path, fake.url,
            prompt="Go on.", resume_session_id="01a236b4-0000-7000-8000-000000000000",
        )  # fmt: skip
        asked = fake.requests_by_role

    assert result.outcome is Outcome.FAILED, result
    assert RESUME_FAILED in result.message, result
    assert result.session_id is None
    assert sum(asked.values()) == 0, asked


def test_a_prompt_starting_with_a_dash_reaches_the_model(tmp_path: Path, codex_bin: Path) -> None:
    with FakeOpenAI(tdd_script()) as fake:
        result = run_provider(codex_bin, tmp_path, fake.url, prompt="--version is not a flag here")
        prompts = [r.prompt.text for r in fake.messages_requests if r.prompt]

    assert result.outcome is Outcome.SUCCEEDED, result
    assert result.session_id
    assert (result.input_tokens, result.output_tokens) == (120, 30)
    assert prompts == ["--version is not a flag here"]
