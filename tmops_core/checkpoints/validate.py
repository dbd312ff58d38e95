"""Running every registered validator on a checkpoint, with a failing validator contained and
reported as a problem naming it, and with the phase's requirements in the context.

It judges nothing itself: what a checkpoint must hold is declared by its phase
(``PhaseSpec.requires``) and checked by validators (the built-in ``phase-content``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from tmops_core.log import logger
from tmops_core.plugins import Registered
from tmops_hookspecs import (
    Checkpoint,
    CheckpointRequirement,
    FeatureContext,
    Problem,
    ValidatorSpec,
)

__all__ = ["run_validators"]

# --------------------------------------------------------------------------------------------
# Validators
# --------------------------------------------------------------------------------------------


def run_validators(
    checkpoint: Checkpoint,
    context: FeatureContext,
    validators: Mapping[str, Registered[ValidatorSpec]],
    *,
    requires: Iterable[CheckpointRequirement] = (),
) -> list[Problem]:
    """Run every validator on ``checkpoint`` (in name order) and collect their problems.

    ``requires`` is what the phase whose completion checkpoint this is declares it must hold
    (``PhaseSpec.requires``); validators find it in ``context.requires``. Each problem is
    stamped with the validator's name and the checkpoint's path where it left them empty. A
    validator that raises, or returns something other than problems, becomes an ERROR problem
    naming it; it never stops the others.
    """
    requires = tuple(requires)
    if requires:
        context = attrs.evolve(context, requires=requires)
    problems: list[Problem] = []
    for name in sorted(validators):
        registered = validators[name]
        try:
            # typed as problems, but a plugin may return anything
            returned: list[Any] = list(registered.spec.validate(checkpoint, context))
        except (Exception, SystemExit) as exc:
            logger.opt(exception=exc).warning(
                "validator {} (plugin {}) failed on {}", name, registered.plugin, checkpoint.path
            )
            problems.append(
                _stamp(
                    Problem(message=f"validator {name} failed: {type(exc).__name__}: {exc}"),
                    name,
                    checkpoint,
                )
            )
            continue
        bad: list[Any] = []
        for item in returned:
            if isinstance(item, Problem):
                problems.append(_stamp(item, name, checkpoint))
            else:
                bad.append(item)
        if bad:
            kinds = ", ".join(sorted({type(item).__name__ for item in bad}))
            problems.append(
                _stamp(
                    Problem(
                        message=f"validator {name} (plugin {registered.plugin}) returned "
                        f"{len(bad)} item(s) that are not Problem records ({kinds})"
                    ),
                    name,
                    checkpoint,
                )
            )
    return problems


def _stamp(problem: Problem, name: str, checkpoint: Checkpoint) -> Problem:
    changes: dict[str, Any] = {}
    if not problem.validator:
        changes["validator"] = name
    if problem.path is None:
        changes["path"] = checkpoint.path
    return attrs.evolve(problem, **changes) if changes else problem
