"""The built-in checkpoint validators of tmops_plugins.validators."""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs
import pytest

from tmops_core.checkpoints.parse import parse_checkpoint
from tmops_core.checkpoints.validate import run_validators
from tmops_core.plugins import create_plugin_manager
from tmops_hookspecs import (
    Checkpoint,
    CheckpointFormat,
    CheckpointRequirement,
    FeatureContext,
    PhaseSpec,
    Problem,
    Severity,
)
from tmops_plugins.validators import (
    MAX_CHECKPOINT_BYTES,
    check_blocked_status,
    check_file_safety,
    check_identity,
    check_phase_content,
    check_utf8,
    check_verifier_score,
)

from .conftest import REPO

BUILT_IN = {"file-safety", "utf8", "identity", "phase-content", "verifier-score", "blocked-status"}

GOOD_TESTER = """\
# Checkpoint: 003-tests-complete.md
**From:** Tester
**To:** Orchestrator
**Timestamp:** 2026-11-21 10:15:00
**Feature:** hello-api
**Run:** initial
**Status:** complete
## Work Completed
- tests/test_hello.py: the endpoint
## Metrics
- Tests written: 4
- Passing: 0/4
## Git Commit
abc1234
"""


def verifier(score: str = "8/10", verdict: str = "YES") -> str:
    return f"""\
# Checkpoint: 007-verify-complete.md
**From:** Verifier
**Feature:** hello-api
**Run:** initial
**Status:** complete
## Quality Score
Quality score: {score}
Feature ready for merge: {verdict}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints"
    path.mkdir()
    return path


@pytest.fixture
def context(tmp_path: Path, folder: Path) -> FeatureContext:
    return FeatureContext(
        feature="hello-api",
        run="initial",
        workspace="default",
        project_root=tmp_path,
        worktree=tmp_path,
        branch="feature/hello-api",
        run_dir=tmp_path,
        checkpoint_dir=folder,
    )


def make(folder: Path, name: str, content: str | bytes) -> Checkpoint:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return parse_checkpoint(path)


def messages(problems: object) -> list[str]:
    assert not isinstance(problems, str)
    return [problem.message for problem in problems]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def test_entry_point_registers_the_six_validators() -> None:
    validators = create_plugin_manager().validators()
    assert set(validators) >= BUILT_IN
    assert {validators[name].plugin for name in BUILT_IN} == {"validators"}


def test_a_good_checkpoint_passes_every_built_in_validator(
    folder: Path, context: FeatureContext
) -> None:
    validators = {
        name: registered
        for name, registered in create_plugin_manager().validators().items()
        if name in BUILT_IN
    }
    checkpoint = make(folder, "003-tests-complete.md", GOOD_TESTER)
    assert run_validators(checkpoint, context, validators) == []


# --------------------------------------------------------------------------------------------
# file-safety
# --------------------------------------------------------------------------------------------


def test_file_safety_passes_a_regular_file_in_the_folder(
    folder: Path, context: FeatureContext
) -> None:
    checkpoint = make(folder, "003-tests-complete.md", GOOD_TESTER)
    assert list(check_file_safety(checkpoint, context)) == []


def test_file_safety_refuses_a_symlink(folder: Path, context: FeatureContext) -> None:
    target = folder.parent / "target.md"
    target.write_text(GOOD_TESTER)
    (folder / "003-tests-complete.md").symlink_to(target)
    checkpoint = parse_checkpoint(folder / "003-tests-complete.md")
    (message,) = messages(check_file_safety(checkpoint, context))
    assert "is a symlink" in message


def test_file_safety_refuses_a_fifo(folder: Path, context: FeatureContext) -> None:
    os.mkfifo(folder / "003-tests-complete.md")
    checkpoint = parse_checkpoint(folder / "003-tests-complete.md")
    (message,) = messages(check_file_safety(checkpoint, context))
    assert "FIFO" in message


def test_file_safety_refuses_a_file_outside_the_checkpoint_folder(
    tmp_path: Path, context: FeatureContext
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    checkpoint = make(other, "003-tests-complete.md", GOOD_TESTER)
    (message,) = messages(check_file_safety(checkpoint, context))
    assert "not in the checkpoint folder" in message


def test_file_safety_refuses_more_than_one_mib(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", "x" * (MAX_CHECKPOINT_BYTES + 1))
    (message,) = messages(check_file_safety(checkpoint, context))
    assert "at most 1 MiB" in message


def test_file_safety_accepts_exactly_one_mib(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", "x" * MAX_CHECKPOINT_BYTES)
    assert list(check_file_safety(checkpoint, context)) == []


def test_file_safety_reports_a_vanished_file(folder: Path, context: FeatureContext) -> None:
    checkpoint = Checkpoint(
        name="003-tests-complete.md",
        path=folder / "003-tests-complete.md",
        format=CheckpointFormat.PLAIN,
    )
    (message,) = messages(check_file_safety(checkpoint, context))
    assert "cannot be read" in message


# --------------------------------------------------------------------------------------------
# utf8
# --------------------------------------------------------------------------------------------


def test_utf8_passes_utf8_text(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", "**From:** Testér ✓\n")
    assert list(check_utf8(checkpoint, context)) == []


def test_utf8_reports_the_offset_of_invalid_bytes(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", b"hello\xff world\n")
    (message,) = messages(check_utf8(checkpoint, context))
    assert "not valid UTF-8" in message
    assert "byte 5" in message


def test_utf8_reports_a_nul_byte(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", b"abc\x00def\n")
    (message,) = messages(check_utf8(checkpoint, context))
    assert "NUL byte (byte 3)" in message


def test_utf8_leaves_a_symlink_to_file_safety(folder: Path, context: FeatureContext) -> None:
    target = folder.parent / "target.md"
    target.write_bytes(b"\xff\x00")
    (folder / "003-tests-complete.md").symlink_to(target)
    checkpoint = parse_checkpoint(folder / "003-tests-complete.md")
    assert list(check_utf8(checkpoint, context)) == []


def test_utf8_does_not_fault_a_character_cut_at_the_size_limit(
    folder: Path, context: FeatureContext
) -> None:
    content = "x" * (MAX_CHECKPOINT_BYTES - 1) + "é" * 4  # 'é' is 2 bytes: cut at 1 MiB
    checkpoint = make(folder, "003-tests-complete.md", content)
    assert list(check_utf8(checkpoint, context)) == []


# --------------------------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------------------------


def test_identity_passes_the_right_feature_and_run(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", GOOD_TESTER)
    assert list(check_identity(checkpoint, context)) == []


def test_identity_refuses_another_feature(folder: Path, context: FeatureContext) -> None:
    text = GOOD_TESTER.replace("**Feature:** hello-api", "**Feature:** other-api")
    checkpoint = make(folder, "003-tests-complete.md", text)
    (problem,) = check_identity(checkpoint, context)
    assert problem.severity is Severity.ERROR
    assert "names feature 'other-api' but this is 'hello-api'" in problem.message


def test_identity_refuses_another_run(folder: Path, context: FeatureContext) -> None:
    text = GOOD_TESTER.replace("**Run:** initial", "**Run:** retry")
    checkpoint = make(folder, "003-tests-complete.md", text)
    (problem,) = check_identity(checkpoint, context)
    assert "names run 'retry' but this is 'initial'" in problem.message


def test_identity_checks_a_feature_named_without_a_run(
    folder: Path, context: FeatureContext
) -> None:
    checkpoint = make(folder, "003-tests-complete.md", "**Feature:** hello-api\n")
    assert list(check_identity(checkpoint, context)) == []


def test_identity_warns_when_no_names_are_given(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", "Tests are written.\n")
    (problem,) = check_identity(checkpoint, context)
    assert problem.severity is Severity.WARNING
    assert "does not say which feature and run" in problem.message


def test_identity_does_not_require_names_in_summary(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "SUMMARY.md", "# Summary\nAll done.\n")
    assert list(check_identity(checkpoint, context)) == []


def test_identity_reads_key_value_checkpoints(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", "STATUS=complete\nFEATURE=other-api\n")
    (problem,) = check_identity(checkpoint, context)
    assert "names feature 'other-api'" in problem.message


# --------------------------------------------------------------------------------------------
# verifier-score
# --------------------------------------------------------------------------------------------


def test_verifier_score_accepts_eight_out_of_ten(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "007-verify-complete.md", verifier("8/10"))
    assert list(check_verifier_score(checkpoint, context)) == []


@pytest.mark.parametrize("score", ["0/10", "10/10", "7"])
def test_verifier_score_accepts_the_whole_range(
    folder: Path, context: FeatureContext, score: str
) -> None:
    checkpoint = make(folder, "007-verify-complete.md", verifier(score))
    assert list(check_verifier_score(checkpoint, context)) == []


def test_verifier_score_refuses_a_missing_score(folder: Path, context: FeatureContext) -> None:
    text = verifier().replace("Quality score: 8/10\n", "")
    checkpoint = make(folder, "007-verify-complete.md", text)
    (problem,) = check_verifier_score(checkpoint, context)
    assert problem.severity is Severity.ERROR
    assert "no quality score" in problem.message
    assert "Quality score: X/10" in problem.message


@pytest.mark.parametrize("score", ["11/10", "9.5/10", "X/10", "great"])
def test_verifier_score_refuses_a_bad_score(
    folder: Path, context: FeatureContext, score: str
) -> None:
    checkpoint = make(folder, "007-verify-complete.md", verifier(score))
    (message,) = messages(check_verifier_score(checkpoint, context))
    assert "Quality score: X/10" in message


def test_verifier_score_refuses_a_verdict_other_than_yes_or_no(
    folder: Path, context: FeatureContext
) -> None:
    checkpoint = make(folder, "007-verify-complete.md", verifier(verdict="MAYBE"))
    (message,) = messages(check_verifier_score(checkpoint, context))
    assert "write YES or NO" in message


def test_verifier_score_accepts_no_as_verdict(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "007-verify-complete.md", verifier("4/10", "NO"))
    assert list(check_verifier_score(checkpoint, context)) == []


def test_verifier_score_ignores_other_checkpoints(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", GOOD_TESTER)
    assert list(check_verifier_score(checkpoint, context)) == []


# --------------------------------------------------------------------------------------------
# blocked-status
# --------------------------------------------------------------------------------------------


def test_blocked_status_stops_the_handoff_with_the_reason(
    folder: Path, context: FeatureContext
) -> None:
    text = GOOD_TESTER.replace("**Status:** complete", "**Status:** blocked") + (
        "## Blockers\n- The plan names no interface to test\n"
    )
    checkpoint = make(folder, "003-tests-complete.md", text)
    (problem,) = check_blocked_status(checkpoint, context)
    assert problem == Problem(
        message="the Tester reported it is blocked: The plan names no interface to test"
    )


def test_blocked_status_without_blockers_section(folder: Path, context: FeatureContext) -> None:
    text = GOOD_TESTER.replace("**Status:** complete", "**Status:** blocked")
    checkpoint = make(folder, "003-tests-complete.md", text)
    (message,) = messages(check_blocked_status(checkpoint, context))
    assert message == "the Tester reported it is blocked: no reason given under ## Blockers"


def test_blocked_status_of_a_key_value_checkpoint(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "005-impl-complete.md", "STATUS=BLOCKED\nMESSAGE=tests cannot run\n")
    (message,) = messages(check_blocked_status(checkpoint, context))
    assert message == "the agent reported it is blocked: tests cannot run"


def test_complete_status_passes(folder: Path, context: FeatureContext) -> None:
    checkpoint = make(folder, "003-tests-complete.md", GOOD_TESTER)
    assert list(check_blocked_status(checkpoint, context)) == []


# --------------------------------------------------------------------------------------------
# phase-content: what each phase declares its completion checkpoint must hold
# --------------------------------------------------------------------------------------------

PHASES = {
    name: registered.spec
    for name, registered in create_plugin_manager().phases().items()
    if registered.plugin == "phases"
}


def instructions_example(role: str, *, filled: bool = True) -> str:
    """The checkpoint a role's instructions show, with the placeholders filled in as an agent
    doing the work would."""
    text = (REPO / "plugins" / "tmops_plugins" / "instructions" / f"{role}.md").read_text()
    match = re.search(r"```\n(.*?)```", text.split("## Your checkpoint", 1)[1], re.S)
    assert match is not None
    example = match.group(1)
    if not filled:
        return example
    for placeholder, value in {
        "<feature>": "hello-api",
        "<run>": "initial",
        "0/N": "0/4",
        "N/N": "4/4",
        "X/10": "8/10",
    }.items():
        example = example.replace(placeholder, value)
    return example


def content_problems(
    folder: Path, context: FeatureContext, phase: PhaseSpec, text: str | bytes
) -> list[Problem]:
    """What every built-in validator finds in ``text`` as ``phase``'s completion checkpoint."""
    checkpoint = make(folder, phase.completion_checkpoint, text)
    validators = {
        name: registered
        for name, registered in create_plugin_manager().validators().items()
        if name in BUILT_IN
    }
    return run_validators(checkpoint, context, validators, requires=phase.requires)


