"""Watching a checkpoint folder: noticing a checkpoint as soon as its writer is done with it
(inotify, or polling where that is missing). It never reads a checkpoint's content.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from tmops_core.log import logger
from tmops_hookspecs import (
    CHECKPOINT_NAME_PATTERN,
    CheckpointError,
)

__all__ = ["Arrivals", "CheckpointWatcher"]

# --------------------------------------------------------------------------------------------
# Watching
# --------------------------------------------------------------------------------------------


def _native_observer() -> tuple[BaseObserver, str]:
    """The platform's native observer and its mode name (``inotify`` on Linux)."""
    from watchdog.observers import Observer

    try:
        from watchdog.observers.inotify import InotifyObserver
    except ImportError:  # pragma: no cover - not Linux
        return Observer(), "native"
    if Observer is InotifyObserver:
        # Full events: a file renamed INTO the folder from elsewhere arrives as a move (with
        # its destination) rather than as a bare creation.
        return InotifyObserver(generate_full_events=True), "inotify"
    return Observer(), "native"  # pragma: no cover - not Linux


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: CheckpointWatcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        self._watcher._on_event(event)


class CheckpointWatcher:
    """Calls ``on_checkpoint(path)`` when a checkpoint file in ``folder`` is complete.

    Complete means: closed after writing (inotify ``IN_CLOSE_WRITE``), or renamed into the
    folder under its final name (the atomic temp-file-and-rename write). Only names matching
    :data:`~tmops_hookspecs.CHECKPOINT_NAME_PATTERN` count, so ``.003-x.md.tmp`` or
    ``notes.txt`` never do. In polling mode, which sees no close events, a created or modified
    file counts too (a half-written file may then be reported before the complete one).
    Checkpoints already present are reported by :meth:`start`. A notification for a file whose
    inode, size and times are unchanged since the last one is dropped; any others, including
    duplicates, are the receiver's to handle. Callbacks run one at a time, on the watcher's
    thread (or, for files already present, on the thread calling :meth:`start`); one that
    raises is logged and the watching goes on.
    """

    def __init__(
        self,
        folder: Path,
        on_checkpoint: Callable[[Path], None],
        *,
        polling: bool = False,
        poll_interval_s: float = 0.05,
    ) -> None:
        self._folder = Path(os.path.realpath(folder))
        self._on_checkpoint = on_checkpoint
        self._polling = polling
        self._poll_interval_s = poll_interval_s
        self._observer: BaseObserver | None = None
        self._mode = "polling" if polling else "inotify"
        self._lock = threading.RLock()
        self._reported: dict[str, tuple[int, int, int, int]] = {}

    @property
    def folder(self) -> Path:
        """The watched folder, resolved."""
        return self._folder

    @property
    def mode(self) -> str:
        """``inotify`` or ``polling`` (``native`` on platforms without inotify)."""
        return self._mode

    def start(self) -> None:
        """Start watching, then report the checkpoints already in the folder."""
        if self._observer is not None:
            raise RuntimeError("this CheckpointWatcher is already started")
        if not stat.S_ISDIR(_lstat_mode(self._folder)):
            raise CheckpointError(f"cannot watch {self._folder}: it is not a directory")
        self._reported.clear()
        observer = None
        if not self._polling:
            observer = self._start_native()
        if observer is None:
            observer = PollingObserverVFS(
                stat=os.lstat, listdir=os.scandir, polling_interval=self._poll_interval_s
            )
            observer.schedule(_Handler(self), str(self._folder), recursive=False)
            observer.start()
            self._mode = "polling"
        self._observer = observer
        self._report_existing()

    def _start_native(self) -> BaseObserver | None:
        observer = None
        try:
            observer, mode = _native_observer()
            observer.schedule(
                _Handler(self),
                str(self._folder),
                recursive=False,
                event_filter=[FileClosedEvent, FileMovedEvent],
            )
            observer.start()
        except Exception as exc:
            logger.warning(
                "native file watching of {} failed ({}: {}); polling every {} s instead",
                self._folder,
                type(exc).__name__,
                exc,
                self._poll_interval_s,
            )
            if observer is not None:
                with contextlib.suppress(Exception):
                    observer.stop()
            return None
        self._mode = mode
        return observer

    def stop(self) -> None:
        """Stop watching; safe to call twice, and from inside a callback."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        observer.stop()
        if threading.current_thread() is not observer and observer.is_alive():
            observer.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _report_existing(self) -> None:
        try:
            with os.scandir(self._folder) as entries:
                names = sorted(
                    entry.name
                    for entry in entries
                    if CHECKPOINT_NAME_PATTERN.fullmatch(entry.name)
                    and not entry.is_dir(follow_symlinks=False)
                )
        except OSError as exc:
            logger.warning("cannot list checkpoints in {}: {}", self._folder, exc)
            return
        for name in names:
            self._consider(os.path.join(self._folder, name))

    def _on_event(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory:
                return
            if isinstance(event, FileMovedEvent):
                candidate = event.dest_path
            elif isinstance(event, FileClosedEvent) or (
                self._mode == "polling" and isinstance(event, FileCreatedEvent | FileModifiedEvent)
            ):
                candidate = event.src_path
            else:
                return
            if candidate:
                self._consider(os.fsdecode(candidate))
        except Exception as exc:  # never let anything kill the observer thread
            logger.opt(exception=exc).error("checkpoint watcher failed on {}", event)

    def _consider(self, path: str) -> None:
        folder, name = os.path.split(path)
        if folder != str(self._folder) or not CHECKPOINT_NAME_PATTERN.fullmatch(name):
            return
        try:
            info = os.lstat(path)
        except OSError:
            return  # gone again (renamed away or deleted) before we got to it
        signature = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with self._lock:
            if self._reported.get(name) == signature:
                return
            self._reported[name] = signature
            try:
                self._on_checkpoint(Path(path))
            except Exception as exc:
                logger.opt(exception=exc).error(
                    "checkpoint callback failed for {}: {}: {}", path, type(exc).__name__, exc
                )


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


class Arrivals:
    """Checkpoint files seen by a watcher, with the time each was first seen (its callback)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._condition = threading.Condition()
        self._listeners: list[Callable[[], None]] = []

    def __call__(self, path: Path) -> None:
        with self._condition:
            self._seen.setdefault(path.name, time.time())
            self._condition.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` on every arrival from now on; returns the call that stops it."""
        with self._condition:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._condition, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def seen_at(self, name: str) -> float | None:
        with self._condition:
            return self._seen.get(name)

    def forget(self, name: str) -> None:
        with self._condition:
            self._seen.pop(name, None)

    def wait(self, name: str, timeout: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: name in self._seen, timeout)
