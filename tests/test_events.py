"""Telemetry: event records, the event bus, sink set-up from the config, the built-in sinks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import types
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from tmops_core import __version__
from tmops_core.config import Config, parse_config
from tmops_core.events import EventBus, build_event_bus
from tmops_core.plugins import Plugins, create_plugin_manager
from tmops_hookspecs import ConfigError, Event, EventMetadata, Sink, SinkSpec, hookimpl

SinkFactory = Callable[[Mapping[str, Any]], Sink]


class RecordingSink:
    """Keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = False

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed = True


class RaisingSink:
    """Fails on every call."""

    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: Event) -> None:
        self.calls += 1
        raise RuntimeError("disk on fire")

    def close(self) -> None:
        raise OSError("cannot close")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TMOPS_CONFIG", "TMOPS_DISABLE_PLUGINS", "TMOPS_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    """Every loguru message of level WARNING or above while the test runs."""
    messages: list[str] = []
    sink_id = logger.add(lambda message: messages.append(str(message)), level="WARNING")
    try:
        yield messages
    finally:
        logger.remove(sink_id)


@pytest.fixture
def plugins() -> Plugins:
    return create_plugin_manager()


@pytest.fixture
def jsonl_factory(plugins: Plugins) -> SinkFactory:
    return plugins.sinks()["jsonl"].spec.factory


@pytest.fixture
def console_factory(plugins: Plugins) -> SinkFactory:
    return plugins.sinks()["console"].spec.factory


def config_with(telemetry: dict[str, Any], **sections: Any) -> Config:
    return parse_config({"telemetry": telemetry, **sections}, env={})


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_event(index: int = 0) -> Event:
    return Event(event_type="test.event", data={"index": index, "note": "x" * 40}, feature="f")


# --------------------------------------------------------------------------------------------
# Event records
# --------------------------------------------------------------------------------------------


def test_event_carries_every_schema_field() -> None:
    before = datetime.now(UTC)
    event = Event(
        event_type="orchestration.phase.transition",
        data={"phase": "tester"},
        feature="login",
        workspace="team",
        correlation_id="corr-1",
        metadata=EventMetadata(version="1.2.3", environment="ci"),
    )
    after = datetime.now(UTC)

    assert uuid.UUID(event.event_id)
    assert event.event_type == "orchestration.phase.transition"
    assert event.timestamp.utcoffset() == timedelta(0)
    assert before <= event.timestamp <= after
    assert event.feature == "login"
    assert event.workspace == "team"
    assert event.correlation_id == "corr-1"
    assert dict(event.data) == {"phase": "tester"}
    assert event.metadata.service == "tmops"


def test_event_to_dict_is_json_ready_with_iso_utc_timestamp() -> None:
    event = Event(
        event_type="workflow.started",
        data={"n": 1},
        feature="login",
        workspace="team",
        correlation_id="corr-1",
        metadata=EventMetadata(version="1.2.3", environment="ci"),
    )

    data = json.loads(json.dumps(event.to_dict()))

    assert set(data) == {
        "event_id",
        "event_type",
        "timestamp",
        "feature",
        "workspace",
        "correlation_id",
        "data",
        "metadata",
    }
    parsed = datetime.fromisoformat(data["timestamp"])
    assert parsed.utcoffset() == timedelta(0)
    assert parsed == event.timestamp
    assert data["event_id"] == event.event_id
    assert data["data"] == {"n": 1}
    assert data["metadata"] == {"service": "tmops", "version": "1.2.3", "environment": "ci"}


def test_each_event_gets_its_own_id() -> None:
    assert Event(event_type="a.b").event_id != Event(event_type="a.b").event_id


@pytest.mark.parametrize("event_type", ["Bad Type", "nodots", "a..b", ".a.b", "A.b", ""])
def test_invalid_event_type_is_refused(event_type: str) -> None:
    with pytest.raises(ValueError, match="event_type"):
        Event(event_type=event_type)


def test_event_data_is_read_only() -> None:
    event = Event(event_type="a.b", data={"k": 1})

    with pytest.raises(TypeError):
        event.data["k"] = 2  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# EventBus
# --------------------------------------------------------------------------------------------


