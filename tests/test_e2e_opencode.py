"""End to end: tmops' engine drives the REAL OpenCode CLI through the ``opencode`` provider.

Only the model is faked (``tests/fake_openai.py``, a Responses API on 127.0.0.1, reached through
OpenCode's built-in ``openai`` provider with its ``baseURL`` set in the ``config`` key): OpenCode
runs its agent loop, its ``write`` and ``bash`` tools really write the tests, the code and the
checkpoints, run pytest and commit, and tmops does the rest (gates, checkpoint validation,
retries). OpenCode's home is a temp folder whose config folder already holds the plugin SDK
OpenCode would otherwise fetch from the npm registry in the background.

The binary is ``TMOPS_OPENCODE_BIN`` (the npm package ``opencode-ai``, pinned in ``.ci/run``) or
``opencode`` on PATH; without one the tests are skipped, except under
``TMOPS_REQUIRE_OPENCODE=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tmops_core.config import parse_config, provider_settings
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.store import SQLiteStore
from tmops_hookspecs import Outcome
from tmops_plugins.claude_stream import RESUME_FAILED
from tmops_plugins.opencode_provider import OpenCodeProvider, create_provider

from .agent_cli_support import (
    assert_auth_error_at_once,
    assert_priced_per_answer,
    assert_tdd_run_completed,
    real_binary,
    run_session,
)
from .fake_anthropic import OTHER, HttpError
from .fake_openai import FakeOpenAI, opencode_tool
from .fake_tdd_script import TEST_FILE, tdd_script
from .test_e2e_claude import AGENT_TEST_COMMAND, PYTEST, ROLES, run_tmops, with_other

pytestmark = pytest.mark.slow

MODEL = "openai/fake-coder"  # not gpt-*: OpenCode gives those apply_patch instead of write
#: OpenCode retries a retryable API error 5 times, waiting what retry-after-ms says
FAST_RETRIES = {"retry-after-ms": "10"}
#: what keeps OpenCode from fetching its plugin SDK (@opencode-ai/plugin) at start
_SDK_INSTALLED = {"dependencies": {"@opencode-ai/plugin": "1.18.33"}}


@pytest.fixture
def opencode_bin() -> Path:
    return real_binary("TMOPS_OPENCODE_BIN", "opencode", "npm install opencode-ai@1.18.33")


def opencode_home(home: Path) -> Path:
    """A home whose OpenCode config folder counts as set up (no npm install at start)."""
    config = home / ".config" / "opencode"
    (config / "node_modules").mkdir(parents=True, exist_ok=True)
    (config / "package.json").write_text(json.dumps(_SDK_INSTALLED))
    lock = {"packages": {"": _SDK_INSTALLED}}
    (config / "package-lock.json").write_text(json.dumps(lock))
    return home


def settings(opencode: Path, base_url: str, home: Path) -> dict[str, Any]:
    provider = {
        "options": {"baseURL": f"{base_url}/v1", "apiKey": "{env:OPENAI_API_KEY}"},
        "models": {"fake-coder": {"name": "fake-coder"}},
    }
    return {
        "command": str(opencode),
        "model": MODEL,
        "prices": {MODEL: {"input_per_mtok": 2.0, "output_per_mtok": 8.0}},
        "config": {"provider": {"openai": provider}, "share": "disabled", "autoupdate": False},
        "env": {
            "OPENAI_API_KEY": "dummy",
            "HOME": str(opencode_home(home)),  # never the user's ~/.config or ~/.local
            "OPENCODE_DISABLE_MODELS_FETCH": "1",  # the bundled model list; no models.dev
        },
        "timeout_s": 180,
        "idle_timeout_s": 120,
    }


def config_data(opencode: Path, base_url: str, home: Path) -> dict[str, Any]:
    return {
        "providers": {"opencode": settings(opencode, base_url, home)},
        "features": {"default_provider": "opencode", "test_command": PYTEST, "max_retries": 2},
    }


def trail(outcome: Any, event_type: str) -> list[dict[str, Any]]:
    """The data of the run's events of ``event_type``, oldest first."""
    store = SQLiteStore(outcome.root / ".tmops" / "tmops.db")
    try:
        rows = store.events_for(DEMO_FEATURE)
    finally:
        store.close()
    return [json.loads(row["data"]) for row in rows if row["event_type"] == event_type]


def fake_api(script: Any) -> FakeOpenAI:
    return FakeOpenAI(script, tool_call=opencode_tool, error_headers=FAST_RETRIES)


def provider(opencode: Path, base_url: str, home: Path) -> OpenCodeProvider:
    """The provider as the engine makes it from the config (its own keys under ``options``)."""
    config = parse_config(config_data(opencode, base_url, home))
    return create_provider(provider_settings(config, "opencode"))


