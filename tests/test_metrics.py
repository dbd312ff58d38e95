"""Metrics: ``tmops metrics`` after a real run of the project (the scripted agent through the
engine), parsed with prometheus_client's own text parser and checked against the store; the
collector's gauges of runs, queue, engine and agents on states made for real; ``/metrics`` of a
real ``tmops mcp --http`` refused without the token and served with it."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.engine_support import (
    SHORT_WORKFLOW,
    Finished,
    in_memory_service,
    new_feature,
    run_workflow,
    scripted_config,
)
from tmops_core.agents.processes import process_start_time
from tmops_core.lifecycle import AttemptState, PauseReason, RunState
from tmops_core.orchestration.attempts import HandoffClock
from tmops_core.service.demo_project import create_demo_project
from tmops_core.service.metrics import ATTEMPT_BUCKETS_S, HANDOFF_BUCKETS_S, StoreCollector
from tmops_core.store import SQLiteStore, open_store
from tmops_core.surfaces.mcp_http import MetricsRoute
from tmops_core.workspace.layout import iso, utc_now

from .mcp_support import TIMEOUT_S, TMOPS
from .test_mcp_http import StartServer, start_server, token_of

__all__ = ["start_server"]  # the fixture, used here as in test_mcp_http.py

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(text: str) -> Samples:
    """Every sample of an exposition, by name and labels (parsed by prometheus_client)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def tmops_metrics(root: Path) -> str:
    """``tmops metrics --workspace root`` as a user runs it."""
    result = subprocess.run(
        [str(TMOPS), "metrics", "--workspace", str(root)],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("metrics")
    run = run_workflow(base, scripted_config(base / "state", default_phases=SHORT_WORKFLOW))
    yield run
    run.close()


# -- tmops metrics after a real run -----------------------------------------------------------


def test_tmops_metrics_counts_the_real_run_as_the_store_has_it(finished: Finished) -> None:
    assert finished.status()["status"] == "completed"
    samples = samples_of(tmops_metrics(finished.root))
    assert value(samples, "tmops_runs", state="completed") == 1
    assert value(samples, "tmops_runs", state="running") == 0
    assert value(samples, "tmops_queue_length") == 0
    attempts = finished.store.attempts(finished.feature, finished.init.run)
    assert [a.phase for a in attempts] == SHORT_WORKFLOW
    for attempt in attempts:
        assert attempt.state == AttemptState.COMPLETED
        labels = {"phase": attempt.phase, "outcome": "completed", "provider": "claude-code"}
        assert value(samples, "tmops_attempts_total", **labels) == 1
        assert value(samples, "tmops_cost_usd_total", phase=attempt.phase,
                     provider="claude-code") == (attempt.cost_usd or 0.0)  # fmt: skip
        assert attempt.duration_s is not None
        count = value(samples, "tmops_attempt_duration_seconds_count", phase=attempt.phase)
        total = value(samples, "tmops_attempt_duration_seconds_sum", phase=attempt.phase)
        assert (count, total) == (1, pytest.approx(attempt.duration_s))
        for bound in ATTEMPT_BUCKETS_S:
            bucket = value(samples, "tmops_attempt_duration_seconds_bucket",
                           phase=attempt.phase, le=str(bound))  # fmt: skip
            assert bucket == (1 if attempt.duration_s <= bound else 0)


def test_the_handoff_and_detection_histograms_hold_what_the_engine_recorded(
    finished: Finished,
) -> None:
    events = finished.store.audit_trail(finished.feature)
    data = {
        kind: [json.loads(e["data"]) for e in events if e["event_type"] == kind]
        for kind in ("orchestration.session.started", "orchestration.checkpoint.detected")
    }
    handoffs = [d["handoff_ms"] for d in data["orchestration.session.started"]]
    # the run's first agent follows no checkpoint; the second follows the first one's
    assert handoffs[0] is None
    assert len(handoffs) == 2
    assert handoffs[1] > 0
    lags = [d["detection_lag_ms"] for d in data["orchestration.checkpoint.detected"]]
    assert len(lags) == 2
    samples = samples_of(tmops_metrics(finished.root))
    assert value(samples, "tmops_handoff_seconds_count") == 1
    assert value(samples, "tmops_handoff_seconds_sum") == pytest.approx(handoffs[1] / 1000)
    assert value(samples, "tmops_checkpoint_detection_seconds_count") == 2
    assert value(samples, "tmops_checkpoint_detection_seconds_sum") == pytest.approx(
        sum(lags) / 1000
    )
    for bound in HANDOFF_BUCKETS_S:
        bucket = value(samples, "tmops_handoff_seconds_bucket", le=str(bound))
        assert bucket == (1 if handoffs[1] / 1000 <= bound else 0)


def test_a_project_tmops_never_wrote_to_has_zeros_and_no_store_is_made(repo: Path) -> None:
    samples = samples_of(tmops_metrics(repo))
    assert value(samples, "tmops_runs", state="running") == 0
    assert value(samples, "tmops_engine_up") == 0
    assert value(samples, "tmops_handoff_seconds_count") == 0
    assert not (repo / ".tmops").exists()


# -- the collector on states made for real ----------------------------------------------------


def collected(store: SQLiteStore, *, now: float | None = None) -> Samples:
    collector = StoreCollector(lambda: store, clock=lambda: now or time.time())
    samples: Samples = {}
    for family in collector.collect():
        for sample in family.samples:
            assert isinstance(sample, Sample)
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def test_queue_pauses_and_open_runs_by_their_records(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state"))
    for name in ("alpha", "beta", "gamma"):
        new_feature(service, root, name)
        service.start(name, workspace=root, spawn=False)
    service.pause("gamma", workspace=root)  # a queued run pauses at once
    store = SQLiteStore(root / ".tmops" / "tmops.db")
    queued_at = min(r.queued_at for r in store.queued_runs() if r.queued_at)
    later = datetime_seconds(queued_at) + 42
    samples = collected(store, now=later)
    assert value(samples, "tmops_runs", state="queued") == 2
    assert value(samples, "tmops_runs", state="paused") == 1
    assert value(samples, "tmops_runs_paused", reason=PauseReason.REQUESTED) == 1
    assert value(samples, "tmops_runs_paused", reason=PauseReason.USAGE_LIMITED) == 0
    assert value(samples, "tmops_queue_length") == 2
    assert value(samples, "tmops_queue_oldest_seconds") == 42
    for name in ("alpha", "beta", "gamma"):
        assert value(samples, "tmops_run_cost_usd", feature=name, run="initial") == 0
    service.close()
    store.close()


def datetime_seconds(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_live_agents_and_the_engine_lease_from_real_processes(tmp_path: Path) -> None:
    """A recorded agent that runs counts, one that exited does not; the lease's age is the
    time since its heartbeat, and an engine row whose process is gone is not up."""
    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state"))
    new_feature(service, root, "alpha")
    service.start("alpha", workspace=root, spawn=False)
    store = open_store(root / ".tmops" / "tmops.db")
    assert isinstance(store, SQLiteStore)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_start = process_start_time(gone.pid)
    gone.wait()
    try:
        me = os.getpid()
        engine, _ = store.acquire_lease(
            pid=me, start_time=process_start_time(me) or 0, boot_id="another-boot",
            lease_until=0.0, now=iso(utc_now()), alive=lambda _: False,
        )  # fmt: skip
        fencing = store.admit_run("alpha", "initial", engine_id=engine.id, engine_pid=me,
                                  now=iso(utc_now()))  # fmt: skip
        for number, process, start in ((1, sleeper, process_start_time(sleeper.pid)),
                                       (2, gone, gone_start)):  # fmt: skip
            attempt = store.start_attempt("alpha", "initial", fencing, phase="orchestrator",
                                          attempt=number, provider="claude-code",
                                          start_commit=None, now=iso(utc_now()))  # fmt: skip
            store.attempt_process(attempt, "alpha", "initial", fencing, pid=process.pid,
                                  start_time=start or 0, mark=None)  # fmt: skip
        heartbeat = datetime_seconds(engine.heartbeat_at)
        samples = collected(store, now=heartbeat + 7.5)
        assert value(samples, "tmops_attempts_open") == 2
        assert value(samples, "tmops_agent_processes") == 1
        assert value(samples, "tmops_runs", state="running") == 1
        assert value(samples, "tmops_engine_lease_age_seconds") == 7.5
        assert value(samples, "tmops_engine_up") == 0  # another boot's engine serves no one
        progress = value(samples, "tmops_run_last_progress_timestamp_seconds",
                         feature="alpha", run="initial")  # fmt: skip
        last_event = store.audit_trail("alpha")[-1]["timestamp"]
        assert progress == datetime_seconds(last_event)
        # attempts still open are not counted as ended
        assert not [k for k in samples if k[0] == "tmops_attempts_total"]
    finally:
        sleeper.kill()
        sleeper.wait()
        service.close()
        store.close()


def test_ended_attempts_count_by_outcome_and_resets_are_not_attempts(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state"))
    new_feature(service, root, "alpha")
    service.start("alpha", workspace=root, spawn=False)
    store = SQLiteStore(root / ".tmops" / "tmops.db")
    engine, _ = store.acquire_lease(pid=os.getpid(), start_time=0, boot_id="b", lease_until=0.0,
                                    now=iso(utc_now()), alive=lambda _: False)  # fmt: skip
    fencing = store.admit_run("alpha", "initial", engine_id=engine.id, engine_pid=os.getpid(),
                              now=iso(utc_now()))  # fmt: skip
    for number, state, cost, duration in ((1, AttemptState.REJECTED, 0.25, 2.0),
                                          (2, AttemptState.FAILED, 0.5, 400.0)):  # fmt: skip
        attempt = store.start_attempt("alpha", "initial", fencing, phase="tester", attempt=number,
                                      provider="claude-code", start_commit=None,
                                      now=iso(utc_now()))  # fmt: skip
        store.finish_attempt(attempt, "alpha", "initial", fencing, state=state, outcome="failed",
                             message="no", session_id=None, cost_usd=cost, turns=1,
                             now=iso(utc_now()), duration_s=duration)  # fmt: skip
    store.end_run("alpha", "initial", fencing, status=RunState.FAILED, now=iso(utc_now()))
    store.reset_phases("alpha", "initial", ["tester"], message="retry", now=iso(utc_now()))
    samples = collected(store)
    labels = {"phase": "tester", "provider": "claude-code"}
    assert value(samples, "tmops_attempts_total", outcome="rejected", **labels) == 1
    assert value(samples, "tmops_attempts_total", outcome="failed", **labels) == 1
    assert not [k for k in samples if dict(k[1]).get("outcome") == "reset"]
    assert value(samples, "tmops_cost_usd_total", **labels) == 0.75
    assert value(samples, "tmops_attempt_duration_seconds_count", phase="tester") == 2
    assert value(samples, "tmops_attempt_duration_seconds_sum", phase="tester") == 402
    assert value(samples, "tmops_attempt_duration_seconds_bucket", phase="tester", le="5.0") == 1
    assert value(samples, "tmops_attempt_duration_seconds_bucket", phase="tester", le="600.0") == 2
    service.close()
    store.close()


def test_the_handoff_clock_counts_once_from_the_checkpoints_write(tmp_path: Path) -> None:
    checkpoint = tmp_path / "001-done.md"
    checkpoint.write_text("done\n")
    written = time.time() - 10  # written ten seconds ago, seen 4 ms after
    os.utime(checkpoint, (written, written))
    clock = HandoffClock()
    assert clock.take_ms() is None  # no checkpoint yet: a run's first agent
    lag = clock.detected(written + 0.004, checkpoint)
    assert lag == pytest.approx(4.0, abs=0.01)
    first = clock.take_ms()
    assert first is not None
    assert first >= 10_000  # from the write, not from the detection
    assert clock.take_ms() is None  # once only: a retry without a new checkpoint has none


def test_event_histograms_read_on_from_the_last_event_and_start_over_on_another_store(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "one.db")
    collector = StoreCollector(lambda: store)

    def handoff_count() -> float:
        for family in collector.collect():
            if family.name == "tmops_handoff_seconds":
                return next(s.value for s in family.samples if s.name.endswith("_count"))
        raise AssertionError("no handoff histogram")

    def record(target: SQLiteStore, ms: float | None) -> None:
        target.add_event(None, None, "orchestration.session.started",
                         json.dumps({"handoff_ms": ms}), iso(utc_now()))  # fmt: skip

    record(store, 12.5)
    record(store, None)  # a run's first agent: no handoff
    assert handoff_count() == 1
    record(store, 30.0)
    assert handoff_count() == 2
    other = SQLiteStore(tmp_path / "two.db")  # e.g. restored from a backup: fewer events
    record(other, 5.0)
    store = other
    assert handoff_count() == 1


# -- /metrics over HTTP -----------------------------------------------------------------------


def get_metrics(port: int, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    connection.request("GET", "/metrics", headers={"Host": f"127.0.0.1:{port}", **headers})
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    return response.status, dict(response.getheaders()), body


def test_http_metrics_need_the_token_and_answer_the_exposition(
    start_server: StartServer, repo: Path
) -> None:
    server = start_server()
    token = token_of(repo)
    status, headers, _ = get_metrics(server.port, {})
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="tmops"'
    status, _, _ = get_metrics(server.port, {"Authorization": "Bearer " + "x" * 43})
    assert status == 401
    status, _, _ = get_metrics(server.port, {"Authorization": f"Bearer {token}",
                                             "Origin": "http://evil.example"})  # fmt: skip
    assert status == 403
    status, headers, body = get_metrics(server.port, {"Authorization": f"Bearer {token}"})
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert value(samples_of(body), "tmops_runs", state="completed") == 0
    assert "/metrics (same token)" in server.stderr()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S)
    connection.request("POST", "/metrics", body=b"", headers={
        "Host": f"127.0.0.1:{server.port}", "Authorization": f"Bearer {token}"})  # fmt: skip
    assert connection.getresponse().status == 405
    connection.close()


# -- the route's worker -----------------------------------------------------------------------


def call_route(route: MetricsRoute, method: str = "GET") -> tuple[int, bytes]:
    """One request through the ASGI app, as uvicorn makes it."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/metrics", "headers": [],
             "query_string": b"", "http_version": "1.1"}  # fmt: skip
    asyncio.run(route(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


def test_metrics_are_computed_at_the_lowest_cpu_priority_off_the_callers_thread() -> None:
    def where() -> bytes:
        tid = threading.get_native_id()
        return f"{os.getpriority(os.PRIO_PROCESS, tid)} {tid}".encode()

    async def other(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("only /metrics comes here")

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    status, body = call_route(MetricsRoute(other, where))
    nice, tid = body.decode().split()
    assert status == 200
    assert int(nice) == 19
    assert int(tid) != threading.get_native_id()
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_a_scrape_that_cannot_read_the_store_answers_500_and_the_next_one_works() -> None:
    answers = iter([RuntimeError("database is locked"), b"tmops_runs 1\n"])

    def exposition() -> bytes:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    route = MetricsRoute(lambda *_: None, exposition)
    assert call_route(route) == (500, b"metrics could not be read")
    assert call_route(route) == (200, b"tmops_runs 1\n")
    assert call_route(route, "DELETE")[0] == 405