def errors_of(problems: list[Problem], validator: str = "phase-content") -> list[str]:
    return [
        p.message for p in problems if p.validator == validator and p.severity is Severity.ERROR
    ]


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_the_checkpoint_the_instructions_describe_passes(
    folder: Path, context: FeatureContext, phase: str
) -> None:
    problems = content_problems(folder, context, PHASES[phase], instructions_example(phase))
    assert problems == []


@pytest.mark.parametrize("phase", ["tester", "implementer", "verifier"])
def test_the_instructions_template_left_unfilled_is_refused(
    folder: Path, context: FeatureContext, phase: str
) -> None:
    text = instructions_example(phase, filled=False)
    text = text.replace("<feature>", "hello-api").replace("<run>", "initial")
    assert errors_of(content_problems(folder, context, PHASES[phase], text))


JUNK = {
    "empty": "",
    "white-space": "  \n\n\t\n",
    "junk-text": "lorem ipsum dolor sit amet\nconsectetur adipiscing\n",
    "junk-markdown": "# Notes\nsome thoughts\n## Misc\nmore thoughts\n",
    "bad-front-matter": "---\nfeature: [hello-api\nrun: initial\n---\nDone.\n",
    "front-matter-list": "---\n- hello-api\n- initial\n---\nDone.\n",
}