def test_emit_fans_out_to_every_sink_with_bus_workspace_and_metadata() -> None:
    first, second = RecordingSink(), RecordingSink()
    metadata = EventMetadata(version="9.9", environment="test")
    bus = EventBus([("first", first), ("second", second)], workspace="ws-1", metadata=metadata)

    event = bus.emit("workflow.started", {"k": 1}, feature="feat", correlation_id="cid")

    assert first.events == [event]
    assert second.events == [event]
    assert event.workspace == "ws-1"
    assert event.metadata == metadata
    assert event.feature == "feat"
    assert event.correlation_id == "cid"
    assert dict(event.data) == {"k": 1}
    assert bus.sink_names == ["first", "second"]


def test_emit_without_correlation_id_makes_a_fresh_one() -> None:
    bus = EventBus([("rec", RecordingSink())])

    first = bus.emit("a.b")
    second = bus.emit("a.b")

    assert uuid.UUID(first.correlation_id)
    assert first.correlation_id != second.correlation_id
    assert first.metadata.version == __version__


def test_failing_sink_is_reported_once_and_never_stops_the_others(
    warnings_logged: list[str],
) -> None:
    before, broken, after = RecordingSink(), RaisingSink(), RecordingSink()
    bus = EventBus([("before", before), ("broken", broken), ("after", after)])

    events = [bus.emit("test.event", {"i": i}) for i in range(3)]

    assert before.events == events
    assert after.events == events
    assert broken.calls == 3
    assert len(warnings_logged) == 1
    assert "broken" in warnings_logged[0]
    assert "disk on fire" in warnings_logged[0]


def test_close_closes_every_sink_even_when_one_fails(warnings_logged: list[str]) -> None:
    first, last = RecordingSink(), RecordingSink()
    bus = EventBus([("first", first), ("broken", RaisingSink()), ("last", last)])

    bus.close()

    assert first.closed
    assert last.closed
    assert len(warnings_logged) == 1
    assert "cannot close" in warnings_logged[0]


# --------------------------------------------------------------------------------------------
# build_event_bus
# --------------------------------------------------------------------------------------------


def test_builtin_sinks_are_registered(plugins: Plugins) -> None:
    assert {"console", "jsonl"} <= set(plugins.sinks())


def test_jsonl_output_writes_json_lines(tmp_path: Path, plugins: Plugins) -> None:
    path = tmp_path / "logs" / "events.jsonl"
    config = config_with(
        {"environment": "ci", "outputs": {"jsonl": {"path": str(path)}}},
        server={"workspace_id": "team-7"},
    )

    bus = build_event_bus(config, plugins)
    try:
        first = bus.emit("workflow.started", {"n": 1}, feature="login")
        second = bus.emit("workflow.finished", {"n": 2}, feature="login")
    finally:
        bus.close()

    assert bus.sink_names == ["jsonl"]
    lines = read_lines(path)
    assert [line["event_id"] for line in lines] == [first.event_id, second.event_id]
    assert [line["event_type"] for line in lines] == ["workflow.started", "workflow.finished"]
    assert lines[0]["workspace"] == "team-7"
    assert lines[0]["metadata"]["environment"] == "ci"
    assert lines[1]["data"] == {"n": 2}


def test_seed_file_output_means_the_jsonl_sink(tmp_path: Path, plugins: Plugins) -> None:
    path = tmp_path / "logs" / "tmops.log"
    config = config_with({"outputs": {"file": str(path)}})

    bus = build_event_bus(config, plugins)
    try:
        event = bus.emit("workflow.started")
    finally:
        bus.close()

    assert bus.sink_names == ["jsonl"]
    assert [line["event_id"] for line in read_lines(path)] == [event.event_id]


def test_unknown_sink_name_is_a_config_error_with_its_path(plugins: Plugins) -> None:
    config = config_with({"outputs": {"carrier_pigeon": True}})

    with pytest.raises(ConfigError) as info:
        build_event_bus(config, plugins)

    (problem,) = info.value.problems
    assert problem.endswith("@ $.telemetry.outputs.carrier_pigeon")
    assert "carrier_pigeon" in problem.split(" @ ")[0]


