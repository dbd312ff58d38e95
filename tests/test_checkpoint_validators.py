"""tmops_core.checkpoints: running the validators of plugins on a checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tmops_core.checkpoints.validate import run_validators
from tmops_core.plugins import Registered
from tmops_hookspecs import (
    Checkpoint,
    CheckpointRequirement,
    FeatureContext,
    Problem,
    Severity,
    ValidatorSpec,
)

from .checkpoint_support import UPSTREAM_HEADER_BLOCK, parse

# --------------------------------------------------------------------------------------------
# run_validators
# --------------------------------------------------------------------------------------------


@pytest.fixture
def context(tmp_path: Path) -> FeatureContext:
    return FeatureContext(
        feature="hello-api",
        run="initial",
        workspace="default",
        project_root=tmp_path,
        worktree=tmp_path,
        branch="feature/hello-api",
        run_dir=tmp_path,
        checkpoint_dir=tmp_path,
    )


@pytest.fixture
def checkpoint(tmp_path: Path) -> Checkpoint:
    return parse(tmp_path, UPSTREAM_HEADER_BLOCK)


def registry(**validators: Callable[..., Any]) -> dict[str, Registered[ValidatorSpec]]:
    return {
        name.replace("_", "-"): Registered(
            ValidatorSpec(name=name.replace("_", "-"), validate=function), "test-plugin"
        )
        for name, function in validators.items()
    }


def test_problems_are_stamped_with_validator_and_path(
    checkpoint: Checkpoint, context: FeatureContext
) -> None:
    def finds(cp: Checkpoint, ctx: FeatureContext) -> list[Problem]:
        return [
            Problem(message="one"),
            Problem(message="two", validator="custom", path=Path("/elsewhere")),
        ]

    problems = run_validators(checkpoint, context, registry(finds=finds))
    assert problems == [
        Problem(message="one", validator="finds", path=checkpoint.path),
        Problem(message="two", validator="custom", path=Path("/elsewhere")),
    ]


def test_the_phase_requirements_reach_the_validators_in_the_context(
    checkpoint: Checkpoint, context: FeatureContext
) -> None:
    plan = CheckpointRequirement(what="test plan", sections=("action_required",))
    seen: list[tuple[CheckpointRequirement, ...]] = []

    def looks(cp: Checkpoint, ctx: FeatureContext) -> list[Problem]:
        seen.append(ctx.requires)
        return []

    run_validators(checkpoint, context, registry(looks=looks), requires=[plan])
    run_validators(checkpoint, context, registry(looks=looks))
    assert seen == [(plan,), ()]
    assert context.requires == ()  # the caller's context is left as it was


def test_validators_run_in_name_order(checkpoint: Checkpoint, context: FeatureContext) -> None:
    def named(text: str) -> Callable[[Checkpoint, FeatureContext], list[Problem]]:
        return lambda cp, ctx: [Problem(message=text, severity=Severity.WARNING)]

    validators = registry(zeta=named("z"), alpha=named("a"), mid=named("m"))
    assert [p.message for p in run_validators(checkpoint, context, validators)] == ["a", "m", "z"]


def test_a_raising_validator_becomes_an_error_and_the_others_still_run(
    checkpoint: Checkpoint, context: FeatureContext
) -> None:
    def boom(cp: Checkpoint, ctx: FeatureContext) -> list[Problem]:
        raise RuntimeError("nope")

    def fine(cp: Checkpoint, ctx: FeatureContext) -> list[Problem]:
        return [Problem(message="still here", severity=Severity.WARNING)]

    problems = run_validators(checkpoint, context, registry(boom=boom, fine=fine))
    assert problems[0].message == "validator boom failed: RuntimeError: nope"
    assert problems[0].severity is Severity.ERROR
    assert problems[0].validator == "boom"
    assert problems[0].path == checkpoint.path
    assert problems[1].message == "still here"


def test_a_generator_raising_midway_keeps_nothing_of_it(
    checkpoint: Checkpoint, context: FeatureContext
) -> None:
    def half(cp: Checkpoint, ctx: FeatureContext) -> Iterator[Problem]:
        yield Problem(message="first")
        raise ValueError("broken")

    problems = run_validators(checkpoint, context, registry(half=half))
    assert [p.message for p in problems] == ["validator half failed: ValueError: broken"]


def test_non_problem_items_become_an_error_naming_the_validator(
    checkpoint: Checkpoint, context: FeatureContext
) -> None:
    def sloppy(cp: Checkpoint, ctx: FeatureContext) -> list[Any]:
        return [Problem(message="real"), "oops", 3]

    problems = run_validators(checkpoint, context, registry(sloppy=sloppy))
    assert problems[0].message == "real"
    assert problems[1].severity is Severity.ERROR
    assert problems[1].validator == "sloppy"
    assert "validator sloppy" in problems[1].message
    assert "int, str" in problems[1].message


def test_returning_none_becomes_an_error(checkpoint: Checkpoint, context: FeatureContext) -> None:
    def nothing(cp: Checkpoint, ctx: FeatureContext) -> None:
        return None

    (problem,) = run_validators(checkpoint, context, registry(nothing=nothing))
    assert problem.message.startswith("validator nothing failed: TypeError")
    assert problem.severity is Severity.ERROR
