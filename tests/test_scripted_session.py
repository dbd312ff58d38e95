"""What a scripted agent session starts from: faults, the prompt's context, saved sessions.

Unit tests of :mod:`tmops_plugins.scripted_session`; the sessions themselves, faults included,
run for real in ``test_scripted_agent.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_hookspecs import PhaseSpec
from tmops_plugins.phases import tmops_register_phases
from tmops_plugins.scripted_session import (
    STATE_ENV,
    Fault,
    parse_faults,
    parse_prompt,
    state_dir,
)

RUN = "initial"
PHASES: dict[str, PhaseSpec] = {spec.name: spec for spec in tmops_register_phases()}
COMPLETION = {name: spec.completion_checkpoint for name, spec in PHASES.items()}


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "faults"),
    [
        ("", ()),
        (" , ", ()),
        ("tester:passing-tests", (Fault("tester", "passing-tests"),)),
        (
            "implementer:broken-code:always, *:slow=1.5",
            (Fault("implementer", "broken-code", always=True), Fault("*", "slow", seconds=1.5)),
        ),
        ("verifier:slow=2:always", (Fault("verifier", "slow", always=True, seconds=2.0),)),
    ],
)
def test_parse_faults(text: str, faults: tuple[Fault, ...]) -> None:
    assert parse_faults(text) == faults


@pytest.mark.parametrize(
    "text",
    [
        "tester",
        "tester:crash:sometimes",
        "tester:crash:always:again",
        "boss:crash",
        "tester:explode",
        "orchestrator:passing-tests",
        "tester:broken-code",
        "tester:slow",
        "tester:slow=-1",
        "tester:slow=nan",
        "tester:crash=3",
    ],
)
def test_parse_faults_refuses_malformed_items(text: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        parse_faults(text)


def test_a_fault_hits_the_first_attempt_only_unless_always() -> None:
    once, always = Fault("tester", "crash"), Fault("*", "crash", always=True)
    assert once.hits("tester", resumed=False)
    assert not once.hits("tester", resumed=True)
    assert not once.hits("verifier", resumed=False)
    assert always.hits("verifier", resumed=True)


# -- prompt parsing and the session store ---------------------------------------------------------


def test_parse_prompt_reads_the_phase_prompts(tmp_path: Path) -> None:
    worktree, checkpoints = tmp_path / "demo", tmp_path / "tmops-run" / "checkpoints"
    spec = tmp_path / "tmops-run" / "TASK_SPEC.md"
    for role, phase in PHASES.items():
        prompt = phase.prompt.format(
            feature=DEMO_FEATURE,
            run=RUN,
            task_spec=spec,
            worktree=worktree,
            branch=f"feature/{DEMO_FEATURE}",
            checkpoint_dir=checkpoints,
            trigger_checkpoint=phase.trigger_checkpoint or "",
            completion_checkpoint=phase.completion_checkpoint,
        )
        context = parse_prompt(prompt, tmp_path / "elsewhere")
        assert context is not None
        assert context.role == role
        assert context.feature == DEMO_FEATURE
        assert context.run == RUN
        assert context.worktree == worktree
        assert context.checkpoint_dir == checkpoints
        assert context.spec == spec
        assert context.completion == phase.completion_checkpoint
        assert context.trigger == phase.trigger_checkpoint


def test_parse_prompt_defaults(tmp_path: Path) -> None:
    assert parse_prompt("Hello", tmp_path) is None
    context = parse_prompt("You are the VERIFIER.\nCheckpoint folder: cps\n", tmp_path)
    assert context is not None
    assert context.worktree == tmp_path
    assert context.checkpoint_dir == tmp_path / "cps"
    assert (context.trigger, context.completion) == (
        "006-verify-trigger.md",
        COMPLETION["verifier"],
    )
    assert context.spec is None


def test_state_dir_choice(tmp_path: Path) -> None:
    assert state_dir({STATE_ENV: "/s"}) == Path("/s")
    assert state_dir({"CLAUDE_CONFIG_DIR": "/c"}) == Path("/c/tmops-scripted")
    assert state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/tmops-scripted")
    assert state_dir({}) == Path.home() / ".local" / "state" / "tmops-scripted"
