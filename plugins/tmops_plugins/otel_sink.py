"""The ``otel`` sink: runs, phases and attempts as OpenTelemetry spans (see otel_trace.py).

Options (``telemetry.outputs.otel``): ``exporter`` (``otlp``, the default: OTLP over
http/protobuf; or ``console``: spans as JSON on stderr), and for ``otlp`` the ``endpoint``
(default: ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else the SDK's
``http://localhost:4318/v1/traces``), ``headers`` (header name -> the environment variable
holding its value, so the config holds no secret) and ``timeout_s``; ``service_name``
(default ``tmops``). OpenTelemetry is an optional extra (``pip install 'tmops[otel]'``): it is
imported only when the sink is configured, so the plugin loads without it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tmops_hookspecs import ConfigError, Event, SinkSpec, hookimpl

from ._options import HEADER_NAME, VAR_NAME, check_keys, get, http_url, seconds

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from .otel_trace import EventTracer

__all__ = ["OtelSink", "make_otel_sink"]

_NAME = "otel"
_EXPORTERS = ("otlp", "console")
_INSTALL_HINT = "pip install 'tmops[otel]' (opentelemetry-sdk and its OTLP/HTTP exporter)"


class OtelSink:
    """Hands each event to the tracer; spans are exported in batches, the rest at close."""

    def __init__(self, tracer: EventTracer) -> None:
        self._tracer = tracer

    def emit(self, event: Event) -> None:
        self._tracer.record(event)

    def close(self) -> None:
        self._tracer.close()


def make_otel_sink(options: Mapping[str, Any], *, exporter: SpanExporter | None = None) -> OtelSink:
    """The sink ``options`` ask for; ``exporter`` replaces the configured one (tests, embedding:
    the SDK's ``InMemorySpanExporter``)."""
    check_keys(_NAME, options, {"exporter", "endpoint", "headers", "timeout_s", "service_name"})
    service_name = get(_NAME, options, "service_name", str, "tmops")
    try:
        from .otel_trace import EventTracer
    except ImportError as exc:
        raise ConfigError(
            f"the '{_NAME}' sink needs OpenTelemetry, which is not installed ({exc.name})",
            hint=_INSTALL_HINT,
        ) from exc
    return OtelSink(EventTracer(exporter or _exporter(options), service_name=service_name))


def _exporter(options: Mapping[str, Any]) -> SpanExporter:
    kind = get(_NAME, options, "exporter", str, "otlp")
    if kind not in _EXPORTERS:
        raise ConfigError(
            f"option 'exporter' of '{_NAME}' must be one of {', '.join(_EXPORTERS)}, got {kind!r}"
        )
    if kind == "console":
        extra = sorted({"endpoint", "headers", "timeout_s"} & set(options))
        if extra:
            raise ConfigError(f"'{_NAME}' with exporter console takes no {', '.join(extra)}")
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout carries MCP
    endpoint = get(_NAME, options, "endpoint", str, "") or None
    if endpoint is not None:
        http_url(_NAME, "endpoint", endpoint, example="http://localhost:4318/v1/traces")
    timeout_s = seconds(_NAME, options, "timeout_s", 10.0)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(
            f"the '{_NAME}' sink's otlp exporter is not installed ({exc.name})", hint=_INSTALL_HINT
        ) from exc
    return OTLPSpanExporter(
        endpoint=endpoint, headers=_headers(options.get("headers", {})), timeout=timeout_s
    )


def _headers(spec: Any) -> dict[str, str] | None:
    """``headers``: header name -> environment variable; the values read from it now."""
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"option 'headers' of '{_NAME}' must map header names to environment variables",
            hint="e.g. headers: {Authorization: OTEL_AUTH} sends $OTEL_AUTH as Authorization",
        )
    headers: dict[str, str] = {}
    for name, variable in spec.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise ConfigError(f"'{_NAME}' headers: {name!r} is not a header name")
        if not isinstance(variable, str) or not VAR_NAME.fullmatch(variable):
            raise ConfigError(
                f"'{_NAME}' headers: {name} must name an environment variable, got {variable!r}"
            )
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(
                f"'{_NAME}' headers: ${variable} (the {name} header) is not set",
                hint=f"export {variable}=... in the environment tmops runs in",
            )
        headers[name] = value
    return headers or None


@hookimpl
def tmops_register_sinks() -> Iterable[SinkSpec]:
    return [
        SinkSpec(
            name=_NAME, factory=make_otel_sink,
            description="runs, phases and attempts as OpenTelemetry spans (OTLP or console)",
        )
    ]  # fmt: skip
