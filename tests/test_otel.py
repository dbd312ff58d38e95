"""The otel sink: a real run with the scripted agent as one trace (a run span, its four phase
spans, their attempts), other outcomes from the events alone, the OTLP/HTTP exporter against a
collector stand-in on 127.0.0.1, the console exporter, and strict options."""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tmops_core.config import LoadedConfig, parse_config
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.surfaces.cli import cli
from tmops_hookspecs import ConfigError, Event, SinkSpec, hookimpl
from tmops_plugins.otel_sink import make_otel_sink

from .engine_process_support import run_in_engine_process
from .engine_support import (
    PHASES,
    SHORT_WORKFLOW,
    new_feature,
    scripted_config,
    serve,
    write_config,
)
from .http_support import PostRecorder

RUN_ID = "r-1"


def _memory_plugin(exporter: InMemorySpanExporter) -> types.SimpleNamespace:
    """A plugin registering the otel sink with the SDK's in-memory exporter injected."""

    @hookimpl
    def tmops_register_sinks() -> Iterable[SinkSpec]:
        return [SinkSpec(name="otel-memory",
                         factory=functools.partial(make_otel_sink, exporter=exporter))]  # fmt: skip

    return types.SimpleNamespace(tmops_register_sinks=tmops_register_sinks)


def _by_name(spans: Iterable[ReadableSpan], name: str) -> list[ReadableSpan]:
    """The spans named ``name``, or starting with it if it ends with a dot; oldest first."""
    chosen = (
        s for s in spans if s.name == name or (name.endswith(".") and s.name.startswith(name))
    )
    return sorted(chosen, key=lambda s: s.start_time or 0)


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReadableSpan, ...]:
    """The spans of a real run of the four phases, exported when the service closed."""
    base = tmp_path_factory.mktemp("otel")
    exporter = InMemorySpanExporter()
    data = scripted_config(base / "state")
    data["telemetry"] = {"outputs": {"otel-memory": {}}}
    plugins = create_plugin_manager(extra=[("otel-memory", _memory_plugin(exporter))])
    service = Service(LoadedConfig(parse_config(data), None), plugins)
    root = create_demo_project(base / "p").path
    init = new_feature(service, root)
    service.start(init.feature, workspace=root, spawn=False)
    serve(service, root)
    assert service.status(init.feature, workspace=root)["status"] == "completed"
    service.close()
    return exporter.get_finished_spans()


def test_a_run_is_one_span_with_its_four_phases_as_children(
    traced_run: tuple[ReadableSpan, ...],
) -> None:
    [run] = _by_name(traced_run, "tmops.run")
    assert run.status.status_code is StatusCode.OK
    assert run.attributes is not None
    assert run.attributes["tmops.feature"] == DEMO_FEATURE
    assert run.attributes["tmops.run"] == "initial"
    assert run.attributes["tmops.state"] == "completed"
    assert run.resource.attributes["service.name"] == "tmops"
    assert run.resource.attributes["tmops.workspace"] == "default"
    phases = _by_name(traced_run, "tmops.phase.")
    assert [p.name for p in phases] == [f"tmops.phase.{name}" for name in PHASES]
    for phase in phases:
        assert phase.parent is not None
        assert phase.parent.span_id == run.context.span_id
        assert phase.context.trace_id == run.context.trace_id
        assert phase.status.status_code is StatusCode.OK
        assert (run.start_time or 0) <= (phase.start_time or 0)
        assert (phase.start_time or 0) <= (phase.end_time or 0) <= (run.end_time or 0)
        assert [e.name for e in phase.events][-1] == "phase.transition"


def test_each_attempt_is_a_span_under_its_phase(traced_run: tuple[ReadableSpan, ...]) -> None:
    phases = {p.context.span_id: p for p in _by_name(traced_run, "tmops.phase.")}
    attempts = _by_name(traced_run, "tmops.attempt.")
    assert [a.name for a in attempts] == [f"tmops.attempt.{name}" for name in PHASES]
    for attempt in attempts:
        assert attempt.parent is not None
        phase = phases[attempt.parent.span_id]
        assert phase.name.removeprefix("tmops.phase.") == attempt.name.removeprefix(
            "tmops.attempt."
        )
        assert attempt.attributes is not None
        assert attempt.attributes["tmops.attempt"] == 1
        assert attempt.attributes["tmops.outcome"] == "succeeded"
        assert "checkpoint.detected" in [e.name for e in attempt.events]