def test_four_phases_with_the_real_opencode(tmp_path: Path, opencode_bin: Path) -> None:
    with fake_api(tdd_script(test_command=AGENT_TEST_COMMAND)) as fake:
        outcome = run_tmops(tmp_path, config_data(opencode_bin, fake.url, tmp_path / "home"))
        by_role = fake.requests_by_role
    assert_tdd_run_completed(outcome, by_role)
    # the session ids OpenCode printed, and its tokens, priced by tmops (OpenCode knows no
    # price of the fake model): each of the fake's answers counts 120 tokens in and 30 out
    for role in ROLES:
        (attempt,) = outcome.of(role)
        log = (outcome.logs / f"{role}.log").read_text()
        assert attempt.session_id, outcome.describe()
        assert f'"sessionID":"{attempt.session_id}"' in log
        assert '"tool":"write"' in log  # every role writes its checkpoint
        assert ('"tool":"bash"' in log) == (role != "orchestrator")  # the others run commands
        assert_priced_per_answer(attempt, by_role[role])
    assert len({a.session_id for a in outcome.attempts}) == 4
    # what a person following the run saw: the tool calls, their targets relative to the
    # worktree or the checkpoint folder
    tools = {(e["phase"], e["tool"], e["target"]) for e in trail(outcome, "agent.tool")}
    assert ("tester", "write", TEST_FILE) in tools, tools
    assert ("tester", "write", "003-tests-complete.md") in tools, tools
    assert ("implementer", "bash", AGENT_TEST_COMMAND) in tools, tools
    texts = {e["text"] for e in trail(outcome, "agent.message")}
    assert "Review done: 8/10, ready for merge." in texts, texts


def test_unauthorised_fails_at_once_without_a_retry(tmp_path: Path, opencode_bin: Path) -> None:
    with fake_api(tdd_script(faults=[HttpError(401, times=None)])) as fake:
        outcome = run_tmops(tmp_path, config_data(opencode_bin, fake.url, tmp_path / "home"))
        by_role = fake.requests_by_role
    assert_auth_error_at_once(outcome, by_role)  # OpenCode does not retry a 401 either


def test_a_transient_error_is_retried_in_the_resumed_session(
    tmp_path: Path, opencode_bin: Path
) -> None:
    # six 503s: the first request and OpenCode's own 5 retries; tmops' retry then resumes the
    # session with its nudge, which plays the orchestrator's script
    faults = [HttpError(503, times=6, role="orchestrator")]
    script = with_other(tdd_script(faults=faults, test_command=AGENT_TEST_COMMAND), "orchestrator")
    with fake_api(script) as fake:
        outcome = run_tmops(tmp_path, config_data(opencode_bin, fake.url, tmp_path / "home"))
        by_role = fake.requests_by_role
        nudged = [r for r in fake.messages_requests if r.prompt and r.prompt.role == OTHER]
    why = outcome.describe()

    assert outcome.status["status"] == "completed", why
    assert by_role["orchestrator"] == 6, by_role
    first, second = outcome.of("orchestrator")
    assert (first.attempt, first.outcome) == (1, "transient_error"), why
    assert "503" in (first.message or ""), why
    assert (second.attempt, second.outcome) == (2, "succeeded"), why
    assert second.session_id == first.session_id, why  # --session=<id> continued it
    # the resumed request carries the first attempt's prompt before tmops' nudge
    assert nudged, by_role
    assert "You are the ORCHESTRATOR" in json.dumps(nudged[0].body), why
    assert (outcome.checkpoints / "SUMMARY.md").is_file()


def test_a_session_opencode_does_not_know_is_a_failed_resume(
    tmp_path: Path, opencode_bin: Path
) -> None:
    with fake_api(tdd_script()) as fake:
        result = run_session(
            provider(opencode_bin, fake.url, tmp_path / "home"), tmp_path,
            prompt="Go on.", resume_session_id="ses_0000000000000000000000000",
        )  # fmt: skip
        asked = fake.requests_by_role

    assert result.outcome is Outcome.FAILED, result
    assert result.resume_failed, result
    assert RESUME_FAILED in result.message, result
    assert sum(asked.values()) == 0, asked


def test_a_prompt_with_quotes_and_dashes_reaches_the_model_as_it_is(
    tmp_path: Path, opencode_bin: Path
) -> None:
    prompt = '--version is not a flag here\n"quoted" and more'
    with fake_api(tdd_script()) as fake:
        result = run_session(
            provider(opencode_bin, fake.url, tmp_path / "home"), tmp_path, prompt=prompt
        )
        prompts = [r.prompt.text for r in fake.messages_requests if r.prompt]

    assert result.outcome is Outcome.SUCCEEDED, result
    assert (result.session_id or "").startswith("ses_"), result
    assert (result.input_tokens, result.output_tokens, result.cost_usd) == (120, 30, None)
    assert prompts == [prompt]  # one model call: the title came from --title