@pytest.mark.parametrize("phase", sorted(PHASES))
@pytest.mark.parametrize("junk", sorted(JUNK))
def test_an_empty_malformed_or_junk_checkpoint_is_refused_for_every_phase(
    folder: Path, context: FeatureContext, phase: str, junk: str
) -> None:
    problems = content_problems(folder, context, PHASES[phase], JUNK[junk])
    refused = [p for p in problems if p.validator == "phase-content"]
    assert refused
    for problem in refused:
        assert problem.severity is Severity.ERROR
        assert problem.path == folder / PHASES[phase].completion_checkpoint
        assert problem.message.startswith(PHASES[phase].completion_checkpoint)


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_unparseable_front_matter_is_refused_even_on_a_complete_checkpoint(
    folder: Path, context: FeatureContext, phase: str
) -> None:
    text = "---\nfeature: hello: api\n---\n" + instructions_example(phase)
    (message,) = errors_of(content_problems(folder, context, PHASES[phase], text))
    assert "front matter" in message
    assert "not valid YAML" in message
    assert "(line 2)" in message


def test_an_empty_checkpoint_says_so(folder: Path, context: FeatureContext) -> None:
    (message,) = errors_of(content_problems(folder, context, PHASES["tester"], ""))
    assert message.startswith("003-tests-complete.md is empty;")


