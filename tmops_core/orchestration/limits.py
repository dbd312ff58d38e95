"""What a run may spend and when it may go on: the price of what a token-only agent reported,
what is left of the run's and the phase's budget, and the pauses a spent budget
(``budget_exhausted``) or a usage limit (``usage_limited``, with when it lifts) end a run with.

Pure but for the clock: the run loop hands in the config, the attempts and the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tmops_core.config import Config
from tmops_core.lifecycle import PauseReason, RunState
from tmops_core.orchestration.endings import Ending
from tmops_core.store import AttemptRecord
from tmops_core.workspace.layout import iso, utc_now
from tmops_hookspecs import AgentResult, Outcome

__all__ = [
    "budget_ending",
    "budget_left",
    "pause_ending",
    "price",
    "spent",
    "usage_limit_ending",
]

_PER_MILLION = 1_000_000


def spent(result: AgentResult, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What an attempt cost, priced from its tokens (at its provider's prices, ``settings``)
    when the agent gave no cost; its turns and tokens."""
    return {"cost_usd": price(result, settings), "turns": result.turns,
            "tokens": (result.input_tokens, result.output_tokens)}  # fmt: skip


def price(result: AgentResult, settings: Mapping[str, Any]) -> float | None:
    """The attempt's cost: the agent's own figure, else its tokens priced from the provider's
    ``prices`` (the reported model's, the configured model's, else ``default``); None when
    neither is known."""
    if result.cost_usd is not None:
        return result.cost_usd
    if result.input_tokens is None and result.output_tokens is None:
        return None
    prices: Mapping[str, Any] = settings.get("prices") or {}
    for model in (result.model, settings.get("model"), "default"):
        found = prices.get(model) if model else None
        if found is not None:
            cost: float = (
                (result.input_tokens or 0) * found.input_per_mtok
                + (result.output_tokens or 0) * found.output_per_mtok
            ) / _PER_MILLION
            return cost
    return None


def _limits(config: Config, phase: str) -> list[tuple[str, str, float]]:
    """(what, config key, limit) of every budget that applies to an attempt at ``phase``."""
    found = []
    if config.features.max_budget_usd is not None:
        found.append(("the run", "features.max_budget_usd", config.features.max_budget_usd))
    if phase in config.features.phase_budget_usd:
        found.append(
            (f"the {phase} phase", f"features.phase_budget_usd.{phase}",
             config.features.phase_budget_usd[phase])
        )  # fmt: skip
    return found


def _spent(attempts: Sequence[AttemptRecord], what: str, phase: str) -> float:
    return sum(
        a.cost_usd or 0.0 for a in attempts if what == "the run" or a.phase == phase
    )  # every attempt counts, also those a person sent back: the money is spent


def budget_left(config: Config, attempts: Sequence[AttemptRecord], phase: str) -> float | None:
    """What is left for an attempt at ``phase`` of the tightest budget; None: no budget."""
    left = [limit - _spent(attempts, what, phase) for what, _, limit in _limits(config, phase)]
    return min(left) if left else None


def budget_ending(
    config: Config, attempts: Sequence[AttemptRecord], feature: str, phase: str
) -> Ending | None:
    """The pause ``budget_exhausted`` when a budget that applies at ``phase`` is spent, naming
    what was spent against which limit and how to go on; None while money is left."""
    for what, key, limit in _limits(config, phase):
        spent = _spent(attempts, what, phase)
        if spent >= limit:
            return Ending(
                RunState.PAUSED,
                f"budget exhausted: {what} spent ${spent:.4f} of its ${limit:.4f} "
                f"({key}); raise {key} in the config, then `tmops resume {feature}`",
                PauseReason.BUDGET_EXHAUSTED,
            )
    return None


def usage_limit_ending(config: Config, result: AgentResult, message: str) -> Ending:
    """The pause ``usage_limited``, with when the limit lifts: the time the agent reported,
    else ``features.usage_limit_wait_s`` from now (rounded up to the second)."""
    wait = result.retry_after_s
    if wait is None or wait < 0 or not math.isfinite(wait):
        wait = float(config.features.usage_limit_wait_s)
    lifts = datetime.fromtimestamp(math.ceil(utc_now().timestamp() + wait), UTC)
    when = iso(lifts)
    then = (
        f"the run resumes by itself at {when}"
        if config.features.resume_after_usage_limit
        else f"the limit lifts at {when}; `tmops resume` goes on"
    )
    return Ending(RunState.PAUSED, f"{message} ({then})", PauseReason.USAGE_LIMITED, when)


def pause_ending(
    config: Config, result: AgentResult, message: str, attempts: Sequence[AttemptRecord],
    feature: str, phase: str,
) -> Ending:  # fmt: skip
    """How a run the judge paused stops: the agent stopped at the budget it was given (tmops'
    own count names the limit, else the agent's word), or a usage limit."""
    if result.outcome is not Outcome.BUDGET_EXHAUSTED:
        return usage_limit_ending(config, result, message)
    keys = " or ".join(key for _, key, _ in _limits(config, phase)) or "the budget"
    return budget_ending(config, attempts, feature, phase) or Ending(
        RunState.PAUSED,
        f"budget exhausted: {message}; raise {keys} in the config, then `tmops resume {feature}`",
        PauseReason.BUDGET_EXHAUSTED,
    )
