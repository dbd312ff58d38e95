"""Prometheus metrics of a project, computed from its store when they are asked for.

A custom collector in a registry of its own (never prometheus_client's global one): every scrape
reads the store (runs, attempts, the audit trail, the engines) and /proc (which recorded agent
and engine processes still run), so a run's handoff pays nothing for metrics, and the counters
survive restarts because the store does. It only reads: no engine is started, nothing written.

Labels stay bounded: phase, state, outcome, provider, pause reason; ``feature`` and ``run`` only
on the gauges of runs that have not ended (as many series as runs in flight, which the queue and
the scheduler's limit bound), never on counters or histograms.

``prometheus_client`` is imported when metrics are collected, so no other command pays for it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tmops_core.agents.processes import process_alive
from tmops_core.lifecycle import PauseReason, RunState
from tmops_core.orchestration.liveness import engine_alive
from tmops_core.store import Store

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from tmops_core.workspace.layout import Layout

__all__ = [
    "ATTEMPT_BUCKETS_S",
    "CONTENT_TYPE",
    "HANDOFF_BUCKETS_S",
    "Metrics",
    "StoreCollector",
    "exposition",
]

#: how long an agent ran: from seconds to the default wall-clock limit (an hour) and past it
ATTEMPT_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
#: a handoff or a detection: milliseconds when nothing runs between (no gates), seconds with tests
HANDOFF_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: the text format's media type, the one every Prometheus 2.x and 3.x parses
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: the runs whose cost and progress are exported per run: every state but the ended ones
_OPEN_STATES = (RunState.QUEUED, RunState.RUNNING, RunState.PAUSED, RunState.NEEDS_REVIEW)


def _seconds(iso_time: str | None) -> float | None:
    """An ISO time as the store writes it, as Unix seconds (None if absent or unreadable)."""
    if not iso_time:
        return None
    try:
        return datetime.fromisoformat(iso_time).timestamp()
    except ValueError:
        return None


def _cumulative(
    bounds: Sequence[float], counts: Sequence[int], total: int
) -> list[tuple[str, float]]:
    """Histogram buckets as prometheus_client takes them: ``le`` and the cumulative count."""
    buckets = [(str(bound), float(count)) for bound, count in zip(bounds, counts, strict=True)]
    return [*buckets, ("+Inf", float(total))]


class _EventHistogram:
    """A histogram over one number of one event type of the audit trail, kept up to date by
    reading only the events recorded since the last scrape (the trail is append-only)."""

    def __init__(self, event_type: str, key: str, *, scale: float) -> None:
        self.event_type = event_type
        self.key = key
        self.scale = scale
        self._reset()

    def _reset(self) -> None:
        self.counts = [0] * len(HANDOFF_BUCKETS_S)
        self.total = 0
        self.sum = 0.0
        self.last_id = 0

    def update(self, store: Store) -> None:
        if store.last_event_id() < self.last_id:  # another database now: count it afresh
            self._reset()
        for event_id, number in store.event_numbers(
            self.event_type, self.key, after_id=self.last_id
        ):
            value = max(0.0, number * self.scale)
            self.total += 1
            self.sum += value
            for index, bound in enumerate(HANDOFF_BUCKETS_S):
                if value <= bound:
                    self.counts[index] += 1
            self.last_id = event_id


class StoreCollector:
    """The prometheus_client collector of one project: ``collect`` reads its store."""

    def __init__(
        self, store_for: Callable[[], Store | None], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store_for = store_for
        self._clock = clock
        self._lock = threading.Lock()  # scrapes may come at once; the event cursors are shared
        self._handoffs = _EventHistogram("orchestration.session.started", "handoff_ms", scale=0.001)
        self._detections = _EventHistogram(
            "orchestration.checkpoint.detected", "detection_lag_ms", scale=0.001
        )

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: the names are this module's own

    def collect(self) -> Iterator[Metric]:
        store = self._store_for()
        with self._lock:
            if store is not None:
                self._handoffs.update(store)
                self._detections.update(store)
            yield from self._runs(store)
            yield from self._attempts(store)
            yield from self._processes(store)
            yield from self._histograms()

    # -- families ----------------------------------------------------------------------------

    def _runs(self, store: Store | None) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        tallies = store.run_tallies() if store is not None else []
        by_state: dict[str, int] = defaultdict(int)
        paused: dict[str, int] = defaultdict(int)
        for tally in tallies:
            by_state[tally.status] += tally.count
            if tally.status == RunState.PAUSED:
                paused[tally.pause_reason or "unknown"] += tally.count
        runs = GaugeMetricFamily("tmops_runs", "Runs by state.", labels=["state"])
        for state in RunState:
            runs.add_metric([state.value], by_state.get(state.value, 0))
        yield runs
        reasons = GaugeMetricFamily(
            "tmops_runs_paused", "Paused runs by why they paused.", labels=["reason"]
        )
        for reason in [*(r.value for r in PauseReason), *sorted(set(paused) - set(PauseReason))]:
            reasons.add_metric([reason], paused.get(reason, 0))
        yield reasons
        queued = store.queued_runs() if store is not None else []
        yield GaugeMetricFamily(
            "tmops_queue_length", "Runs waiting for an engine's slot.", value=len(queued)
        )
        oldest = min((s for r in queued if (s := _seconds(r.queued_at)) is not None), default=None)
        yield GaugeMetricFamily(
            "tmops_queue_oldest_seconds",
            "How long the run first in the queue has waited (0 with an empty queue).",
            value=0.0 if oldest is None else max(0.0, self._clock() - oldest),
        )
        open_runs = store.open_runs(_OPEN_STATES) if store is not None else []
        cost = GaugeMetricFamily(
            "tmops_run_cost_usd",
            "Cost so far of each run that has not ended (queued, running, paused, needs review).",
            labels=["feature", "run"],  # no state: the series stays one as the run moves on
        )
        progress = GaugeMetricFamily(
            "tmops_run_last_progress_timestamp_seconds",
            "When each running run last recorded an event (Unix time).",
            labels=["feature", "run"],
        )
        for run in open_runs:
            cost.add_metric([run.feature, run.run], run.cost_usd)
            if run.status == RunState.RUNNING:
                moment = _seconds(run.last_event_at) or _seconds(run.updated_at)
                if moment is not None:
                    progress.add_metric([run.feature, run.run], moment)
        yield cost
        yield progress

    def _attempts(self, store: Store | None) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        tallies = store.attempt_tallies(ATTEMPT_BUCKETS_S) if store is not None else []
        attempts = CounterMetricFamily(
            "tmops_attempts_total",
            "Ended attempts by phase, outcome (the attempt's final state) and provider.",
            labels=["phase", "outcome", "provider"],
        )
        cost = CounterMetricFamily(
            "tmops_cost_usd_total",
            "What the ended attempts cost, in US dollars, by phase and provider.",
            labels=["phase", "provider"],
        )
        costs: dict[tuple[str, str], float] = defaultdict(float)
        durations: dict[str, tuple[list[int], int, float]] = {}
        for tally in tallies:
            attempts.add_metric([tally.phase, tally.state, tally.provider], tally.count)
            costs[(tally.phase, tally.provider)] += tally.cost_usd
            counts, timed, total = durations.get(
                tally.phase, ([0] * len(ATTEMPT_BUCKETS_S), 0, 0.0)
            )
            counts = [a + b for a, b in zip(counts, tally.at_most, strict=True)]
            durations[tally.phase] = (counts, timed + tally.timed, total + tally.duration_s)
        for (phase, provider), usd in sorted(costs.items()):
            cost.add_metric([phase, provider], usd)
        yield attempts
        yield cost
        histogram = HistogramMetricFamily(
            "tmops_attempt_duration_seconds",
            "How long each attempt's agent ran, by phase (ended attempts that ran an agent).",
            labels=["phase"],
        )
        for phase, (counts, timed, total) in sorted(durations.items()):
            histogram.add_metric([phase], _cumulative(ATTEMPT_BUCKETS_S, counts, timed), total)
        yield histogram

    def _processes(self, store: Store | None) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        live = store.live_attempts() if store is not None else []
        yield GaugeMetricFamily(
            "tmops_attempts_open",
            "Attempts recorded as starting or running (more than the live agents: a dead "
            "engine's, until a new engine takes its runs over).",
            value=len(live),
        )
        alive = sum(
            1
            for attempt in live
            if attempt.pid is not None
            and attempt.start_time is not None
            and process_alive(attempt.pid, attempt.start_time)
        )
        yield GaugeMetricFamily(
            "tmops_agent_processes",
            "Agent processes running now (recorded pid and start time, checked in /proc).",
            value=alive,
        )
        engine = store.serving_engine() if store is not None else None
        yield GaugeMetricFamily(
            "tmops_engine_up",
            "1 while an engine holding the project's lease is alive, else 0.",
            value=1 if engine is not None and engine_alive(engine) else 0,
        )
        lease = GaugeMetricFamily(
            "tmops_engine_lease_age_seconds",
            "Seconds since the engine holding the lease last renewed it (absent: no engine "
            "holds it). A live engine renews it every second.",
        )
        heartbeat = _seconds(engine.heartbeat_at) if engine is not None else None
        if heartbeat is not None:
            lease.add_metric([], max(0.0, self._clock() - heartbeat))
        yield lease

    def _histograms(self) -> Iterator[Metric]:
        from prometheus_client.core import HistogramMetricFamily

        for name, doc, source in (
            (
                "tmops_handoff_seconds",
                "From an agent's completion checkpoint being written to the run's next agent "
                "process running (judge, gates and commit included).",
                self._handoffs,
            ),
            (
                "tmops_checkpoint_detection_seconds",
                "From a completion checkpoint being written to the engine seeing it.",
                self._detections,
            ),
        ):
            yield HistogramMetricFamily(
                name,
                doc,
                buckets=_cumulative(HANDOFF_BUCKETS_S, source.counts, source.total),
                sum_value=source.sum,
            )


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in Prometheus' text format."""
    from prometheus_client import generate_latest

    return generate_latest(registry)


class Metrics:
    """The metrics of the service's projects (a part of
    :class:`~tmops_core.service.operations.Service`): one registry per project, kept so the
    audit trail's histograms are read on from where the last scrape stopped."""

    if TYPE_CHECKING:

        def _layout(self, workspace: Path | None) -> Layout: ...

        def _store(self, layout: Layout, *, create: bool) -> Store | None: ...

    @functools.cached_property
    def _metric_registries(self) -> dict[Path, CollectorRegistry]:
        return {}

    def metrics_registry(self, workspace: Path | None = None) -> CollectorRegistry:
        """The registry of the project at ``workspace`` (default: the working directory)."""
        from prometheus_client import CollectorRegistry

        layout = self._layout(workspace)
        registry = self._metric_registries.get(layout.project_root)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(StoreCollector(lambda: self._store(layout, create=False)))
            self._metric_registries[layout.project_root] = registry
        return registry

    def metrics_text(self, workspace: Path | None = None) -> bytes:
        """The project's metrics in Prometheus' text format; a project tmops never wrote to
        has its zeros."""
        return exposition(self.metrics_registry(workspace))