def test_the_gates_are_events_of_their_phase(traced_run: tuple[ReadableSpan, ...]) -> None:
    tester = next(s for s in traced_run if s.name == "tmops.phase.tester")
    gates = [e for e in tester.events if e.name == "gate.checked"]
    assert gates
    assert gates[0].attributes is not None
    assert gates[0].attributes["tmops.gate"] == "tests-fail"


# -- outcomes from events alone -------------------------------------------------------------------


def _event(event_type: str, **data: Any) -> Event:
    return Event(event_type=f"orchestration.{event_type}", data={"run": "initial", **data},
                 feature="auth", correlation_id=RUN_ID)  # fmt: skip


def _trace(*events: Event, close: bool = True) -> tuple[ReadableSpan, ...]:
    exporter = InMemorySpanExporter()
    sink = make_otel_sink({}, exporter=exporter)
    for event in events:
        sink.emit(event)
    if close:
        sink.close()
    return exporter.get_finished_spans()


def test_a_failed_run_is_an_error_span_with_its_message() -> None:
    spans = _trace(
        _event("session.started", phase="orchestrator", attempt=1, pid=1),
        _event("session.ended", phase="orchestrator", attempt=1, outcome="crashed"),
        _event("phase.attempt_failed", phase="orchestrator", attempt=1, reason="crashed"),
        _event("error", status="failed", message="orchestrator: the agent crashed"),
    )
    [run] = _by_name(spans, "tmops.run")
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "orchestrator: the agent crashed"
    [attempt] = _by_name(spans, "tmops.attempt.")
    assert attempt.status.status_code is StatusCode.ERROR
    [phase] = _by_name(spans, "tmops.phase.")
    assert "phase.attempt_failed" in [e.name for e in phase.events]
    assert phase.end_time == run.end_time


def test_a_paused_run_ends_its_span_with_the_reason() -> None:
    spans = _trace(
        _event("phase.awaiting_approval", phase="tester"),
        _event("error", status="paused", message="awaiting approval",
               pause_reason="awaiting_approval"),
    )  # fmt: skip
    [run] = spans
    assert run.status.status_code is StatusCode.UNSET
    assert run.attributes is not None
    assert run.attributes["tmops.state"] == "paused"
    assert run.attributes["tmops.pause_reason"] == "awaiting_approval"
    assert [e.name for e in run.events] == ["phase.awaiting_approval", "error"]


def test_an_audit_event_joins_its_run_or_stands_alone() -> None:
    spans = _trace(
        _event("run.queued", actor="cli:me"),
        _event("session.started", phase="orchestrator", attempt=1, pid=1),
        _event("run.paused", actor="cli:me"),
    )
    alone = next(s for s in spans if s.name == "tmops.run.queued")
    assert alone.attributes is not None
    assert alone.attributes["tmops.actor"] == "cli:me"
    assert alone.start_time == alone.end_time
    [run] = _by_name(spans, "tmops.run")
    assert [e.name for e in run.events] == ["run.paused"]


def test_close_ends_what_is_still_open_as_incomplete() -> None:
    spans = _trace(_event("session.started", phase="tester", attempt=2, pid=1))
    assert sorted(s.name for s in spans) == ["tmops.attempt.tester", "tmops.phase.tester",
                                             "tmops.run"]  # fmt: skip
    for span in spans:
        assert span.attributes is not None
        assert span.attributes["tmops.incomplete"] is True


# -- exporters ------------------------------------------------------------------------------------


@pytest.fixture
def collector() -> Iterator[PostRecorder]:
    server = PostRecorder()
    yield server
    server.close()


