"""tmops_core.checkpoints: parsing checkpoint files, in every format, and hostile files.

Watching the folder is tested in ``test_checkpoint_watcher.py``, running validators in
``test_checkpoint_validators.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tmops_core.checkpoints.parse import MAX_CHECKPOINT_BYTES, parse_checkpoint
from tmops_hookspecs import CheckpointFormat

from .checkpoint_support import UPSTREAM_HEADER_BLOCK, parse, write
from .conftest import REPO

INSTRUCTIONS = REPO / "plugins" / "tmops_plugins" / "instructions"


def instructions_block(role: str) -> str:
    """The checkpoint example an agent of ``role`` is told to write, as in its instructions."""
    text = (INSTRUCTIONS / f"{role}.md").read_text()
    section = text.split("## Your checkpoint", 1)[1]
    match = re.search(r"```\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


# --------------------------------------------------------------------------------------------
# Parsing: the formats
# --------------------------------------------------------------------------------------------


def test_upstream_header_block_is_parsed(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, UPSTREAM_HEADER_BLOCK, "004-impl-trigger.md")
    assert checkpoint.format is CheckpointFormat.HEADER_BLOCK
    assert checkpoint.name == "004-impl-trigger.md"
    assert dict(checkpoint.fields) == {
        "checkpoint": "004-impl-trigger.md",
        "from": "Orchestrator",
        "to": "Implementer",
        "timestamp": "2025-08-20 09:34:30",
        "feature": "hello-api",
        "run": "initial",
    }


def test_tester_instructions_example_is_parsed(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, instructions_block("tester"))
    assert checkpoint.format is CheckpointFormat.HEADER_BLOCK
    fields = checkpoint.fields
    assert fields["from"] == "Tester"
    assert fields["to"] == "Orchestrator"
    assert fields["feature"] == "<feature>"
    assert fields["run"] == "<run>"
    assert fields["status"] == "complete"
    assert fields["tests_written"] == "N"
    assert fields["passing"] == "0/N"
    assert fields["git_commit"] == "<the id of your test commit>"


def test_verifier_instructions_example_is_parsed(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, instructions_block("verifier"), "007-verify-complete.md")
    assert checkpoint.format is CheckpointFormat.HEADER_BLOCK
    fields = checkpoint.fields
    assert fields["from"] == "Verifier"
    assert fields["timestamp"] == "2026-11-21 11:05:00"
    assert fields["tests"] == "N"
    assert fields["passing"] == "N/N"
    assert fields["quality_score"] == "X"  # the template's placeholder, refused by validators
    assert fields["ready_for_merge"] == "YES"
    assert fields["git_commit"] == "<the id of the commit you reviewed (HEAD)>"


def test_filled_in_verifier_checkpoint_gives_the_score_as_a_number(tmp_path: Path) -> None:
    text = (
        instructions_block("verifier")
        .replace("<feature>", "hello-api")
        .replace("<run>", "initial")
        .replace("X/10", "8/10")
    )
    checkpoint = parse(tmp_path, text, "007-verify-complete.md")
    assert checkpoint.fields["quality_score"] == "8"
    assert checkpoint.fields["feature"] == "hello-api"


def test_header_values_are_stripped_of_trailing_spaces(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, "# Checkpoint: 003-tests-complete.md\n**From:** Tester  \n")
    assert checkpoint.fields["from"] == "Tester"


def test_header_keys_are_lowercase_with_underscores(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, "**Gate Status:** AUTO_APPROVED\n**Work-Item:** 7\n")
    assert checkpoint.format is CheckpointFormat.HEADER_BLOCK
    assert checkpoint.fields["gate_status"] == "AUTO_APPROVED"
    assert checkpoint.fields["work_item"] == "7"


def test_the_header_wins_over_a_later_line_with_the_same_key(tmp_path: Path) -> None:
    text = "**Feature:** hello-api\n## Work Completed\n**Feature:** something-else\n"
    assert parse(tmp_path, text).fields["feature"] == "hello-api"


def test_key_value_lines_are_parsed(tmp_path: Path) -> None:
    text = (
        "TIMESTAMP=2025-08-20 09:34:30\n"
        "STATUS=complete\n"
        'MESSAGE="Tests written and committed"\n'
        "DETAILS=18 tests, a=b inside\n"
    )
    checkpoint = parse(tmp_path, text)
    assert checkpoint.format is CheckpointFormat.KEY_VALUE
    assert dict(checkpoint.fields) == {
        "timestamp": "2025-08-20 09:34:30",
        "status": "complete",
        "message": "Tests written and committed",
        "details": "18 tests, a=b inside",
    }


def test_front_matter_is_parsed_keeping_values_as_written(tmp_path: Path) -> None:
    text = (
        "---\n"
        "feature: hello-api\n"
        "run: initial\n"
        "Ready-For-Merge: YES\n"
        "quality_score: 8/10\n"
        "nested: {a: 1}\n"
        "---\n"
        "# Review\n"
        "## Git Commit\n"
        "abc1234\n"
    )
    checkpoint = parse(tmp_path, text, "007-verify-complete.md")
    assert checkpoint.format is CheckpointFormat.FRONT_MATTER
    assert dict(checkpoint.fields) == {
        "feature": "hello-api",
        "run": "initial",
        "ready_for_merge": "YES",  # not True, as plain YAML 1.1 would make it
        "quality_score": "8",
        "git_commit": "abc1234",
    }


@pytest.mark.parametrize(
    "front",
    [
        "---\na: &x [1, 2]\nb: *x\n---\n",  # an alias
        "---\nfeature: [unclosed\n---\n",  # not YAML
        "---\n- a list\n- not a mapping\n---\n",
    ],
    ids=["alias", "invalid-yaml", "not-a-mapping"],
)
def test_bad_front_matter_is_read_as_plain_and_says_why(tmp_path: Path, front: str) -> None:
    checkpoint = parse(tmp_path, front + "some text\n")
    assert checkpoint.format is CheckpointFormat.PLAIN
    assert dict(checkpoint.fields) == {}
    assert checkpoint.parse_error is not None
    assert checkpoint.parse_error.startswith("its front matter (between the '---' lines) ")


def test_why_front_matter_cannot_be_read(tmp_path: Path) -> None:
    def why(front: str) -> str | None:
        return parse(tmp_path, front + "text\n").parse_error

    assert why("---\nfeature: hello: api\n---\n") == (
        "its front matter (between the '---' lines) is not valid YAML: mapping values are not "
        "allowed here (line 2)"
    )
    assert "YAML aliases are not allowed" in (why("---\na: &x 1\nb: *x\n---\n") or "")
    assert "is a list, not a mapping" in (why("---\n- a\n---\n") or "")
    assert "is a single value, not a mapping" in (why("---\njust words\n---\n") or "")
    assert "is empty" in (why("---\n---\n") or "")


def test_good_checkpoints_have_no_parse_error(tmp_path: Path) -> None:
    for text in (UPSTREAM_HEADER_BLOCK, "STATUS=complete\n", "---\na: b\n---\nx\n", "plain\n", ""):
        assert parse(tmp_path, text).parse_error is None


def test_sections_hold_the_text_under_each_heading(tmp_path: Path) -> None:
    text = (
        "# Checkpoint: 001-discovery-trigger.md\n"
        "**From:** Orchestrator\n"
        "## Work Completed\n"
        "Looked around.\n"
        "## Action Required\n"
        "\n"
        "### AC1\n"
        "- test one\n"
        "```\n"
        "## not a heading, inside a fence\n"
        "```\n"
        "## Expected Response  ##\n"
        "## Action Required\n"
        "- test two\n"
    )
    sections = parse(tmp_path, text, "001-discovery-trigger.md").sections
    assert dict(sections) == {
        "work_completed": "Looked around.",
        "action_required": (
            "### AC1\n- test one\n```\n## not a heading, inside a fence\n```\n- test two"
        ),
        "expected_response": "",
    }


def test_the_instructions_examples_have_their_sections(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, instructions_block("orchestrator"), "001-discovery-trigger.md")
    assert set(checkpoint.sections) == {
        "work_completed",
        "action_required",
        "expected_response",
        "metrics",
        "git_commit",
    }
    assert checkpoint.sections["action_required"].startswith("The test plan: one bullet")
    assert checkpoint.sections["git_commit"] == "none"


def test_front_matter_sections_come_from_the_body(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, "---\n# a: comment\nfeature: x\n---\n## Plan\n- a test\n")
    assert dict(checkpoint.sections) == {"plan": "- a test"}


def test_key_value_checkpoints_have_no_sections(tmp_path: Path) -> None:
    assert dict(parse(tmp_path, "STATUS=complete\n## Plan=x\n").sections) == {}


def test_plain_text_is_plain_with_the_whole_text_as_body(tmp_path: Path) -> None:
    text = "Done. The tests are written.\n\nNothing else to say.\n"
    checkpoint = parse(tmp_path, text)
    assert checkpoint.format is CheckpointFormat.PLAIN
    assert dict(checkpoint.fields) == {}
    assert checkpoint.body == text
    assert checkpoint.size == len(text)
    assert checkpoint.path == tmp_path / "003-tests-complete.md"


def test_body_is_the_whole_text_of_a_header_block(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, UPSTREAM_HEADER_BLOCK)
    assert checkpoint.body == UPSTREAM_HEADER_BLOCK


@pytest.mark.parametrize(
    "text",
    [
        "Quality score: 8/10\n",
        "Quality Score: 8/10\n",
        "**Quality score: 8/10**\n",
        "- Quality score: 8 / 10\n",
        "**Quality Score:** 8/10\n",
        "## Quality Score\nI give it a score 8/10 overall.\n",
        "## Quality Score\n\n8/10\n",
    ],
)
def test_quality_score_variants(tmp_path: Path, text: str) -> None:
    assert parse(tmp_path, text, "007-verify-complete.md").fields["quality_score"] == "8"


def test_upstream_bold_verdict_lines_are_parsed(tmp_path: Path) -> None:
    text = "## Final Assessment\n**Feature ready for merge: YES**\n**Quality score: 9.5/10**\n"
    fields = parse(tmp_path, text, "007-verify-complete.md").fields
    assert fields["ready_for_merge"] == "YES"
    assert fields["quality_score"] == "9.5"


def test_metrics_section_is_parsed(tmp_path: Path) -> None:
    text = (
        "## Metrics\n- Tests written: 18\n- Passing: 0/18\n- Coverage: 85%\n## Notes\n- Tests: 3\n"
    )
    fields = parse(tmp_path, text).fields
    assert fields["tests_written"] == "18"
    assert fields["passing"] == "0/18"
    assert fields["coverage"] == "85"
    assert "tests" not in fields  # plain lines outside ## Metrics are not fields


def test_git_commit_is_the_first_non_empty_line_of_its_section(tmp_path: Path) -> None:
    text = "## Git Commit\n\n`e306184` test: add failing tests\nsecond line\n"
    assert parse(tmp_path, text).fields["git_commit"] == "e306184 test: add failing tests"


def test_git_commit_inside_a_code_fence(tmp_path: Path) -> None:
    text = "## Git Commit\n```\nabc1234\n```\n"
    assert parse(tmp_path, text).fields["git_commit"] == "abc1234"


def test_blockers_and_status_are_parsed(tmp_path: Path) -> None:
    text = "**From:** Tester\n**Status:** blocked\n## Blockers\n- The plan is missing\n- other\n"
    fields = parse(tmp_path, text).fields
    assert fields["status"] == "blocked"
    assert fields["blockers"] == "The plan is missing"


def test_byte_order_mark_is_ignored_for_detection(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, "\ufeffSTATUS=complete\n")
    assert checkpoint.format is CheckpointFormat.KEY_VALUE


# --------------------------------------------------------------------------------------------
# Parsing: hostile files never make it raise
# --------------------------------------------------------------------------------------------


def test_symlink_is_not_followed(tmp_path: Path) -> None:
    secret = write(tmp_path, "secret.txt", "**Feature:** hello-api\n")
    link = tmp_path / "003-tests-complete.md"
    link.symlink_to(secret)
    checkpoint = parse_checkpoint(link)
    assert checkpoint.format is CheckpointFormat.PLAIN
    assert checkpoint.body == ""
    assert dict(checkpoint.fields) == {}
    assert checkpoint.size == os.lstat(link).st_size


def test_dangling_symlink_gives_a_checkpoint(tmp_path: Path) -> None:
    link = tmp_path / "003-tests-complete.md"
    link.symlink_to(tmp_path / "nowhere")
    assert parse_checkpoint(link).body == ""


def test_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "003-tests-complete.md"
    os.mkfifo(fifo)
    checkpoint = parse_checkpoint(fifo)
    assert checkpoint.format is CheckpointFormat.PLAIN
    assert checkpoint.body == ""


def test_directory_gives_a_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "003-tests-complete.md"
    folder.mkdir()
    checkpoint = parse_checkpoint(folder)
    assert checkpoint.body == ""
    assert checkpoint.name == "003-tests-complete.md"


def test_oversize_file_is_cut_at_the_limit(tmp_path: Path) -> None:
    size = MAX_CHECKPOINT_BYTES + 10
    checkpoint = parse(tmp_path, "**Feature:** hello-api\n" + "x" * (size - 23))
    assert checkpoint.size == size
    assert len(checkpoint.body) == MAX_CHECKPOINT_BYTES
    assert checkpoint.fields["feature"] == "hello-api"


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, b"**Feature:** hello\xff\xfe-api\n")
    assert "\ufffd" in checkpoint.body
    assert checkpoint.format is CheckpointFormat.HEADER_BLOCK


def test_binary_garbage_is_plain(tmp_path: Path) -> None:
    checkpoint = parse(tmp_path, bytes(range(256)) * 4)
    assert checkpoint.format is CheckpointFormat.PLAIN


def test_missing_file_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        parse_checkpoint(tmp_path / "003-tests-complete.md")
