"""tmops_core.checkpoints: watching the checkpoint folder, natively (inotify) and by polling."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from watchdog.events import FileMovedEvent, FileSystemEvent

from tmops_core.checkpoints import watch as checkpoints
from tmops_core.checkpoints.watch import CheckpointWatcher
from tmops_hookspecs import CheckpointError

TIMEOUT_S = 5.0


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