def test_the_otlp_exporter_posts_the_spans_with_headers_from_the_environment(
    collector: PostRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMOPS_TEST_OTEL_AUTH", "Bearer otel-test")
    sink = make_otel_sink({"endpoint": f"{collector.base_url}/v1/traces", "timeout_s": 5,
                           "headers": {"Authorization": "TMOPS_TEST_OTEL_AUTH"}})  # fmt: skip
    sink.emit(_event("session.started", phase="tester", attempt=1, pid=1))
    sink.emit(_event("feature.completed", duration_s=1.0))
    sink.close()
    [post] = collector.posts
    assert post.path == "/v1/traces"
    assert post.headers["Authorization"] == "Bearer otel-test"
    assert post.headers["Content-Type"] == "application/x-protobuf"
    request = ExportTraceServiceRequest()
    request.ParseFromString(post.body)
    [resource_spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "tmops"
    names = sorted(s.name for scope in resource_spans.scope_spans for s in scope.spans)
    assert names == ["tmops.attempt.tester", "tmops.phase.tester", "tmops.run"]


def test_the_console_exporter_writes_spans_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    sink = make_otel_sink({"exporter": "console"})
    sink.emit(_event("feature.completed", duration_s=1.0))
    sink.close()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert '"name": "tmops.run"' in captured.err


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"exporter": "zipkin"}, "must be one of otlp, console"),
        ({"endpoint": "localhost:4318"}, "must be an http:// or https:// URL"),
        ({"headers": {"Authorization": "NOT_SET_ANYWHERE_HOPEFULLY"}}, "is not set"),
        ({"headers": {"Authorization": "a b"}}, "must name an environment variable"),
        ({"headers": ["Authorization"]}, "must map header names to environment variables"),
        ({"timeout_s": 0}, "'otel.timeout_s' must be a number of seconds above 0"),
        ({"exporter": "console", "endpoint": "http://x"}, "takes no endpoint"),
        ({"sampler": "always"}, "unknown option(s) for 'otel': sampler"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_otel_sink(options)
    assert says in str(caught.value)


def test_without_opentelemetry_the_error_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in sys.modules if n.startswith("opentelemetry") or "otel_trace" in n]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # what an absent package looks like
    with pytest.raises(ConfigError) as caught:
        make_otel_sink({})
    assert "needs OpenTelemetry" in caught.value.message
    assert caught.value.hint is not None
    assert "pip install 'tmops[otel]'" in caught.value.hint


def test_config_check_shows_the_sinks_refusal_of_its_options(tmp_path: Path) -> None:
    config = write_config(tmp_path / "tmops.yaml", {"telemetry": {"outputs": {
        "otel": {"exporter": "zipkin"},
        "jsonl": {"path": str(tmp_path / "events.jsonl"), "max_bytes": "big"},
    }}})  # fmt: skip
    result = CliRunner().invoke(cli, ["--config", str(config), "config", "check"])
    assert result.exit_code == 2
    assert "'exporter' of 'otel' must be one of otlp, console" in result.stderr
    assert "@ $.telemetry.outputs.otel" in result.stderr
    assert "option 'max_bytes' of 'jsonl' must be int" in result.stderr
    assert "@ $.telemetry.outputs.jsonl" in result.stderr


def test_the_engine_process_exports_its_trace_before_it_exits(
    tmp_path: Path, collector: PostRecorder
) -> None:
    """`tmops engine`, a process of its own reading the config file, sends its run's spans to
    the OTLP endpoint before it exits."""
    data = scripted_config(tmp_path / "state", default_phases=SHORT_WORKFLOW)
    data["telemetry"] = {"outputs": {"otel": {"endpoint": f"{collector.base_url}/v1/traces"}}}
    # what this test's own service sends before the engine runs is not the engine's
    run_in_engine_process(tmp_path, data, before_engine=collector.posts.clear)
    names = []
    for post in collector.posts:
        request = ExportTraceServiceRequest()
        request.ParseFromString(post.body)
        names += [s.name for r in request.resource_spans for c in r.scope_spans for s in c.spans]
    assert names.count("tmops.run") == 1
    assert sorted(n for n in names if n.startswith("tmops.phase.")) == [
        "tmops.phase.orchestrator", "tmops.phase.tester",
    ]  # fmt: skip
