"""The ``phases`` plugin: the four TeamOps roles, in workflow order.

orchestrator -> tester -> implementer -> verifier, handing off through the upstream checkpoint
files (``001-discovery-trigger.md`` ... ``007-verify-complete.md``) so that a person can take over
by hand at any point. Each role's instructions are package data in ``instructions/<role>.md``;
what each completion checkpoint must hold (``PhaseSpec.requires``) is what those instructions
ask for, in the header-block format they describe or upstream's KEY=VALUE lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tmops_hookspecs import (
    Artifact,
    CheckpointRequirement,
    Gate,
    PhaseSpec,
    RollbackPolicy,
    hookimpl,
)

__all__ = ["WORKFLOW", "load_instructions", "tmops_register_phases"]

#: The phase names in the order they run (and the default ``features.default_phases``).
WORKFLOW = ("orchestrator", "tester", "implementer", "verifier")

# Claude Code tool names and permission rules.
_READ_WRITE = ("Read", "Write", "Edit", "Glob", "Grep")
_RUN_TESTS = ("Bash(python -m pytest:*)", "Bash(pytest:*)")
_COMMIT = ("Bash(git add:*)", "Bash(git commit:*)")
_GIT_READ = ("Bash(git log:*)", "Bash(git diff:*)", "Bash(git show:*)")

# What each completion checkpoint must hold. A part is looked for where the role's
# instructions put it, and in the upstream KEY=VALUE form (DETAILS= holds the free text there).
# The checkpoint's claims are not trusted either way: the gates run the tests themselves, so a
# test run is required to be REPORTED (P/N, N > 0), and the tests-fail / tests-pass gate
# decides whether it really is red or green.
_TEST_RUN = r"\b[0-9]+[ \t]*/[ \t]*0*[1-9][0-9]*\b"
_PLAN = CheckpointRequirement(
    what="test plan",
    sections=("action_required", "test_plan"),
    fields=("action_required", "test_plan", "details"),
    hint="write the plan under '## Action Required': one bullet per test, grouped by "
    "acceptance criterion, the interface to test against and the test files to create",
)
_TEST_FILES = CheckpointRequirement(
    what="test files",
    sections=("work_completed", "test_files"),
    fields=("test_files", "details"),
    pattern=r"(?i)[\w./-]*test[\w./-]*\.[a-z0-9]{1,8}\b",
    hint="name each test file under '## Work Completed', as '- tests/test_thing.py: what it "
    "covers'",
)
_FAILING_RUN = CheckpointRequirement(
    what="run of the new tests",
    fields=("passing", "details"),
    pattern=_TEST_RUN,
    hint="report it under '## Metrics' as '- Passing: 0/N', N the number of new tests",
)
_PASSING_RUN = CheckpointRequirement(
    what="run of the whole test suite",
    fields=("passing", "details"),
    pattern=_TEST_RUN,
    hint="report it under '## Metrics' as '- Passing: N/N', counting the whole suite",
)
_SCORE = CheckpointRequirement(
    what="quality score",
    fields=("quality_score",),
    pattern=r"\A(?:10|0?[0-9])\Z",
    hint="end with '## Quality Score' holding 'Quality score: X/10', X a whole number 0-10",
)
_VERDICT = CheckpointRequirement(
    what="merge verdict",
    fields=("ready_for_merge",),
    pattern=r"(?i)\A(?:yes|no)\Z",
    hint="write 'Feature ready for merge: YES' or 'NO' under '## Quality Score'",
)

_WHERE = """\
Feature: {feature} (run {run})
Spec: {task_spec}
Worktree: {worktree} (branch {branch}); work there and run every command from there.
Checkpoint folder: {checkpoint_dir}
"""

_WRITE_CHECKPOINT = """\
Last, write your checkpoint {checkpoint_dir}/{completion_checkpoint} in the header-block \
format of your instructions, atomically as they describe. Use these paths exactly as given; \
never go through a `current` symlink.
"""

_ORCHESTRATOR_PROMPT = (
    "You are the ORCHESTRATOR.\n"
    + _WHERE
    + """\
Read the spec, look at the project in the worktree, and plan the feature: the behaviours to \
test, mapped to the acceptance criteria, edge cases included, and the public interface the \
tests should use. Write no tests and no code. Your plan goes to the tester in the checkpoint \
(From: Orchestrator, To: Tester).
"""
    + _WRITE_CHECKPOINT
)

_TESTER_PROMPT = (
    "You are the TESTER.\n"
    + _WHERE
    + """\
