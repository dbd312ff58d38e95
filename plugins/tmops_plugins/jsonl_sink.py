"""The ``jsonl`` sink: one JSON object per line in a file of mode 0600, rotated by size.

Options: ``path`` (required; ``~`` expanded, relative paths resolved against the working
directory), ``max_bytes`` (default 10 MiB) and ``backups`` (rotated files kept, default 3).
The file is never opened through a symlink, so a planted link cannot redirect events elsewhere.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tmops_hookspecs import ConfigError, Event, SinkSpec, hookimpl

from ._options import check_keys, get

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 3
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


class JsonlSink:
    """Appends events to ``path``; past ``max_bytes`` it shifts ``path.1 .. path.N`` along."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._backups = backups
        self._lock = threading.Lock()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        # An existing file keeps its mode on open; events may name private work, so tighten it.
        os.fchmod(fd, 0o600)
        return fd

    def emit(self, event: Event) -> None:
        line = (json.dumps(event.to_dict(), default=str, sort_keys=True) + "\n").encode()
        with self._lock:
            if self._size and self._size + len(line) > self._max_bytes:
                self._rotate()
            os.write(self._fd, line)
            self._size += len(line)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self._backups > 0:
            for index in range(self._backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _make_jsonl(options: Mapping[str, Any]) -> JsonlSink:
    check_keys("jsonl", options, {"path", "max_bytes", "backups"})
    raw_path = get("jsonl", options, "path", str, "")
    if not raw_path:
        raise ConfigError(
            "the 'jsonl' sink needs a 'path'",
            hint="set telemetry.outputs.jsonl.path, e.g. .tmops/logs/events.jsonl",
        )
    max_bytes = get("jsonl", options, "max_bytes", int, DEFAULT_MAX_BYTES)
    backups = get("jsonl", options, "backups", int, DEFAULT_BACKUPS)
    if max_bytes < 1024 or backups < 0:
        raise ConfigError("the 'jsonl' sink needs max_bytes >= 1024 and backups >= 0")
    path = Path(raw_path).expanduser().absolute()
    try:
        return JsonlSink(path, max_bytes=max_bytes, backups=backups)
    except OSError as exc:
        raise ConfigError(
            f"the 'jsonl' sink cannot open {path}: {exc.strerror}",
            hint="point telemetry.outputs.jsonl.path at a writable file that is not a symlink",
        ) from exc


@hookimpl
def tmops_register_sinks() -> Iterable[SinkSpec]:
    return [SinkSpec(name="jsonl", factory=_make_jsonl, description="events as JSON lines, 0600")]
