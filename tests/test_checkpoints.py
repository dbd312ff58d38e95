"""tmops_core.checkpoints: parsing checkpoint files, watching the folder, running validators."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from watchdog.events import FileMovedEvent, FileSystemEvent

from tmops_core import checkpoints
from tmops_core.checkpoints import (
    MAX_CHECKPOINT_BYTES,
    CheckpointWatcher,
    parse_checkpoint,
    run_validators,
)
from tmops_core.plugins import Registered
from tmops_hookspecs import (
    Checkpoint,
    CheckpointError,
    CheckpointFormat,
    FeatureContext,
    Problem,
    Severity,
    ValidatorSpec,
)

from .conftest import REPO

INSTRUCTIONS = REPO / "plugins" / "tmops_plugins" / "instructions"
TIMEOUT_S = 5.0

# The header-block example of the TeamOps v6 reference, verbatim.
UPSTREAM_HEADER_BLOCK = """\
# Checkpoint: 004-impl-trigger.md
**From:** Orchestrator
**To:** Implementer
**Timestamp:** 2025-08-20 09:34:30
**Feature:** hello-api
**Run:** initial
## Action Required ...
## Expected Response ...
"""


def instructions_block(role: str) -> str:
    """The checkpoint example an agent of ``role`` is told to write, as in its instructions."""
    text = (INSTRUCTIONS / f"{role}.md").read_text()
    section = text.split("## Your checkpoint", 1)[1]
    match = re.search(r"```\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def parse(tmp_path: Path, text: str | bytes, name: str = "003-tests-complete.md") -> Checkpoint:
    return parse_checkpoint(write(tmp_path, name, text))


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
def test_bad_front_matter_is_treated_as_plain(tmp_path: Path, front: str) -> None:
    checkpoint = parse(tmp_path, front + "some text\n")
    assert checkpoint.format is CheckpointFormat.PLAIN
    assert dict(checkpoint.fields) == {}


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


# --------------------------------------------------------------------------------------------
# Watching
# --------------------------------------------------------------------------------------------


class Recorder:
    """A thread-safe on_checkpoint callback that remembers every path it was given."""

    def __init__(self, fail_first: bool = False) -> None:
        self.paths: list[Path] = []
        self._fail_next = fail_first
        self._condition = threading.Condition()

    def __call__(self, path: Path) -> None:
        with self._condition:
            self.paths.append(path)
            self._condition.notify_all()
            if self._fail_next:
                self._fail_next = False
                raise RuntimeError("the callback failed on purpose")

    def wait_for(self, name: str) -> bool:
        with self._condition:
            return self._condition.wait_for(
                lambda: any(path.name == name for path in self.paths), TIMEOUT_S
            )

    def names(self) -> set[str]:
        with self._condition:
            return {path.name for path in self.paths}


def write_in_place(path: Path, text: str = "**Feature:** hello-api\n") -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_atomically(path: Path, text: str = "**Feature:** hello-api\n") -> None:
    temp = path.with_name(f".{path.name}.tmp")
    write_in_place(temp, text)
    os.rename(temp, path)


def flush(folder: Path, recorder: Recorder) -> None:
    """Wait until everything that happened before this call has reached the callback.

    The second marker is written only after the first was reported, so the snapshot or the
    inotify event that reports it comes strictly after every earlier one, on the same queue.
    """
    for name in ("900-flush-one.md", "901-flush-two.md"):
        write_in_place(folder / name)
        assert recorder.wait_for(name)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints"
    path.mkdir()
    return path.resolve()


MODES = ["inotify", "polling"]
StartWatcher = Callable[..., CheckpointWatcher]


@pytest.fixture
def start_watcher(folder: Path) -> Iterator[StartWatcher]:
    started: list[CheckpointWatcher] = []

    def start(mode: str, callback: Callable[[Path], None]) -> CheckpointWatcher:
        if mode == "inotify" and not sys.platform.startswith("linux"):
            pytest.skip("inotify is Linux only")
        watcher = CheckpointWatcher(folder, callback, polling=mode == "polling")
        watcher.start()
        started.append(watcher)
        assert watcher.mode == mode
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


@pytest.mark.parametrize("mode", MODES)
def test_file_written_in_place_is_reported_with_its_path(
    folder: Path, start_watcher: StartWatcher, mode: str
) -> None:
    recorder = Recorder()
    start_watcher(mode, recorder)
    write_in_place(folder / "003-tests-complete.md")
    assert recorder.wait_for("003-tests-complete.md")
    assert set(recorder.paths) == {folder / "003-tests-complete.md"}


@pytest.mark.parametrize("mode", MODES)
def test_atomic_rename_is_reported_with_the_final_name(
    folder: Path, start_watcher: StartWatcher, mode: str
) -> None:
    recorder = Recorder()
    start_watcher(mode, recorder)
    write_atomically(folder / "007-verify-complete.md")
    assert recorder.wait_for("007-verify-complete.md")
    flush(folder, recorder)
    assert recorder.names() == {"007-verify-complete.md", "900-flush-one.md", "901-flush-two.md"}


@pytest.mark.parametrize("mode", MODES)
def test_a_rename_is_reported_as_a_move_event(
    folder: Path, start_watcher: StartWatcher, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The temp file exists before start(), so even the polling observer's first snapshot holds
    # it and the rename can only reach the watcher as a moved event.
    moves: list[FileSystemEvent] = []
    on_event = CheckpointWatcher._on_event

    def spy(self: CheckpointWatcher, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent):
            moves.append(event)
        on_event(self, event)

    monkeypatch.setattr(CheckpointWatcher, "_on_event", spy)
    temp = folder / "007-verify-complete.md.tmp"
    write_in_place(temp)
    recorder = Recorder()
    start_watcher(mode, recorder)
    os.rename(temp, folder / "007-verify-complete.md")
    assert recorder.wait_for("007-verify-complete.md")
    assert [os.fsdecode(event.dest_path) for event in moves] == [
        str(folder / "007-verify-complete.md")
    ]


@pytest.mark.parametrize("mode", MODES)
def test_a_file_renamed_in_from_another_folder_is_reported(
    folder: Path, start_watcher: StartWatcher, mode: str, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write_in_place(outside / "003-tests-complete.md")
    recorder = Recorder()
    start_watcher(mode, recorder)
    os.rename(outside / "003-tests-complete.md", folder / "003-tests-complete.md")
    assert recorder.wait_for("003-tests-complete.md")


@pytest.mark.parametrize("mode", MODES)
def test_temp_and_other_names_never_trigger(
    folder: Path, start_watcher: StartWatcher, mode: str
) -> None:
    recorder = Recorder()
    start_watcher(mode, recorder)
    for name in (".003-tests-complete.md.tmp", "003-tests-complete.md.tmp", "x.tmp", "notes.txt"):
        write_in_place(folder / name)
    (folder / "sub").mkdir()
    write_in_place(folder / "sub" / "005-impl-complete.md")  # not recursive
    flush(folder, recorder)
    assert recorder.names() == {"900-flush-one.md", "901-flush-two.md"}


@pytest.mark.parametrize("mode", MODES)
def test_checkpoints_present_before_start_are_reported(
    folder: Path, start_watcher: StartWatcher, mode: str
) -> None:
    write_in_place(folder / "001-discovery-trigger.md")
    write_in_place(folder / "notes.txt")
    (folder / "002-acceptance-draft.md").mkdir()  # a directory is not a checkpoint
    recorder = Recorder()
    start_watcher(mode, recorder)
    assert recorder.wait_for("001-discovery-trigger.md")
    flush(folder, recorder)
    assert recorder.names() == {"001-discovery-trigger.md", "900-flush-one.md", "901-flush-two.md"}


@pytest.mark.parametrize("mode", MODES)
def test_a_raising_callback_does_not_stop_later_notifications(
    folder: Path, start_watcher: StartWatcher, mode: str
) -> None:
    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(str(message)), level="ERROR")
    try:
        recorder = Recorder(fail_first=True)
        start_watcher(mode, recorder)
        write_in_place(folder / "003-tests-complete.md")
        assert recorder.wait_for("003-tests-complete.md")
        write_in_place(folder / "005-impl-complete.md")
        assert recorder.wait_for("005-impl-complete.md")
    finally:
        logger.remove(sink)
    assert any("the callback failed on purpose" in message for message in messages)


def test_native_failure_falls_back_to_polling(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(checkpoints, "_native_observer", broken)
    recorder = Recorder()
    with CheckpointWatcher(folder, recorder) as watcher:
        assert watcher.mode == "polling"
        write_in_place(folder / "003-tests-complete.md")
        assert recorder.wait_for("003-tests-complete.md")


def test_watching_something_that_is_not_a_folder_is_refused(tmp_path: Path) -> None:
    watcher = CheckpointWatcher(tmp_path / "missing", Recorder())
    with pytest.raises(CheckpointError, match="not a directory"):
        watcher.start()


def test_stop_twice_is_harmless(folder: Path) -> None:
    watcher = CheckpointWatcher(folder, Recorder(), polling=True)
    watcher.start()
    watcher.stop()
    watcher.stop()


def test_stop_from_inside_the_callback_does_not_deadlock(folder: Path) -> None:
    stopped = threading.Event()
    watcher: CheckpointWatcher

    def callback(path: Path) -> None:
        watcher.stop()
        stopped.set()

    watcher = CheckpointWatcher(folder, callback, polling=True)
    watcher.start()
    write_in_place(folder / "003-tests-complete.md")
    assert stopped.wait(TIMEOUT_S)


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
