"""Checkpoint files: parsing them, watching the checkpoint folder, and running the validators.

Owns reading a checkpoint safely (never through a symlink, never blocking on a FIFO, at most
1 MiB), understanding both upstream body formats (the Markdown header block and KEY=VALUE lines)
plus YAML front matter, noticing a checkpoint as soon as its writer is done with it, and running
every registered validator on it with failures contained. It never writes checkpoints and never
calls git.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import attrs
import yaml
from loguru import logger
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

from tmops_hookspecs import (
    CHECKPOINT_NAME_PATTERN,
    Checkpoint,
    CheckpointError,
    CheckpointFormat,
    FeatureContext,
    Problem,
    ValidatorSpec,
)

from .plugins import Registered

__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "CheckpointWatcher",
    "parse_checkpoint",
    "run_validators",
]

MAX_CHECKPOINT_BYTES = 1024 * 1024

# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*\r?$\n?", re.M | re.S)
_KEY_VALUE_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)")
_KEY_VALUE_FIRST = re.compile(r"[A-Z][A-Z0-9_]*=")
_TITLE = re.compile(r"#[ \t]*Checkpoint[ \t]*:[ \t]*(.*?)[ \t]*", re.I)
_BULLET = r"(?:[-*+][ \t]+)?"
# **Key:** value, **Key**: value and **Key: value** (a whole line in bold)
_BOLD_KEY = re.compile(
    rf"[ \t]*{_BULLET}(?:\*\*([^*:\n]{{1,60}}?):\*\*|\*\*([^*:\n]{{1,60}}?)\*\*[ \t]*:)[ \t]*(.*?)"
)
_BOLD_LINE = re.compile(rf"[ \t]*{_BULLET}\*\*([^*:\n]{{1,60}}?):[ \t]*([^*\n]*?)[ \t]*\*\*[ \t]*")
_PLAIN_KEY = re.compile(rf"[ \t]*{_BULLET}([A-Za-z][A-Za-z0-9 _-]{{0,59}}?)[ \t]*:[ \t]*(.*?)")
_SECTION = re.compile(r"(#{1,2})[ \t]+(.*?)[ \t#]*")
_OUT_OF_TEN = re.compile(r"([0-9]+(?:\.[0-9]+)?|[A-Za-z])[ \t]*/[ \t]*10\b")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)[ \t]*%")
_FENCE = re.compile(r"[ \t]*(?:```|~~~)")

# Plain "Key: value" lines recognised anywhere in a Markdown body, by normalised key.
_ANYWHERE_KEYS = {
    "feature_ready_for_merge": "ready_for_merge",
    "ready_for_merge": "ready_for_merge",
    "quality_score": "quality_score",
}
# Sections whose first non-empty line is a field.
_FIRST_LINE_SECTIONS = {
    "git_commit": "git_commit",
    "blockers": "blockers",
    "gate_status": "gate_status",
}


def parse_checkpoint(path: Path) -> Checkpoint:
    """Read and parse the checkpoint at ``path``; the content never makes this raise.

    A symlink, FIFO, directory or other non-regular file, or one that cannot be opened, gives a
    :class:`~tmops_hookspecs.Checkpoint` with format ``PLAIN``, an empty body and the size from
    ``lstat``, so that validators can refuse it with a reason. At most
    :data:`MAX_CHECKPOINT_BYTES` are parsed; ``size`` is always the size on disk.

    :raises OSError: only when ``path`` itself cannot be looked at (it does not exist).
    """
    info = os.lstat(path)
    empty = Checkpoint(name=path.name, path=path, format=CheckpointFormat.PLAIN, size=info.st_size)
    if not stat.S_ISREG(info.st_mode):
        return empty
    try:
        data, size = _read_regular(path)
    except OSError as exc:
        logger.debug("cannot read checkpoint {}: {}", path, exc)
        return empty
    if data is None:
        return empty
    text = data[:MAX_CHECKPOINT_BYTES].decode("utf-8", errors="replace")
    checkpoint_format, fields = _parse_text(text)
    return Checkpoint(
        name=path.name, path=path, format=checkpoint_format, fields=fields, body=text, size=size
    )


def _read_regular(path: Path) -> tuple[bytes | None, int]:
    """The first ``MAX_CHECKPOINT_BYTES + 1`` bytes of a regular file, opened without following
    a symlink or blocking on a FIFO; ``None`` if what was opened is not a regular file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped for something else since the lstat
            return None, info.st_size
        return handle.read(MAX_CHECKPOINT_BYTES + 1), info.st_size