@pytest.mark.parametrize(
    ("options", "mentioned"),
    [
        ({"colour": "red"}, "colour"),
        ({"max_bytes": "5"}, "max_bytes"),
        ({"backups": True}, "backups"),
    ],
)
def test_bad_jsonl_option_is_a_config_error_with_its_path(
    tmp_path: Path, plugins: Plugins, options: dict[str, Any], mentioned: str
) -> None:
    path = tmp_path / "events.jsonl"
    config = config_with({"outputs": {"jsonl": {"path": str(path), **options}}})

    with pytest.raises(ConfigError) as info:
        build_event_bus(config, plugins)

    (problem,) = info.value.problems
    assert problem.endswith(" @ $.telemetry.outputs.jsonl")
    assert mentioned in problem


def test_every_sink_problem_is_reported_at_once(tmp_path: Path, plugins: Plugins) -> None:
    config = config_with(
        {
            "outputs": {
                "nope": True,
                "jsonl": {"path": str(tmp_path / "e.jsonl"), "max_bytes": "5"},
                "console": {"colour": True},
            }
        }
    )

    with pytest.raises(ConfigError) as info:
        build_event_bus(config, plugins)

    assert sorted(p.rpartition(" @ ")[2] for p in info.value.problems) == [
        "$.telemetry.outputs.console",
        "$.telemetry.outputs.jsonl",
        "$.telemetry.outputs.nope",
    ]


def test_telemetry_disabled_means_no_sinks(tmp_path: Path, plugins: Plugins) -> None:
    path = tmp_path / "events.jsonl"
    config = config_with({"enabled": False, "outputs": {"jsonl": {"path": str(path)}}})

    bus = build_event_bus(config, plugins)
    bus.emit("workflow.started")
    bus.close()

    assert bus.sink_names == []
    assert not path.exists()


def test_outputs_set_to_false_are_left_out(tmp_path: Path, plugins: Plugins) -> None:
    config = config_with({"outputs": {"console": False, "file": None}})

    bus = build_event_bus(config, plugins)

    assert bus.sink_names == []


def _boom_factory(options: Mapping[str, Any]) -> Sink:
    raise RuntimeError("boom factory exploded")


@hookimpl
def _register_boom_sink() -> list[SinkSpec]:
    return [SinkSpec(name="boom", factory=_boom_factory)]


def test_sink_whose_factory_crashes_is_left_out_with_a_warning(
    tmp_path: Path, warnings_logged: list[str]
) -> None:
    boom_plugin = types.SimpleNamespace(tmops_register_sinks=_register_boom_sink)
    plugins = create_plugin_manager(extra=[("boom-plugin", boom_plugin)])
    assert "boom" in plugins.sinks()
    path = tmp_path / "events.jsonl"
    config = config_with({"outputs": {"boom": True, "jsonl": {"path": str(path)}}})

    bus = build_event_bus(config, plugins)
    try:
        bus.emit("workflow.started")
    finally:
        bus.close()

    assert bus.sink_names == ["jsonl"]
    assert len(read_lines(path)) == 1
    assert len(warnings_logged) == 1
    assert "boom" in warnings_logged[0]
    assert "boom-plugin" in warnings_logged[0]
    assert "boom factory exploded" in warnings_logged[0]


# --------------------------------------------------------------------------------------------
# jsonl sink
# --------------------------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_jsonl_file_is_created_private(tmp_path: Path, jsonl_factory: SinkFactory) -> None:
    path = tmp_path / "events.jsonl"

    sink = jsonl_factory({"path": str(path)})
    sink.close()

    assert mode_of(path) == 0o600


def test_jsonl_existing_file_is_tightened_to_private(
    tmp_path: Path, jsonl_factory: SinkFactory
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"old": true}\n')
    path.chmod(0o644)

    sink = jsonl_factory({"path": str(path)})
    sink.emit(make_event())
    sink.close()

    assert mode_of(path) == 0o600
    assert read_lines(path)[0] == {"old": True}
    assert len(read_lines(path)) == 2


def test_jsonl_parent_directory_is_created_private(
    tmp_path: Path, jsonl_factory: SinkFactory
) -> None:
    parent = tmp_path / "new-logs"
    path = parent / "events.jsonl"

    sink = jsonl_factory({"path": str(path)})
    sink.close()

    assert parent.is_dir()
    assert mode_of(parent) == 0o700


