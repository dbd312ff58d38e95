"""The end of a run: SUMMARY.md in the checkpoint folder and metrics.json in the run folder.

Both are written without following a link (a planted one is refused, so the run fails with the
reason rather than writing through it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tmops_core.checkpoints.parse import parse_checkpoint
from tmops_core.orchestration.crashpoints import crash_point
from tmops_core.orchestration.providers import providers_label
from tmops_core.secrets import redact_data, redact_text
from tmops_core.store import AttemptRecord
from tmops_core.workspace.layout import atomic_write, iso, lstat_checked, utc_now
from tmops_hookspecs import PhaseSpec

if TYPE_CHECKING:
    from tmops_core.orchestration.run import RunDriver

__all__ = ["attempt_row", "write_summary"]


def write_summary(driver: RunDriver, specs: Sequence[PhaseSpec]) -> dict[str, Any]:
    """Write SUMMARY.md (unless one was written by hand) and metrics.json; return the metrics."""
    attempts = driver.store.attempts(driver.feature, driver.run)
    verdict = parse_checkpoint(driver.checkpoint_dir / specs[-1].completion_checkpoint).fields
    first_start = next((a.start_commit for a in attempts if a.start_commit), None)
    commits = driver.git.log(first_start) if first_start else []
    phases: list[dict[str, Any]] = []
    for spec in specs:
        mine = [a for a in attempts if a.phase == spec.name]
        phases.append(
            {
                "phase": spec.name,
                "role": spec.role,
                # the provider its last agent ran with (the one it would run with, if none ran)
                "provider": next(
                    (a.provider for a in reversed(mine) if a.provider != "none"),
                    driver.providers.name(spec.name),
                ),
                "attempts": sum(a.outcome != "adopted" for a in mine),
                # from the store, so phases run before a resume keep their durations
                "duration_s": round(sum(a.duration_s or 0.0 for a in mine), 3),
                "cost_usd": round(sum(a.cost_usd or 0.0 for a in mine), 6),
                "session_id": mine[-1].session_id if mine else None,
                "adopted": bool(mine) and all(a.outcome == "adopted" for a in mine),
            }
        )
    metrics = {
        "feature": driver.feature,
        "run": driver.run,
        "branch": driver.branch,
        "provider": providers_label({p["phase"]: p["provider"] for p in phases}),
        "finished_at": iso(utc_now()),
        "phases": phases,
        "total_cost_usd": round(sum(p["cost_usd"] for p in phases), 6),
        "max_budget_usd": driver.config.features.max_budget_usd,
        # every agent attempt, so a retry's or a rework's cost shows where it was spent
        "attempts": [attempt_row(a) for a in attempts if a.outcome != "adopted"],
        "total_duration_s": round(sum(p["duration_s"] for p in phases), 3),
        "commits": [{"sha": sha, "subject": subject} for sha, subject in commits],
        "quality_score": verdict.get("quality_score"),
        "ready_for_merge": verdict.get("ready_for_merge"),
    }
    atomic_write(
        driver.layout.run_dir(driver.feature, driver.run) / "metrics.json",
        json.dumps(redact_data(metrics), indent=2) + "\n",  # commit subjects are the agents'
    )
    crash_point("during-summary")
    summary = driver.checkpoint_dir / "SUMMARY.md"
    if lstat_checked(summary) is None:  # one written by hand is kept; a link is refused
        atomic_write(summary, redact_text(_render(metrics)))
    return metrics


def attempt_row(attempt: AttemptRecord) -> dict[str, Any]:
    """One attempt as metrics.json and status show it: how it ended, what it cost, its tokens."""
    return {
        "phase": attempt.phase,
        "attempt": attempt.attempt,
        "provider": attempt.provider,
        "state": attempt.state,
        "outcome": attempt.outcome,
        "cost_usd": None if attempt.cost_usd is None else round(attempt.cost_usd, 6),
        "input_tokens": attempt.input_tokens,
        "output_tokens": attempt.output_tokens,
        "duration_s": None if attempt.duration_s is None else round(attempt.duration_s, 3),
    }


def _render(metrics: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {p['phase']} | {p['provider']} | {p['attempts']} | {p['duration_s']:.1f} s | "
        f"${p['cost_usd']:.4f} |"
        for p in metrics["phases"]
    )
    commits = "\n".join(f"- `{c['sha'][:10]}` {c['subject']}" for c in metrics["commits"])
    attempts = "\n".join(
        f"| {a['phase']} | {a['attempt']} | {a['state']} | "
        + ("-" if a["cost_usd"] is None else f"${a['cost_usd']:.4f}")
        + (f" | {a['input_tokens']} / {a['output_tokens']} |"
           if a["input_tokens"] is not None or a["output_tokens"] is not None else " | - |")
        for a in metrics["attempts"]
    )  # fmt: skip
    return (
        f"# Checkpoint: SUMMARY.md\n"
        f"**From:** tmops (orchestration)\n"
        f"**To:** Team\n"
        f"**Timestamp:** {utc_now():%Y-%m-%d %H:%M:%S}\n"
        f"**Feature:** {metrics['feature']}\n"
        f"**Run:** {metrics['run']}\n"
        f"**Status:** complete\n\n"
        f"## Result\n"
        f"Every phase handed off. Branch `{metrics['branch']}`; quality score "
        f"{metrics['quality_score'] or '?'}/10; ready for merge: "
        f"{metrics['ready_for_merge'] or 'not stated'}.\n\n"
        f"## Phases\n| phase | provider | attempts | duration | cost |\n|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"## Attempts\n| phase | attempt | state | cost | tokens in / out |\n"
        f"|---|---|---|---|---|\n{attempts or '| - | - | - | - | - |'}\n\n"
        f"## Commits on the branch\n{commits or '- none'}\n\n"
        f"## Metrics\n- Total duration: {metrics['total_duration_s']:.1f} s\n"
        f"- Total cost: ${metrics['total_cost_usd']:.4f}\n"
    )
