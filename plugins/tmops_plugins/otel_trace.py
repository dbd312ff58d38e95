"""tmops events as OpenTelemetry spans: a run span, its phases as children, their attempts
under them, and every other event as a span event on the innermost span it belongs to.

Only the engine's own events (those without an ``actor``) open spans; an audit event (a
person's pause, approval, start...) is a span event of its run's open span, or a span of its
own, ended at once, when the run has none in this process. Span times are the events' own
times. The tracer provider is private to the sink (no global is set) and made at the first
event, so its resource names the event's workspace, version and environment.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from tmops_hookspecs import Event

__all__ = ["RUN_SPAN", "EventTracer"]

RUN_SPAN = "tmops.run"
_PREFIX = "orchestration."
#: run states that end a run span, and the status each gets
_ENDED = {"completed": StatusCode.OK, "failed": StatusCode.ERROR}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _ns(moment: datetime) -> int:
    """Nanoseconds since the epoch, exact (a float timestamp would round them)."""
    return (moment - _EPOCH) // _MICROSECOND * 1000


def _attributes(data: Mapping[str, Any], prefix: str = "tmops.") -> dict[str, AttributeValue]:
    """Event data as span attributes: scalars as they are, anything else as JSON, no None."""
    result: dict[str, AttributeValue] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            result[f"{prefix}{key}"] = value
        else:
            result[f"{prefix}{key}"] = json.dumps(value, default=str, sort_keys=True)
    return result


@attrs.define
class _Run:
    """The open spans of one run: itself, its current phase and that phase's attempts."""

    span: Span
    phase: str | None = None
    phase_span: Span | None = None
    attempts: dict[int, Span] = attrs.field(factory=dict)
    #: the phase whose span ended last (an adoption's event follows its transition)
    ended_phase: str | None = None


