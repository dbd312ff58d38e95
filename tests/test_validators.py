"""The built-in checkpoint validators of tmops_plugins.validators."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tmops_core.checkpoints.parse import parse_checkpoint
from tmops_core.checkpoints.validate import run_validators
from tmops_core.plugins import create_plugin_manager
from tmops_hookspecs import Checkpoint, CheckpointFormat, FeatureContext, Problem, Severity
from tmops_plugins.validators import (
    MAX_CHECKPOINT_BYTES,
    check_blocked_status,
    check_file_safety,
    check_identity,
    check_utf8,
    check_verifier_score,
)

BUILT_IN = {"file-safety", "utf8", "identity", "verifier-score", "blocked-status"}

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


def test_entry_point_registers_the_five_validators() -> None:
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
