"""The judge: what one attempt's ending and its checkpoint mean for the run.

It maps the provider's outcome to a verdict, makes the completion checkpoint 0600 and runs every
validator on it, then the phase's gates (the tests must fail after the tester, pass after the
implementer), and sets a rejected checkpoint aside so its rewrite is seen as new. It never
starts an agent, never commits and never writes the store: the run loop acts on its verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import attrs

from tmops_core.agents.env import build_env
from tmops_core.checkpoints.parse import parse_checkpoint
from tmops_core.checkpoints.validate import run_validators
from tmops_core.config import Config
from tmops_core.lifecycle import Verdict
from tmops_core.log import logger
from tmops_core.orchestration.crashpoints import crash_point
from tmops_core.orchestration.gates import run_gates
from tmops_core.plugins import Plugins
from tmops_core.workspace.layout import make_private, rename_checked
from tmops_hookspecs import AttemptOutcome, FeatureContext, Outcome, PhaseSpec, Severity, TmopsError

__all__ = ["Judge"]


@attrs.define
class Judge:
    """Judges the attempts of one run."""

    config: Config
    plugins: Plugins
    worktree: Path
    logs_dir: Path
    context: Callable[[str | None], FeatureContext]
    emit: Callable[..., None]
    forget: Callable[[str], None]

    def judge(
        self, spec: PhaseSpec, attempt: AttemptOutcome, checkpoint: Path
    ) -> tuple[Verdict, str]:
        """Accept, retry, fail, pause or cancel, and why."""
        outcome = attempt.result.outcome
        if outcome is Outcome.CANCELLED:
            return Verdict.CANCEL, "cancelled"
        if outcome is Outcome.AUTH_ERROR:
            return Verdict.FAIL, f"authentication failed: {attempt.result.message}"
        if outcome is Outcome.USAGE_LIMITED:
            return Verdict.PAUSE, f"usage limit reached: {attempt.result.message}"
        if outcome is Outcome.BUDGET_EXHAUSTED:
            return Verdict.PAUSE, attempt.result.message or "the agent stopped at its budget"
        if not attempt.checkpoint_present:
            if outcome is Outcome.SUCCEEDED:
                return (
                    Verdict.RETRY,
                    f"the agent ended without writing {spec.completion_checkpoint}",
                )
            return Verdict.RETRY, attempt.result.message or outcome.value
        return self.check_checkpoint(spec, checkpoint)

    def check_checkpoint(self, spec: PhaseSpec, path: Path) -> tuple[Verdict, str]:
        """Validators, then the phase's gates; a rejected checkpoint is set aside."""
        make_private(path)  # an agent's or a person's file, made 0600 like every tmops file
        checkpoint = parse_checkpoint(path)
        problems = run_validators(
            checkpoint, self.context(spec.name), self.plugins.validators(), requires=spec.requires
        )
        errors = [p for p in problems if p.severity is Severity.ERROR]
        for problem in problems:
            self.emit("orchestration.checkpoint.problem", phase=spec.name, file=str(path),
                      validator=problem.validator, severity=problem.severity.value,
                      message=problem.message)  # fmt: skip
        if errors:
            self.set_aside(path)
            first = errors[0]
            return (
                Verdict.RETRY,
                f"checkpoint {path.name} rejected by {first.validator}: {first.message}",
            )
        for gate in run_gates(
            spec.gates,
            command=self.config.features.test_command,
            cwd=self.worktree,
            env=build_env({}, allow=self.config.features.env_allowlist),
            timeout_s=self.config.features.test_timeout,
            log_path=self.logs_dir / f"gate-{spec.name}.log",
        ):
            self.emit("orchestration.gate.checked", phase=spec.name, gate=gate.gate.value,
                      passed=gate.passed, reason=gate.reason)  # fmt: skip
            crash_point("during-gate")
            if not gate.passed:
                self.set_aside(path)
                return Verdict.RETRY, f"gate {gate.gate.value} failed: {gate.reason}"
        return Verdict.ACCEPT, "ok"

    def set_aside(self, path: Path) -> None:
        """Move a rejected checkpoint out of the way so its rewrite is seen as new."""
        target = path.with_name(f".{path.name}.rejected-{time.time_ns()}")
        try:
            rename_checked(path, target)
        except (OSError, TmopsError) as exc:
            logger.warning("could not set aside rejected checkpoint {}: {}", path, exc)
        self.forget(path.name)

    def review(self, spec: PhaseSpec, path: Path) -> str | None:
        """Why the phase's own verdict refuses the work, or ``None`` when it does not.

        A checkpoint that says ``Feature ready for merge: NO``, or whose quality score is under
        ``features.min_quality_score``, refuses it (the verifier's, or any phase that reports a
        verdict in those fields).
        """
        fields = parse_checkpoint(path).fields
        verdict = fields.get("ready_for_merge", "").strip().strip("*`").strip().upper()
        score = fields.get("quality_score", "").strip()
        scored = f" (quality score {score}/10)" if score else ""
        if verdict == "NO":
            return f"the {spec.role} says the feature is not ready for merge{scored}"
        minimum = self.config.features.min_quality_score
        if minimum and score.isdigit() and int(score) < minimum:
            return (
                f"the {spec.role} gave quality score {score}/10, under the minimum of {minimum} "
                "(features.min_quality_score)"
            )
        return None
