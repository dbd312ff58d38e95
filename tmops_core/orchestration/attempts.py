"""One attempt as the executor gets it: the agent request (prompt, instructions, paths, the
session to resume) and the limits, built from the run's config and layout; how late the
watcher saw the checkpoint the attempt wrote, and how long the handoff from it to the run's
next agent took. Pure but for a stat of that checkpoint and the clock."""

from __future__ import annotations

import time
from pathlib import Path

from tmops_core.config import Config, provider_settings
from tmops_core.orchestration import prompts
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import AgentRequest, AttemptSpec, FeatureContext, PhaseSpec

__all__ = ["HandoffClock", "attempt_spec", "detection_lag_ms"]


def attempt_spec(
    *, config: Config, layout: Layout, context: FeatureContext, spec: PhaseSpec, provider: str,
    fencing: int, number: int, resume: str | None, note: str | None, budget: float | None = None,
    env_allow: tuple[str, ...] = (), attempt_id: int = 0,
) -> AttemptSpec:  # fmt: skip
    """The attempt ``number`` at ``spec``: a resumed session is told only ``note``; a fresh one
    gets the whole phase prompt (and the note after it); ``budget``: what it may spend;
    ``env_allow``: what the agent may take from tmops' environment (config and provider spec)."""
    settings = provider_settings(config, provider)
    feature, run = context.feature, context.run
    prompt = (
        note
        if (note and resume)
        else prompts.phase_prompt(spec, context, layout.task_spec(feature, run))
        + (f"\n{note}" if note else "")
    )
    request = AgentRequest(
        feature=feature,
        run=run,
        phase=spec.name,
        role_instructions=prompts.role_instructions(spec, settings, config, layout.project_root),
        prompt=prompt,
        working_dir=context.worktree,
        extra_dirs=(context.checkpoint_dir,),
        resume_session_id=resume,
        max_turns=settings.get("max_turns"),
        allowed_tools=spec.allowed_tools,
        max_budget_usd=budget,
    )
    return AttemptSpec(
        feature=feature,
        run=run,
        phase=spec.name,
        attempt=number,
        attempt_id=attempt_id,
        fencing=fencing,
        provider=provider,
        request=request,
        checkpoint=context.checkpoint_dir / spec.completion_checkpoint,
        log_path=layout.logs_dir(feature, run) / f"{spec.role}.log",
        env=settings.get("env", {}),
        env_allow=env_allow or tuple(config.features.env_allowlist),
        wall_clock_s=float(settings.get("timeout_s") or 3600),
        idle_s=float(settings.get("idle_timeout_s") or 600),
        checkpoint_grace_s=float(config.features.checkpoint_timeout),
    )


def detection_lag_ms(seen_at: float | None, checkpoint: Path) -> float:
    """Milliseconds from the checkpoint's last write to the watcher seeing it (0 if unknown)."""
    seen = seen_at or time.time()
    try:
        return max(0.0, (seen - checkpoint.stat().st_mtime) * 1000)
    except OSError:
        return 0.0


class HandoffClock:
    """The handoff of one run: from an agent's completion checkpoint being written to the run's
    next agent process running (the judge, the gates and the commit between them included).
    The engine records it as ``handoff_ms`` of ``orchestration.session.started``; metrics read
    it from the store. A time read and a subtraction: nothing the handoff waits for."""

    def __init__(self) -> None:
        self._written_at: float | None = None

    def detected(self, seen_at: float | None, checkpoint: Path) -> float:
        """:func:`detection_lag_ms` of ``checkpoint``, remembering when it was written."""
        seen = seen_at or time.time()
        lag_ms = detection_lag_ms(seen, checkpoint)
        self._written_at = seen - lag_ms / 1000
        return lag_ms

    def take_ms(self) -> float | None:
        """Milliseconds from the last checkpoint written to now (an agent has started), once;
        None when no checkpoint came since the last agent started (a run's first agent)."""
        if self._written_at is None:
            return None
        elapsed_ms = max(0.0, (time.time() - self._written_at) * 1000)
        self._written_at = None
        return round(elapsed_ms, 2)