class EventTracer:
    """Turns events into spans and hands ended spans to ``exporter`` in batches."""

    def __init__(self, exporter: SpanExporter, *, service_name: str = "tmops") -> None:
        self._exporter = exporter
        self._service_name = service_name
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._runs: dict[tuple[str, str], _Run] = {}
        self._lock = threading.Lock()

    # -- the provider ------------------------------------------------------------------------

    def _tracer_for(self, event: Event) -> trace.Tracer:
        if self._tracer is None:
            resource = Resource.create(
                {
                    "service.name": self._service_name,
                    "service.version": event.metadata.version,
                    "deployment.environment.name": event.metadata.environment,
                    "tmops.workspace": event.workspace,
                }
            )
            self._provider = TracerProvider(resource=resource)
            self._provider.add_span_processor(BatchSpanProcessor(self._exporter))
            self._tracer = self._provider.get_tracer("tmops", event.metadata.version)
        return self._tracer

    def close(self) -> None:
        """End what is still open (marked ``tmops.incomplete``) and export every span."""
        with self._lock:
            now = _ns(datetime.now(UTC))
            for run in self._runs.values():
                for span in (*run.attempts.values(), run.phase_span, run.span):
                    if span is not None:
                        span.set_attribute("tmops.incomplete", True)
                        span.end(end_time=now)
            self._runs.clear()
            if self._provider is not None:
                self._provider.shutdown()
                self._provider = None
                self._tracer = None

    # -- events ------------------------------------------------------------------------------

    def record(self, event: Event) -> None:
        with self._lock:
            tracer = self._tracer_for(event)
            data = dict(event.data)
            run_name = data.get("run")
            key = (str(event.feature), str(run_name))
            run = self._runs.get(key)
            if event.feature is None or run_name is None or "actor" in data:
                self._audit(tracer, event, run)
                return
            if run is None:
                run = self._runs[key] = self._open_run(tracer, event)
            if self._route(tracer, run, event, data):
                del self._runs[key]

    def _audit(self, tracer: trace.Tracer, event: Event, run: _Run | None) -> None:
        """A person's (or another process's) event: on its run's span, else a span alone."""
        name = event.event_type.removeprefix(_PREFIX)
        at = _ns(event.timestamp)
        if run is not None:
            run.span.add_event(name, _attributes(event.data), timestamp=at)
            return
        attributes = {**_attributes(event.data), **self._identity(event)}
        tracer.start_span(f"tmops.{name}", attributes=attributes, start_time=at).end(end_time=at)

    @staticmethod
    def _identity(event: Event) -> dict[str, AttributeValue]:
        found = {"tmops.feature": event.feature, "tmops.run": event.data.get("run"),
                 "tmops.run_id": event.correlation_id}  # fmt: skip
        return {key: str(value) for key, value in found.items() if value is not None}

    def _open_run(self, tracer: trace.Tracer, event: Event) -> _Run:
        span = tracer.start_span(
            RUN_SPAN, attributes=self._identity(event), start_time=_ns(event.timestamp)
        )
        return _Run(span)

    def _route(self, tracer: trace.Tracer, run: _Run, event: Event, data: dict[str, Any]) -> bool:
        """Put ``event`` where it belongs; True when it ended the run."""
        kind = event.event_type.removeprefix(_PREFIX)
        at = _ns(event.timestamp)
        phase = data.get("phase")
        attributes = _attributes(data)
        if kind == "session.started" and phase:
            parent = self._phase(tracer, run, str(phase), at)
            number = int(data.get("attempt") or 0)
            run.attempts[number] = tracer.start_span(
                f"tmops.attempt.{phase}", context=trace.set_span_in_context(parent),
                attributes=attributes, start_time=at,
            )  # fmt: skip
        elif kind == "session.ended" and int(data.get("attempt") or 0) in run.attempts:
            span = run.attempts.pop(int(data.get("attempt") or 0))
            span.set_attributes(attributes)
            if data.get("outcome") != "succeeded":
                span.set_status(Status(StatusCode.ERROR, str(data.get("outcome"))))
            span.end(end_time=at)
        elif kind == "phase.transition" and data.get("from"):
            span = self._phase(tracer, run, str(data["from"]), at)
            span.add_event(kind, attributes, timestamp=at)
            span.set_status(Status(StatusCode.OK))
            self._end_phase(run, at)
        elif kind == "phase.refused" and phase:
            span = self._phase(tracer, run, str(phase), at)
            span.add_event(kind, attributes, timestamp=at)
            span.set_status(Status(StatusCode.ERROR, str(data.get("reason", "refused"))))
            self._end_phase(run, at)
        elif kind == "phase.adopted" and phase and run.ended_phase != phase:
            # accepted earlier, or adopted without a transition of its own: a phase span alone
            span = self._phase(tracer, run, str(phase), at)
            span.set_attribute("tmops.adopted", True)
            span.add_event(kind, attributes, timestamp=at)
            self._end_phase(run, at)
        elif kind == "feature.completed" or (kind == "error" and data.get("status")):
            return self._end_run(run, kind, data, attributes, at)
        else:
            self._innermost(run, phase).add_event(kind, attributes, timestamp=at)
        return False

    def _phase(self, tracer: trace.Tracer, run: _Run, phase: str, at: int) -> Span:
        """The open span of ``phase``, opened now (ending another phase's) if need be."""
        if run.phase_span is not None and run.phase == phase:
            return run.phase_span
        if run.phase_span is not None:
            self._end_phase(run, at)
        run.phase = phase
        run.phase_span = tracer.start_span(
            f"tmops.phase.{phase}", context=trace.set_span_in_context(run.span),
            attributes={"tmops.phase": phase}, start_time=at,
        )  # fmt: skip
        return run.phase_span

    @staticmethod
    def _end_phase(run: _Run, at: int) -> None:
        for span in run.attempts.values():
            span.end(end_time=at)
        run.attempts.clear()
        if run.phase_span is not None:
            run.phase_span.end(end_time=at)
        run.ended_phase, run.phase, run.phase_span = run.phase, None, None

    def _innermost(self, run: _Run, phase: Any) -> Span:
        if run.phase_span is not None and (phase is None or phase == run.phase):
            if run.attempts:
                return run.attempts[max(run.attempts)]
            return run.phase_span
        return run.span

    def _end_run(
        self, run: _Run, kind: str, data: Mapping[str, Any],
        attributes: dict[str, AttributeValue], at: int,
    ) -> bool:  # fmt: skip
        state = "completed" if kind == "feature.completed" else str(data.get("status"))
        if run.phase_span is not None:
            self._end_phase(run, at)
        run.span.add_event(kind, attributes, timestamp=at)
        run.span.set_attribute("tmops.state", state)
        if data.get("pause_reason"):
            run.span.set_attribute("tmops.pause_reason", str(data["pause_reason"]))
        code = _ENDED.get(state, StatusCode.UNSET)
        if code is StatusCode.ERROR:
            run.span.set_status(Status(code, str(data.get("message") or state)))
        elif code is StatusCode.OK:
            run.span.set_status(Status(code))
        run.span.end(end_time=at)
        return True
