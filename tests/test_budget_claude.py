"""A budget with the REAL Claude Code CLI (only the model is faked, by
``tests/fake_anthropic.py``): tmops hands the CLI what is left of the run's budget as
``--max-budget-usd``; the CLI, counting the cost of the tokens the fake reports, stops there
with ``error_max_budget_usd``, and tmops pauses the run ``budget_exhausted`` instead of failing
it, naming what was spent against which limit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from .fake_anthropic import FakeAnthropic
from .fake_tdd_script import tdd_script
from .test_e2e_claude import AGENT_TEST_COMMAND, config_data, run_tmops, stream_lines

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow

#: every answer says its prompt was this many tokens: dollars per answer at any Claude price
EXPENSIVE_PROMPT = 2_000_000


def test_the_cli_stops_at_the_budget_tmops_gives_it_and_the_run_pauses(
    tmp_path: Path, claude_bin: Path
) -> None:
    script = replace(tdd_script(test_command=AGENT_TEST_COMMAND), input_tokens=EXPENSIVE_PROMPT)
    with FakeAnthropic(script) as fake:
        data = config_data(claude_bin, fake.url, tmp_path / "home")
        data["features"]["max_budget_usd"] = 0.5
        outcome = run_tmops(tmp_path, data)
        requests = fake.messages_requests
    assert (outcome.status["status"], outcome.status["pause_reason"]) == (
        "paused", "budget_exhausted",
    ), outcome.describe()  # fmt: skip
    (attempt,) = outcome.attempts
    assert (attempt.phase, attempt.state, attempt.outcome) == (
        "orchestrator", "paused", "budget_exhausted",
    ), outcome.describe()  # fmt: skip
    # the CLI's own result: it was given the budget and stopped at it, after one answer
    (result,) = [
        line for line in stream_lines(outcome.logs / "orchestrator.log") if line["type"] == "result"
    ]
    assert result["subtype"] == "error_max_budget_usd", result
    assert result["total_cost_usd"] > 0.5
    assert attempt.cost_usd == result["total_cost_usd"]
    assert attempt.input_tokens is not None
    assert attempt.input_tokens >= EXPENSIVE_PROMPT
    assert len(requests) >= 1
    assert f"spent ${result['total_cost_usd']:.4f} of its $0.5000 (features.max_budget_usd)" in (
        outcome.status["last_error"] or ""
    )
