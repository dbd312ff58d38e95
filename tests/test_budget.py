"""Cost and budgets with a real engine and the scripted agent: the cost of every attempt in
status, list, SUMMARY.md and metrics.json; an agent that reports tokens only, priced from the
config; a run's and a phase's budget pausing the run ``budget_exhausted``, whether the agent
stops itself (``--max-budget-usd``) or tmops counts; resume refused until the limit is raised."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tmops_core.config import parse_config, provider_settings
from tmops_core.orchestration.limits import price
from tmops_hookspecs import AgentResult, ConfigError, FeatureError, Outcome

from .engine_support import (
    SHORT_WORKFLOW,
    Finished,
    in_memory_service,
    run_workflow,
    scripted_config,
    serve,
)
from .takeover_support import TMOPS

#: USD per million tokens, and what the ``tokens`` fault below costs at that price
PRICES = {"default": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
TOKENS = "100000/20000"
TOKENS_COST = 0.6  # 100000 * 3 / 1e6 + 20000 * 15 / 1e6


def _workflow(tmp_path: Path, fault: str, **features: Any) -> Finished:
    data = scripted_config(
        tmp_path / "state", fault=fault, provider={"prices": PRICES},
        default_phases=SHORT_WORKFLOW, **features,
    )  # fmt: skip
    return run_workflow(tmp_path, data)


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TMOPS, *args, "--workspace", str(root)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_cost_of_every_attempt_shows_in_status_list_summary_and_metrics(
    tmp_path: Path,
) -> None:
    done = _workflow(tmp_path, "*:cost=0.25:always,orchestrator:no-checkpoint")
    try:
        status = done.status()
        assert status["status"] == "completed"
        costs = [(a["phase"], a["attempt"], a["cost_usd"]) for a in status["attempts"]]
        assert costs == [("orchestrator", 1, 0.25), ("orchestrator", 2, 0.25), ("tester", 1, 0.25)]
        per_phase = {p["phase"]: p["cost_usd"] for p in status["phase_progress"]["phases"]}
        assert per_phase == {"orchestrator": 0.5, "tester": 0.25}
        assert status["cost_usd"] == pytest.approx(0.75)

        run_dir = done.root / ".tmops" / done.feature / "runs" / done.init.run
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert [a["cost_usd"] for a in metrics["attempts"]] == [0.25, 0.25, 0.25]
        assert [a["state"] for a in metrics["attempts"]] == ["rejected", "completed", "completed"]
        assert metrics["total_cost_usd"] == pytest.approx(0.75)
        summary = (run_dir / "checkpoints" / "SUMMARY.md").read_text()
        assert "## Attempts" in summary
        assert "| orchestrator | 1 | rejected | $0.2500 | - |" in summary

        listed = json.loads(_cli(done.root, "list", "--json").stdout)
        assert [row["cost_usd"] for row in listed["features"]] == [0.75]
        assert listed["total_cost_usd"] == pytest.approx(0.75)
        text = _cli(done.root, "list").stdout
        assert "total cost of the project: $0.7500" in text
        shown = _cli(done.root, "status", done.feature).stdout
        assert "orchestrator   #2   completed    $0.2500" in shown
        assert "attempts 2, session" in shown
        assert "$0.5000" in shown
    finally:
        done.close()


def test_an_agent_reporting_tokens_only_is_priced_and_its_run_paused_at_the_budget(
    tmp_path: Path,
) -> None:
    done = _workflow(tmp_path, f"*:tokens={TOKENS}:always", max_budget_usd=0.5)
    try:
        status = done.status()
        assert (status["status"], status["pause_reason"]) == ("paused", "budget_exhausted")
        (attempt,) = status["attempts"]
        assert (attempt["phase"], attempt["cost_usd"]) == ("orchestrator", TOKENS_COST)
        assert (attempt["input_tokens"], attempt["output_tokens"]) == (100000, 20000)
        # tmops counted: the agent was not stopped (it knew no cost), the next phase never ran
        assert done.attempts("tester") == []
        assert "the run spent $0.6000 of its $0.5000 (features.max_budget_usd)" in str(
            status["last_error"]
        )
        assert "raise features.max_budget_usd in the config, then `tmops resume" in str(
            status["next_action"]
        )
        with pytest.raises(FeatureError) as refused:
            done.service.resume(done.feature, workspace=done.root, spawn=False)
        assert "cannot resume: budget exhausted" in str(refused.value)
        assert done.store.run(done.feature, done.init.run).status == "paused"  # type: ignore[union-attr]

        raised = in_memory_service(
            scripted_config(
                tmp_path / "state", fault=f"*:tokens={TOKENS}:always",
                provider={"prices": PRICES}, default_phases=SHORT_WORKFLOW, max_budget_usd=2.0,
            )
        )  # fmt: skip
        try:
            raised.resume(done.feature, workspace=done.root, spawn=False)
            serve(raised, done.root)
            after = raised.status(done.feature, workspace=done.root)
        finally:
            raised.close()
        assert after["status"] == "completed"
        assert after["cost_usd"] == pytest.approx(2 * TOKENS_COST)
    finally:
        done.close()


def test_the_agent_stopping_at_the_budget_it_was_given_pauses_the_run_not_fails_it(
    tmp_path: Path,
) -> None:
    # The scripted agent stops only when `--max-budget-usd` reaches it: orchestrator 0.30 of
    # 0.50, then the tester is given what is left (0.20) and stops at once, as claude does.
    done = _workflow(tmp_path, "*:cost=0.3:always", max_budget_usd=0.5)
    try:
        run = done.store.run(done.feature, done.init.run)
        assert run is not None
        assert (run.status, run.pause_reason) == ("paused", "budget_exhausted")
        (tester,) = done.attempts("tester")
        assert (tester.state, tester.outcome) == ("paused", "budget_exhausted")
        assert "the run spent $0.6000 of its $0.5000" in str(run.last_error)
        assert [a.state for a in done.attempts("orchestrator")] == ["completed"]
    finally:
        done.close()


def test_a_phase_budget_pauses_the_run_before_the_phase_spends_more(tmp_path: Path) -> None:
    done = _workflow(
        tmp_path, f"orchestrator:tokens={TOKENS}:always,orchestrator:no-checkpoint",
        phase_budget_usd={"orchestrator": 0.5},
    )  # fmt: skip
    try:
        run = done.store.run(done.feature, done.init.run)
        assert run is not None
        assert (run.status, run.pause_reason) == ("paused", "budget_exhausted")
        # the first attempt wrote no checkpoint; its retry was never started
        assert [a.state for a in done.attempts("orchestrator")] == ["rejected"]
        assert (
            "the orchestrator phase spent $0.6000 of its $0.5000 "
            "(features.phase_budget_usd.orchestrator)" in str(run.last_error)
        )
    finally:
        done.close()


def test_phase_budgets_must_name_phases_of_the_workflow() -> None:
    service = in_memory_service({"features": {"phase_budget_usd": {"implementor": 1.0}}})
    with pytest.raises(ConfigError) as caught:
        service.check_config()
    assert "$.features.phase_budget_usd.implementor" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"features": {"max_budget_usd": 0}}, "$.features.max_budget_usd"),
        ({"features": {"phase_budget_usd": {"tester": -1}}}, "$.features.phase_budget_usd"),
        ({"features": {"usage_limit_wait_s": 0}}, "$.features.usage_limit_wait_s"),
        (
            {"providers": {"command": {"prices": {"default": {"input_per_mtok": 3}}}}},
            "$.providers.command.prices.default.output_per_mtok",
        ),
    ],
)
def test_a_bad_budget_or_price_is_an_error_at_its_path(data: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert any(problem.endswith(f"@ {path}") for problem in caught.value.problems)


def test_tokens_are_priced_by_the_reported_model_then_the_configured_one_then_default() -> None:
    config = parse_config({"providers": {"claude-code": {"model": "big", "prices": {
        "small": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        "big": {"input_per_mtok": 10.0, "output_per_mtok": 20.0},
        "default": {"input_per_mtok": 100.0, "output_per_mtok": 200.0},
    }}}})  # fmt: skip
    settings = provider_settings(config, "claude-code")
    tokens = {"input_tokens": 1_000_000, "output_tokens": 500_000}
    reported = AgentResult(outcome=Outcome.SUCCEEDED, model="small", **tokens)
    assert price(reported, settings) == pytest.approx(2.0)
    unknown = AgentResult(outcome=Outcome.SUCCEEDED, model="other", **tokens)
    assert price(unknown, settings) == pytest.approx(20.0)
    own = AgentResult(outcome=Outcome.SUCCEEDED, cost_usd=0.01, **tokens)
    assert price(own, settings) == 0.01  # the agent's own figure wins
    assert price(AgentResult(outcome=Outcome.SUCCEEDED), settings) is None
    unpriced = provider_settings(parse_config({}), "claude-code")
    assert price(unknown, unpriced) is None