def _parse_text(text: str) -> tuple[CheckpointFormat, dict[str, str]]:
    text = text.removeprefix("\ufeff")
    front = _FRONT_MATTER.match(text)
    if front is not None:
        header = _front_matter_fields(front.group(1))
        if header is None:  # not a YAML mapping after all
            return CheckpointFormat.PLAIN, _markdown_fields(text.splitlines())[0]
        fields = _markdown_fields(text[front.end() :].splitlines())[0]
        fields.update(header)
        return CheckpointFormat.FRONT_MATTER, fields
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    if _KEY_VALUE_FIRST.match(first):
        return CheckpointFormat.KEY_VALUE, _key_value_fields(lines)
    fields, header_block = _markdown_fields(lines)
    if header_block:
        return CheckpointFormat.HEADER_BLOCK, fields
    return CheckpointFormat.PLAIN, fields


def _normalize_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key.strip().lower()).strip("_")


def _normalize_value(key: str, value: str) -> str:
    value = value.strip()
    if key == "quality_score":
        match = _OUT_OF_TEN.match(value)
        if match:
            return match.group(1)
    elif key == "coverage":
        match = _PERCENT.fullmatch(value) or _PERCENT.match(value)
        if match:
            return match.group(1)
    return value


def _set(fields: dict[str, str], key: str, value: str) -> None:
    """Record ``key`` unless an earlier line already did: the header comes first and wins."""
    if key and key not in fields:
        fields[key] = _normalize_value(key, value)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (billion-laughs bombs), as tmops_core.config does."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases are not allowed in a checkpoint")
        return super().compose_node(parent, index)


def _front_matter_fields(source: str) -> dict[str, str] | None:
    """Top-level scalar entries of a YAML mapping, as written (``YES`` stays ``YES``).

    The node tree is read instead of constructed objects so that YAML 1.1 does not turn
    ``YES`` into ``True`` or ``08`` into a number; nothing is ever constructed.
    """
    try:
        node = yaml.compose(
            source, Loader=_NoAliasLoader
        )  # a SafeLoader: composes, never constructs
    except (yaml.YAMLError, RecursionError):
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    fields: dict[str, str] = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and isinstance(value_node, yaml.ScalarNode):
            key = _normalize_key(str(key_node.value))
            if key:
                fields[key] = _normalize_value(key, str(value_node.value))
    return fields


def _key_value_fields(lines: Iterable[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in lines:
        match = _KEY_VALUE_LINE.fullmatch(line.strip())
        if match is None:
            continue
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        _set(fields, _normalize_key(match.group(1)), value)
    return fields


def _markdown_fields(lines: Iterable[str]) -> tuple[dict[str, str], bool]:
    """Fields of a Markdown body, and whether it has a header block (title or bold keys)."""
    fields: dict[str, str] = {}
    header_block = False
    section = ""
    section_first_line_done = False
    for raw in lines:
        line = raw.rstrip()
        title = _TITLE.fullmatch(line)
        if title:
            _set(fields, "checkpoint", title.group(1))
            header_block = True
            section = ""
            continue
        heading = _SECTION.fullmatch(line)
        if heading:
            section = _normalize_key(heading.group(2))
            section_first_line_done = False
            continue
        if not line.strip() or _FENCE.match(line):
            continue
        if section in _FIRST_LINE_SECTIONS and not section_first_line_done:
            section_first_line_done = True
            value = re.sub(rf"\A{_BULLET}", "", line.strip()).replace("`", "").strip()
            _set(fields, _FIRST_LINE_SECTIONS[section], value)
            continue
        key, value, bold = _key_and_value(line)
        if key:
            header_block = header_block or bold
            if section == "metrics":
                _set(fields, key, value)
            elif key in _ANYWHERE_KEYS:
                _set(fields, _ANYWHERE_KEYS[key], value)
            elif bold:
                _set(fields, key, value)
        if section == "quality_score" and "quality_score" not in fields:
            score = _OUT_OF_TEN.search(line)
            if score and score.group(1)[0].isdigit():
                _set(fields, "quality_score", score.group(1))
    return fields, header_block


def _key_and_value(line: str) -> tuple[str, str, bool]:
    """``(normalised key, value, written in bold)`` of a ``Key: value`` line, else ``""``."""
    for pattern in (_BOLD_KEY, _BOLD_LINE):
        match = pattern.fullmatch(line)
        if match:
            groups = [g for g in match.groups() if g is not None]
            return _normalize_key(groups[0]), groups[-1], True
    match = _PLAIN_KEY.fullmatch(line)
    if match:
        return _normalize_key(match.group(1)), match.group(2).strip("*").strip(), False
    return "", "", False


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


# --------------------------------------------------------------------------------------------
# Validators
# --------------------------------------------------------------------------------------------


def run_validators(
    checkpoint: Checkpoint,
    context: FeatureContext,
    validators: Mapping[str, Registered[ValidatorSpec]],
) -> list[Problem]:
    """Run every validator on ``checkpoint`` (in name order) and collect their problems.

    Each problem is stamped with the validator's name and the checkpoint's path where it left
    them empty. A validator that raises, or returns something other than problems, becomes an
    ERROR problem naming it; it never stops the others.
    """
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