Read the orchestrator's plan in {checkpoint_dir}/{trigger_checkpoint} first. Write the tests, \
run them to confirm that every new test FAILS, and commit them on {branch}. Do not read \
implementation code. The checkpoint goes From: Tester, To: Orchestrator, with `Passing: 0/N`.
"""
    + _WRITE_CHECKPOINT
)

_IMPLEMENTER_PROMPT = (
    "You are the IMPLEMENTER.\n"
    + _WHERE
    + """\
Read {checkpoint_dir}/{trigger_checkpoint} first. Write the least code that makes the committed \
tests pass, run the whole test suite until it is green, and commit the code on \
{branch}. Do not change, add or delete tests. The checkpoint goes From: Implementer, \
To: Orchestrator.
"""
    + _WRITE_CHECKPOINT
)

_VERIFIER_PROMPT = (
    "You are the VERIFIER.\n"
    + _WHERE
    + """\
Read {checkpoint_dir}/{trigger_checkpoint} first. You are read-only: change no file except your \
checkpoint. Check from the git history of {branch} that the tests were committed \
before the code, run the tests, and review security and quality. The checkpoint goes \
From: Verifier, To: Orchestrator, and ends with `## Quality Score` holding \
`Quality score: X/10` and `Feature ready for merge: YES` or `NO`.
"""
    + _WRITE_CHECKPOINT
)


_INSTRUCTIONS = Path(__file__).with_name("instructions")


def load_instructions(role: str) -> str:
    """The instructions of one of the :data:`WORKFLOW` roles, read from the package data.

    :raises ValueError: for a role that is not one of the four.
    """
    if role not in WORKFLOW:
        raise ValueError(
            f"no built-in instructions for role {role!r}; known: {', '.join(WORKFLOW)}"
        )
    # A folder next to this module (the package is never run from a zip): importlib.resources
    # would cost every command that loads the plugins tens of milliseconds of imports.
    return (_INSTRUCTIONS / f"{role}.md").read_text(encoding="utf-8")


@hookimpl
def tmops_register_phases() -> Iterable[PhaseSpec]:
    return [
        PhaseSpec(
            name="orchestrator",
            role="orchestrator",
            instructions=load_instructions("orchestrator"),
            prompt=_ORCHESTRATOR_PROMPT,
            trigger_checkpoint=None,
            completion_checkpoint="001-discovery-trigger.md",
            gates=(),
            rollback=RollbackPolicy(preserve={Artifact.TASK_SPEC}),
            allowed_tools=_READ_WRITE,
            description="reads TASK_SPEC.md and writes the test plan for the tester",
            requires=(_PLAN,),
        ),
        PhaseSpec(
            name="tester",
            role="tester",
            instructions=load_instructions("tester"),
            prompt=_TESTER_PROMPT,
            trigger_checkpoint="001-discovery-trigger.md",
            completion_checkpoint="003-tests-complete.md",
            gates=(Gate.TESTS_FAIL,),
            rollback=RollbackPolicy(preserve={Artifact.TASK_SPEC, Artifact.TESTS}),
            allowed_tools=_READ_WRITE + _COMMIT + _RUN_TESTS,
            description="writes and commits tests that fail (red)",
            requires=(_TEST_FILES, _FAILING_RUN),
        ),
        PhaseSpec(
            name="implementer",
            role="implementer",
            instructions=load_instructions("implementer"),
            prompt=_IMPLEMENTER_PROMPT,
            trigger_checkpoint="004-impl-trigger.md",
            completion_checkpoint="005-impl-complete.md",
            gates=(Gate.TESTS_PASS,),
            rollback=RollbackPolicy(preserve={Artifact.TASK_SPEC, Artifact.TESTS}),
            allowed_tools=_READ_WRITE + _COMMIT + _RUN_TESTS,
            description="writes and commits the least code that makes the tests pass (green)",
            requires=(_PASSING_RUN,),
        ),
        PhaseSpec(
            name="verifier",
            role="verifier",
            instructions=load_instructions("verifier"),
            prompt=_VERIFIER_PROMPT,
            trigger_checkpoint="006-verify-trigger.md",
            completion_checkpoint="007-verify-complete.md",
            gates=(Gate.TESTS_PASS,),
            rollback=RollbackPolicy(preserve={Artifact.TASK_SPEC, Artifact.TESTS, Artifact.CODE}),
            allowed_tools=("Read", "Glob", "Grep", "Write", *_GIT_READ, *_RUN_TESTS),
            description="read-only review: tests before code, security, quality score",
            requires=(_SCORE, _VERDICT),
        ),
    ]