@pytest.mark.parametrize(
    ("phase", "cut", "missing"),
    [
        ("orchestrator", "## Action Required", "test plan"),
        ("tester", "- Passing:", "run of the new tests"),
        ("implementer", "- Passing:", "run of the whole test suite"),
        ("verifier", "Feature ready for merge", "merge verdict"),
    ],
)
def test_a_missing_part_is_named_with_what_to_write(
    folder: Path, context: FeatureContext, phase: str, cut: str, missing: str
) -> None:
    lines = instructions_example(phase).splitlines(keepends=True)
    if cut.startswith("## "):  # the whole section
        start = next(i for i, line in enumerate(lines) if line.startswith(cut))
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
        del lines[start:end]
    else:
        lines = [line for line in lines if not line.startswith(cut)]
    (message,) = errors_of(content_problems(folder, context, PHASES[phase], "".join(lines)))
    assert f"is missing the {missing}" in message
    requirement = next(r for r in PHASES[phase].requires if r.what == missing)
    assert message.endswith(requirement.hint)


def test_a_part_in_the_wrong_form_is_named_with_what_was_found(
    folder: Path, context: FeatureContext
) -> None:
    text = instructions_example("tester").replace("- Passing: 0/4", "- Passing: none yet")
    (message,) = errors_of(content_problems(folder, context, PHASES["tester"], text))
    assert "has the run of the new tests as 'none yet', which does not match" in message


