"""Telemetry: the event bus that fans events out to the configured sinks, and logging setup.

A sink that raises is reported once (with its name) and never stops the caller: telemetry must
not break a workflow. Logs go to stderr only, because stdout carries the MCP protocol.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

import tmops_core
from tmops_core.config import Config
from tmops_core.log import logger, when_loaded
from tmops_core.plugins import Plugins, Registered
from tmops_core.secrets import redact_data, redact_text

if TYPE_CHECKING:
    from loguru import Logger

from tmops_hookspecs import ConfigError, Event, EventMetadata, Sink, SinkSpec, TmopsError

__all__ = [
    "EventBus",
    "SelectedSink",
    "build_event_bus",
    "configure_logging",
    "new_correlation_id",
    "select_sinks",
    "start_sinks",
]

#: The seed's ``telemetry.outputs.file: PATH`` names the jsonl sink writing to PATH.
_FILE_ALIAS = ("file", "jsonl")


def new_correlation_id() -> str:
    """A fresh id tying together the events of one operation or run."""
    return str(uuid.uuid4())


def configure_logging(level: str = "info", *, debug: bool = False) -> None:
    """Send loguru output to stderr only, at ``level`` (``debug`` forces DEBUG), secrets
    redacted (a message or a traceback may quote a URL with its password, or a token); from
    the first message on (a command that logs nothing never imports loguru)."""

    def redacting_sink(message: str) -> None:
        sys.stderr.write(redact_text(str(message)))  # the stderr of the moment, as print's
        sys.stderr.flush()

    def configure(real: Logger) -> None:
        real.remove()
        real.add(
            redacting_sink,
            colorize=sys.stderr.isatty(),
            level="DEBUG" if debug else level.upper(),
            format="<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}",
            backtrace=debug,
            diagnose=False,  # diagnose prints local variables, which may hold secrets
        )

    when_loaded(configure)


class EventBus:
    """Builds :class:`Event` records and hands each to every sink, containing sink failures."""

    def __init__(
        self,
        sinks: Iterable[tuple[str, Sink]] = (),
        *,
        workspace: str = "default",
        metadata: EventMetadata | None = None,
    ) -> None:
        self._sinks = list(sinks)
        self._workspace = workspace
        self._metadata = metadata or EventMetadata(version=tmops_core.__version__)
        self._failed: set[str] = set()
        self._lock = threading.Lock()

    @property
    def sink_names(self) -> list[str]:
        return [name for name, _ in self._sinks]

    def emit(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        feature: str | None = None,
        correlation_id: str | None = None,
    ) -> Event:
        """Build an event with this bus's workspace and metadata, publish it, and return it."""
        event = Event(
            event_type=event_type,
            data=redact_data(data or {}),  # sinks and the store keep no secret
            feature=feature,
            workspace=self._workspace,
            correlation_id=correlation_id or new_correlation_id(),
            metadata=self._metadata,
        )
        self.publish(event)
        return event

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every sink; a failing sink is reported once and skipped."""
        for name, sink in self._sinks:
            try:
                sink.emit(event)
            except Exception as exc:
                self._report(name, "emit", exc)

    def close(self) -> None:
        for name, sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:
                self._report(name, "close", exc)

    def _report(self, name: str, action: str, exc: Exception) -> None:
        with self._lock:
            if name in self._failed:
                return
            self._failed.add(name)
        logger.warning(
            "telemetry sink {} failed to {}: {}: {} (further failures of it are not reported)",
            name,
            action,
            type(exc).__name__,
            exc,
        )


@attrs.frozen
class SelectedSink:
    """A sink named in ``telemetry.outputs``: its config path, registration and options."""

    name: str
    path: str
    registered: Registered[SinkSpec]
    options: dict[str, Any]


def select_sinks(config: Config, plugins: Plugins) -> tuple[list[SelectedSink], list[str]]:
    """The enabled sinks of ``telemetry.outputs`` and every problem found naming them."""
    registered = plugins.sinks()
    selected: list[SelectedSink] = []
    problems: list[str] = []
    for key, value in config.telemetry.outputs.items():
        path = f"$.telemetry.outputs.{key}"
        name, options = key, None
        if key == _FILE_ALIAS[0]:
            name = _FILE_ALIAS[1]
            if isinstance(value, str):
                options = {"path": value}
            elif value not in (None, False):
                problems.append(f"expected the path of the JSONL event file @ {path}")
        elif value is True:
            options = {}
        elif isinstance(value, Mapping):
            options = dict(value)
        elif value not in (None, False):
            problems.append(f"expected true, false or a mapping of sink options @ {path}")
        if options is None:
            continue
        entry = registered.get(name)
        if entry is None:
            known = ", ".join(sorted(registered)) or "none"
            problems.append(f"no sink named {name!r} is registered (known: {known}) @ {path}")
            continue
        selected.append(SelectedSink(name, path, entry, options))
    return selected, problems


def start_sinks(config: Config, plugins: Plugins) -> tuple[list[tuple[str, Sink]], list[str]]:
    """Create the sinks named in ``telemetry.outputs``; the ones that started, and every
    config problem (a sink's refused options with its path).

    A sink factory that raises anything but :class:`TmopsError` is a plugin bug: it is
    reported with the plugin's name and that sink is left out.
    """
    selected, problems = select_sinks(config, plugins)
    sinks: list[tuple[str, Sink]] = []
    for choice in selected:
        try:
            sink = choice.registered.spec.factory(choice.options)
        except TmopsError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            problems.append(f"{exc.message}{hint} @ {choice.path}")
            continue
        except Exception as exc:
            logger.warning(
                "sink {} of plugin {} failed to start and is left out: {}: {}",
                choice.name,
                choice.registered.plugin,
                type(exc).__name__,
                exc,
            )
            continue
        sinks.append((choice.name, sink))
    return sinks, problems


def build_event_bus(config: Config, plugins: Plugins) -> EventBus:
    """Create the sinks named in ``telemetry.outputs``; every config problem is raised at once."""
    metadata = EventMetadata(
        version=tmops_core.__version__, environment=config.telemetry.environment
    )
    workspace = config.server.workspace_id
    if not config.telemetry.enabled:
        return EventBus((), workspace=workspace, metadata=metadata)
    sinks, problems = start_sinks(config, plugins)
    if problems:
        for _, sink in sinks:
            sink.close()
        raise ConfigError("telemetry sinks could not be set up:", problems)
    return EventBus(sinks, workspace=workspace, metadata=metadata)