def test_jsonl_rotates_by_size_keeping_the_backups(
    tmp_path: Path, jsonl_factory: SinkFactory
) -> None:
    logs = tmp_path / "rotating"
    path = logs / "events.jsonl"
    sink = jsonl_factory({"path": str(path), "max_bytes": 1024, "backups": 2})

    for index in range(60):
        sink.emit(make_event(index))
    sink.close()

    names = sorted(p.name for p in logs.iterdir())
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    chunks = [path.with_name("events.jsonl.2"), path.with_name("events.jsonl.1"), path]
    indexes: list[int] = []
    for chunk in chunks:
        assert 0 < chunk.stat().st_size <= 1024
        assert mode_of(chunk) == 0o600
        indexes.extend(line["data"]["index"] for line in read_lines(chunk))
    # oldest to newest, consecutive, ending with the last event; earlier ones were dropped
    assert indexes == list(range(indexes[0], 60))
    assert indexes[0] > 0


def test_jsonl_without_backups_starts_the_file_anew(
    tmp_path: Path, jsonl_factory: SinkFactory
) -> None:
    logs = tmp_path / "truncating"
    path = logs / "events.jsonl"
    sink = jsonl_factory({"path": str(path), "max_bytes": 1024, "backups": 0})

    for index in range(30):
        sink.emit(make_event(index))
    sink.close()

    assert [p.name for p in logs.iterdir()] == ["events.jsonl"]
    assert path.stat().st_size <= 1024
    indexes = [line["data"]["index"] for line in read_lines(path)]
    assert indexes[-1] == 29
    assert indexes[0] > 0


def test_jsonl_refuses_a_symlink_at_its_path(tmp_path: Path, jsonl_factory: SinkFactory) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("original\n")
    link = tmp_path / "events.jsonl"
    link.symlink_to(target)

    with pytest.raises(ConfigError) as info:
        jsonl_factory({"path": str(link)})

    assert str(link) in info.value.message
    assert target.read_text() == "original\n"


def test_jsonl_without_path_is_a_config_error(jsonl_factory: SinkFactory) -> None:
    with pytest.raises(ConfigError, match="needs a 'path'"):
        jsonl_factory({})


def test_jsonl_max_bytes_below_minimum_is_a_config_error(
    tmp_path: Path, jsonl_factory: SinkFactory
) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        jsonl_factory({"path": str(tmp_path / "e.jsonl"), "max_bytes": 10})

    assert not (tmp_path / "e.jsonl").exists()


# --------------------------------------------------------------------------------------------
# console sink
# --------------------------------------------------------------------------------------------


def test_console_sink_writes_one_line_per_event_to_stderr_only(
    capsys: pytest.CaptureFixture[str], console_factory: SinkFactory
) -> None:
    sink = console_factory({})

    sink.emit(Event(event_type="workflow.started", data={"phase": "tester"}, feature="login"))
    sink.emit(Event(event_type="workflow.finished"))
    sink.close()

    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 2
    assert "workflow.started" in lines[0]
    assert "[login]" in lines[0]
    assert "phase=tester" in lines[0]
    assert lines[1].endswith("workflow.finished")


def test_console_sink_json_option_writes_json(
    capsys: pytest.CaptureFixture[str], console_factory: SinkFactory
) -> None:
    sink = console_factory({"json": True})
    event = Event(event_type="workflow.started", data={"phase": "tester"})

    sink.emit(event)

    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert json.loads(line) == json.loads(json.dumps(event.to_dict()))


def test_console_sink_unknown_option_is_a_config_error(console_factory: SinkFactory) -> None:
    with pytest.raises(ConfigError, match="colour"):
        console_factory({"colour": True})


def test_console_sink_json_option_must_be_a_boolean(console_factory: SinkFactory) -> None:
    with pytest.raises(ConfigError, match="json"):
        console_factory({"json": "yes"})


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------


def test_configure_logging_writes_to_stderr_only() -> None:
    code = (
        "from tmops_core.events import configure_logging; from loguru import logger; "
        "configure_logging('debug'); logger.info('hello-log')"
    )

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "hello-log" in result.stderr


def test_configure_logging_respects_the_level() -> None:
    code = (
        "from tmops_core.events import configure_logging; from loguru import logger; "
        "configure_logging('warning'); logger.info('quiet-info'); logger.warning('loud-warning')"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "loud-warning" in result.stderr
    assert "quiet-info" not in result.stderr