def test_a_tester_naming_no_test_file_is_refused(folder: Path, context: FeatureContext) -> None:
    text = instructions_example("tester").replace(
        "- tests/test_thing.py: what it covers (one line per test file)", "- wrote some tests"
    )
    (message,) = errors_of(content_problems(folder, context, PHASES["tester"], text))
    assert "has the test files as" in message


def test_the_upstream_key_value_form_can_hold_every_part(
    folder: Path, context: FeatureContext
) -> None:
    text = (
        "TIMESTAMP=2026-11-21 10:15:00\nSTATUS=complete\nFEATURE=hello-api\nRUN=initial\n"
        "TEST_FILES=tests/test_hello.py\nPASSING=0/4\n"
    )
    assert content_problems(folder, context, PHASES["tester"], text) == []
    bare = "TIMESTAMP=2026-11-21 10:15:00\nSTATUS=complete\nMESSAGE=Tests written\n"
    assert len(errors_of(content_problems(folder, context, PHASES["tester"], bare))) == 2


def test_a_blocked_checkpoint_is_left_to_blocked_status(
    folder: Path, context: FeatureContext
) -> None:
    text = (
        "# Checkpoint: 001-discovery-trigger.md\n**From:** Orchestrator\n**Feature:** hello-api\n"
        "**Run:** initial\n**Status:** blocked\n## Blockers\n- The spec is the blank template\n"
    )
    problems = content_problems(folder, context, PHASES["orchestrator"], text)
    assert errors_of(problems) == []
    assert errors_of(problems, "blocked-status") == [
        "the Orchestrator reported it is blocked: The spec is the blank template"
    ]


def test_phase_content_leaves_a_symlink_to_file_safety(
    folder: Path, context: FeatureContext
) -> None:
    target = folder.parent / "target.md"
    target.write_text("")
    (folder / "003-tests-complete.md").symlink_to(target)
    checkpoint = parse_checkpoint(folder / "003-tests-complete.md")
    with_requires = attrs.evolve(context, requires=PHASES["tester"].requires)
    assert list(check_phase_content(checkpoint, with_requires)) == []
    assert messages(check_file_safety(checkpoint, context))


def test_without_requirements_only_emptiness_and_front_matter_count(
    folder: Path, context: FeatureContext
) -> None:
    checkpoint = make(folder, "010-review-complete.md", "Looked at it; all fine.\n")
    assert list(check_phase_content(checkpoint, context)) == []
    empty = make(folder, "011-review-complete.md", "\n")
    assert messages(check_phase_content(empty, context)) == [
        "011-review-complete.md is empty; write the header lines and sections your "
        "instructions describe, in one write"
    ]


def test_a_requirement_with_only_a_pattern_searches_the_whole_text(
    folder: Path, context: FeatureContext
) -> None:
    verdict = CheckpointRequirement(
        what="security verdict", pattern=r"(?im)^security verdict: (pass|fail)$", hint="say it"
    )
    with_requires = attrs.evolve(context, requires=(verdict,))
    good = make(folder, "010-review-complete.md", "Findings: none.\nSecurity verdict: PASS\n")
    assert list(check_phase_content(good, with_requires)) == []
    bad = make(folder, "011-review-complete.md", "Findings: none.\n")
    assert messages(check_phase_content(bad, with_requires)) == [
        "011-review-complete.md is missing the security verdict (expected text matching "
        "`(?im)^security verdict: (pass|fail)$`); say it"
    ]
