"""The ``console`` sink: one human-readable line per event on stderr (stdout carries MCP)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from tmops_hookspecs import Event, SinkSpec, hookimpl

from ._options import check_keys, get


class ConsoleSink:
    """Writes ``time event_type feature key=value ...`` lines, or JSON lines with ``json: true``."""

    def __init__(self, stream: TextIO, *, as_json: bool = False) -> None:
        self._stream = stream
        self._as_json = as_json

    def emit(self, event: Event) -> None:
        if self._as_json:
            line = json.dumps(event.to_dict(), default=str, sort_keys=True)
        else:
            details = " ".join(f"{key}={value}" for key, value in sorted(event.data.items()))
            feature = f" [{event.feature}]" if event.feature else ""
            line = f"{event.timestamp:%H:%M:%S} {event.event_type}{feature} {details}".rstrip()
        self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


def _make_console(options: Mapping[str, Any]) -> ConsoleSink:
    check_keys("console", options, {"json"})
    return ConsoleSink(sys.stderr, as_json=get("console", options, "json", bool, False))


@hookimpl
def tmops_register_sinks() -> Iterable[SinkSpec]:
    return [SinkSpec(name="console", factory=_make_console, description="events on stderr")]
