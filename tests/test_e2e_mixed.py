"""End to end with two real agent CLIs in one run: the implementer on the REAL Codex CLI, the
other phases on the REAL Claude Code CLI (``features.phase_providers``).

Only the models are faked, each by its own local API (``tests/fake_openai.py`` for Codex,
``tests/fake_anthropic.py`` for Claude Code), both playing the same TDD script: each CLI runs
its agent loop, its tools really write the files, run pytest and commit, and tmops hands the
work from one CLI to the other through the checkpoints and the gates.

Needs both binaries (``TMOPS_CLAUDE_BIN``, ``TMOPS_CODEX_BIN``); skipped without them, except
that ``TMOPS_REQUIRE_CLAUDE=1`` / ``TMOPS_REQUIRE_CODEX=1`` make a missing one a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import test_e2e_claude as claude
from . import test_e2e_codex as codex
from .fake_anthropic import FakeAnthropic
from .fake_openai import FakeOpenAI
from .fake_tdd_script import CODE_FILE, TEST_FILE, tdd_script

pytestmark = pytest.mark.slow

CLAUDE_PHASES = ("orchestrator", "tester", "verifier")


def test_the_implementer_on_codex_and_the_rest_on_claude_code(
    tmp_path: Path, claude_bin: Path, codex_bin: Path
) -> None:
    script = tdd_script(test_command=claude.AGENT_TEST_COMMAND)
    with FakeAnthropic(script) as anthropic, FakeOpenAI(script) as openai:
        data = claude.config_data(claude_bin, anthropic.url, tmp_path / "claude-home")
        data["providers"].update(
            codex.config_data(codex_bin, openai.url, tmp_path / "codex-home")["providers"]
        )
        data["features"]["phase_providers"] = {"implementer": "codex"}
        outcome = claude.run_tmops(tmp_path, data)
        claude_roles = anthropic.requests_by_role
        codex_roles = openai.requests_by_role
    why = outcome.describe()

    assert outcome.status["status"] == "completed", why
    # each phase ran once, with its provider, and only that provider's model was asked
    assert [(a.phase, a.provider, a.outcome) for a in outcome.attempts] == [
        (role, "codex" if role == "implementer" else "claude-code", "succeeded")
        for role in claude.ROLES
    ], why
    assert set(codex_roles) == {"implementer"}, codex_roles
    assert set(claude_roles) == set(CLAUDE_PHASES), claude_roles
    shown = {p["phase"]: p["provider"] for p in outcome.status["phase_progress"]["phases"]}
    assert shown == {
        "orchestrator": "claude-code", "tester": "claude-code", "implementer": "codex",
        "verifier": "claude-code",
    }  # fmt: skip
    assert outcome.status["provider"] == "claude-code, codex"
    # the tests Claude Code wrote failed, Codex's code made them pass, Claude Code verified it
    assert "No module named 'slug'" in (outcome.logs / "gate-tester.log").read_text()
    assert "3 passed" in (outcome.logs / "gate-implementer.log").read_text()
    assert (outcome.worktree / TEST_FILE).is_file()
    assert (outcome.worktree / CODE_FILE).is_file()
    subjects = claude.git_log(outcome.worktree, "main..HEAD")
    assert any(s.startswith("test(slug)") for s in subjects), subjects
    assert any(s.startswith("feat(slug)") for s in subjects), subjects
    # each session's id is its own CLI's (a Codex thread, a Claude Code session), and the
    # implementer's cost is priced from its tokens at the codex section's prices
    (implementer,) = outcome.of("implementer")
    log = (outcome.logs / "implementer.log").read_text()
    assert f'"thread_id":"{implementer.session_id}"' in log, why
    requests = codex_roles["implementer"]
    assert (implementer.input_tokens, implementer.output_tokens) == (120 * requests, 30 * requests)
    assert implementer.cost_usd == pytest.approx((240 * requests + 240 * requests) / 1e6)
    for role in CLAUDE_PHASES:
        (attempt,) = outcome.of(role)
        lines = claude.stream_lines(outcome.logs / f"{role}.log")
        assert any(line.get("session_id") == attempt.session_id for line in lines), why
    summary = (outcome.checkpoints / "SUMMARY.md").read_text()
    assert "| implementer | codex | 1 |" in summary
    assert "| verifier | claude-code | 1 |" in summary
