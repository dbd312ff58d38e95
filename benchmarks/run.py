#!/usr/bin/env python
"""tmops performance benchmarks: handoff latency, ``tmops_get_status`` over stdio, cold start.

Every number is compared with a *floor* measured in the same run on the same machine, so the
verdicts are ratios, never absolute times::

    .venv/bin/python benchmarks/run.py [--rounds N] [--out benchmarks/results/results.json]
                                       [--check] [--only handoff|mcp|cold|init ...]

It prints a table and whether each target is met, and writes every distribution to JSON. The
exit code is 0 whatever the results; with ``--check`` it is 1 when a target is missed (or could
not be measured). See benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "results.json"
SECTIONS = ("handoff", "mcp", "cold", "init")

HANDOFF_TARGET = 3.0  # handoff p50 within 3x the floor p50 (inotify event + Python spawn)
STATUS_TARGET = 1.5  # tmops_get_status within 1.5x a no-op tool, p50 and p95
TARGET_NAMES = {
    "handoff": ("handoff p50 <= 3x floor p50",),
    "mcp": ("tmops_get_status p50 <= 1.5x no-op p50", "tmops_get_status p95 <= 1.5x no-op p95"),
}

# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def dist(values_ms: Sequence[float]) -> dict[str, Any]:
    """A distribution in milliseconds: n, p50, p95, min, max, mean."""
    values = [float(v) for v in values_ms]
    if not values:
        return {"n": 0, "p50": None, "p95": None, "min": None, "max": None, "mean": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "mean": round(sum(values) / len(values), 3),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)


def ms(ns: float) -> float:
    return ns / 1e6


def target(name: str, value: float | None, limit: float) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "limit": limit,
        "met": value is not None and value <= limit,
    }


# --------------------------------------------------------------------------------------------
# The floors of the handoff: an inotify event and a Python process spawn
# --------------------------------------------------------------------------------------------


def measure_inotify(samples: int, folder: Path) -> list[float]:
    """write+close a file in a watched folder -> the watchdog native observer's callback (ms)."""
    from watchdog.events import FileClosedEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    folder.mkdir(parents=True, exist_ok=True)
    arrived: dict[str, int] = {}
    condition = threading.Condition()

    class Handler(FileSystemEventHandler):
        def on_closed(self, event: Any) -> None:
            now = time.perf_counter_ns()
            with condition:
                arrived.setdefault(os.path.basename(os.fsdecode(event.src_path)), now)
                condition.notify_all()

    observer = Observer()
    observer.schedule(Handler(), str(folder), recursive=False, event_filter=[FileClosedEvent])
    observer.start()
    latencies: list[float] = []
    try:
        time.sleep(0.05)
        for index in range(samples):
            name = f"{index:04d}-probe.md"
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, b"# probe\n**Feature:** x\n")
            os.close(fd)
            closed = time.perf_counter_ns()
            with condition:
                if not condition.wait_for(lambda n=name: n in arrived, timeout=5):
                    raise RuntimeError("the inotify observer reported nothing in 5 s")
                latencies.append(ms(arrived[name] - closed))
            time.sleep(0.005)
    finally:
        observer.stop()
        observer.join()
    return latencies


_CHILD_CODE = "import time,sys; sys.stdout.write(str(time.time_ns()))"


def _spawn_samples(samples: int, **popen: Any) -> tuple[list[float], list[float], list[float]]:
    """Popen(python -c ...) -> the child's first statement (ms), and its two parts: Popen
    returning (fork + exec) and the child interpreter's start-up to its first statement."""
    total: list[float] = []
    fork_exec: list[float] = []
    interpreter: list[float] = []
    for _ in range(samples):
        before = time.time_ns()
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE], stdout=subprocess.PIPE, **popen
        )
        returned = time.time_ns()
        out, _ = child.communicate()
        first = int(out)
        total.append(ms(first - before))
        fork_exec.append(ms(returned - before))
        interpreter.append(ms(first - returned))
    return total, fork_exec, interpreter


def measure_spawn(samples: int) -> list[float]:
    """The floor as the brief defines it: plain Popen -> the child's first statement (ms)."""
    return _spawn_samples(samples)[0]


def measure_spawn_like_tmops(samples: int) -> tuple[list[float], list[float], list[float]]:
    """Informative: the same child spawned with the flags of tmops' supervisor (``preexec_fn``,
    a new session, pipes, the allowlisted env), from this process but outside the engine."""
    from tmops_core.agent_env import build_env
    from tmops_core.spawner import _child_setup

    return _spawn_samples(
        samples,
        env=build_env({}),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
        close_fds=True,
        start_new_session=True,
        preexec_fn=_child_setup(os.getpid()),
    )


_EXITING_CHILD = "import time,sys; sys.stdout.write(str(time.time_ns())); sys.stdout.flush()"


def measure_exit(samples: int) -> list[float]:
    """Informative: a child's last statement -> the parent sees it exited (waitpid), in ms;
    what a minimal agent costs between closing its checkpoint and being gone."""
    latencies: list[float] = []
    for _ in range(samples):
        child = subprocess.Popen([sys.executable, "-c", _EXITING_CHILD], stdout=subprocess.PIPE)
        out = child.stdout.read() if child.stdout else b"0"
        child.wait()
        latencies.append(ms(time.time_ns() - int(out)))
        if child.stdout:
            child.stdout.close()
    return latencies


# --------------------------------------------------------------------------------------------
# Handoff: a workflow of gate-less phases played by a tiny timestamping agent
# --------------------------------------------------------------------------------------------

AGENT = """\
import time
_started = time.time_ns()
import os, sys

checkpoint_dir, phase, feature, run, out_dir = sys.argv[1:6]
number = int(phase.rsplit("-", 1)[1])
name = "%03d-bench%d-complete.md" % (100 + number, number)
text = (
    "# Checkpoint: " + name + "\\n"
    "**From:** Bench\\n"
    "**To:** Bench\\n"
    "**Timestamp:** 2026-01-01 00:00:00\\n"
    "**Feature:** " + feature + "\\n"
    "**Run:** " + run + "\\n"
    "**Status:** complete\\n\\n"
    "## Summary\\nphase " + phase + " done\\n"
)
fd = os.open(os.path.join(checkpoint_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, text.encode())
os.close(fd)
_closed = time.time_ns()
with open(os.path.join(out_dir, feature + "." + phase + ".times"), "w") as f:
    f.write("%d %d\\n" % (_started, _closed))
"""


def completion_name(number: int) -> str:
    return f"{100 + number:03d}-bench{number}-complete.md"


def bench_plugin(count: int) -> object:
    """A plugin registering ``bench-1`` ... ``bench-N``: no gates, each phase triggered by the
    previous one's completion checkpoint."""
    from tmops_hookspecs import PhaseSpec, hookimpl

    class BenchPlugin:
        @hookimpl
        def tmops_register_phases(self) -> list[PhaseSpec]:
            return [
                PhaseSpec(
                    name=f"bench-{number}",
                    role=f"bench{number}",
                    instructions="benchmark agent",
                    prompt="write {completion_checkpoint}",
                    completion_checkpoint=completion_name(number),
                    trigger_checkpoint=completion_name(number - 1) if number > 1 else None,
                    gates=(),
                )
                for number in range(1, count + 1)
            ]

    return BenchPlugin()


class Tracer:
    """Records spans (label, thread, start, end) and points in ``time.time_ns`` (the clock the
    agents use) by wrapping functions on the handoff path; ``close`` restores them all."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, int, int]] = []
        self.points: list[tuple[str, str, int]] = []
        self.missing: list[str] = []
        self._undo: list[tuple[Any, str, Any]] = []
        self._lock = threading.Lock()

    def point(self, label: str) -> None:
        now = time.time_ns()
        with self._lock:
            self.points.append((label, threading.current_thread().name, now))

    def wrap(
        self,
        owner: Any,
        name: str,
        label: str | Callable[..., str],
        after: Callable[[Any], None] | None = None,
    ) -> None:
        if isinstance(owner, type):
            original = owner.__dict__.get(name)
        else:
            original = getattr(owner, name, None)
        if original is None:  # the source changed under us: profile what is still there
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            return
        spans, lock = self.spans, self._lock

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time_ns()
            try:
                result = original(*args, **kwargs)
            finally:
                end = time.time_ns()
                text = label(*args, **kwargs) if callable(label) else label
                with lock:
                    spans.append((text, threading.current_thread().name, start, end))
            if after is not None:
                after(result)
            return result

        self._undo.append((owner, name, original))
        setattr(owner, name, wrapper)

    def close(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def _git_label(_git: Any, *args: str, **_: Any) -> str:
    words = list(args)
    while words and words[0] == "-c":
        words = words[2:]
    return "git " + (words[0] if words else "?")


def install_tracer() -> Tracer:
    import tmops_core.git as git_mod
    import tmops_core.plugins as plugins_mod
    import tmops_core.runner as runner_mod
    import tmops_core.store as store_mod
    import tmops_core.supervisor as sup

    tracer = Tracer()
    wrap = tracer.wrap

    def exited(result: Any) -> None:
        if result:
            tracer.point("exit_detected")

    def outcome(result: Any) -> None:
        if result is not None and threading.current_thread().name.startswith("run-"):
            tracer.point("outcome_seen")

    wrap(runner_mod._Arrivals, "__call__", "inotify_callback")
    wrap(sup.AgentProcess, "_has_exited", "has_exited", after=exited)
    wrap(sup, "_terminate", "sweep")
    wrap(sup.AgentProcess, "_finish", "finish")
    wrap(sup.AgentProcess, "wait", "wait", after=outcome)
    wrap(sup.AgentProcess, "start", "agent_start")
    wrap(sup.AgentProcess, "_popen_now", "popen")
    wrap(runner_mod.RunDriver, "_attempt", "attempt")
    wrap(runner_mod.RunDriver, "_judge", "judge")
    wrap(runner_mod.RunDriver, "_run_phase", "run_phase")
    wrap(runner_mod.RunDriver, "_write_trigger", "write_trigger")
    wrap(runner_mod.RunDriver, "emit", "emit")
    wrap(runner_mod, "parse_checkpoint", "parse_checkpoint")
    wrap(runner_mod, "run_validators", "run_validators")
    wrap(git_mod.Git, "run", _git_label)
    wrap(git_mod.Git, "commit_all", "commit_all")
    for method in ("start_attempt", "attempt_process", "finish_attempt", "add_event"):
        wrap(store_mod.Store, method, f"store.{method}")
    for method in ("phase_started", "phase_finished"):
        wrap(plugins_mod.Plugins, method, f"hook.{method}")
    return tracer


# The critical path from "checkpoint closed" to "next agent's first statement", as milestones
# in order; each step runs from the previous milestone to this one. Kinds: "point" (a tracer
# point), "end"/"start" (of a span with that label), "agent" (the next agent's first statement).
MILESTONES: list[tuple[str, str, str]] = [
    ("agent exits + exit seen (pidfd poll)", "point", "exit_detected"),
    ("process-tree sweep (_terminate: /proc scan)", "end", "sweep"),
    ("drain output + reap (_finish)", "end", "finish"),
    ("runner notices outcome (wait poll)", "point", "outcome_seen"),
    ("2 events + provider.finish (rest of _attempt)", "end", "attempt"),
    ("parse + validate + gates (_judge)", "end", "judge"),
    ("git commit_all (git status --porcelain)", "end", "commit_all"),
    ("store finish_attempt (transition txn)", "end", "store.finish_attempt"),
    ("transition event + phase_finished hooks", "end", "run_phase"),
    ("next phase: trigger + git rev-parse HEAD", "end", "git rev-parse"),
    ("git update-ref (phase-start marker)", "end", "git update-ref"),
    ("store start_attempt", "end", "store.start_attempt"),
    ("phase_started hooks", "end", "hook.phase_started"),
    ("request/invocation/env build", "start", "agent_start"),
    ("log open + spawner thread handoff", "start", "popen"),
    ("Popen (fork+exec, preexec_fn)", "end", "popen"),
    ("child interpreter start -> first statement", "agent", ""),
]
_NOT_TOTALLED = {"run_phase", "attempt", "wait", "has_exited", "inotify_callback"}


def _first_at_or_after(items: list[tuple[int, str]], label: str, t: int, limit: int) -> int | None:
    for when, what in items:
        if what == label and t <= when <= limit:
            return when
    return None


def analyse_handoff(tracer: Tracer, windows: list[tuple[int, int, int]]) -> dict[str, Any]:
    """Per handoff (close_i, start_i+1, close_i+1): the critical-path steps, the time of each
    span label between close_i and start_i+1, and the inotify detection running in parallel.

    A milestone may land after the next agent's first statement (the parent's ``Popen``
    returns once the child has exec'd, and the child can be running Python by the time the
    spawning thread is scheduled again): it is looked for up to the next agent's close and
    clipped to its start, so the steps always add up to the handoff."""
    sources = {
        "point": sorted((t, label) for label, _, t in tracer.points),
        "start": sorted((s, label) for label, _, s, _ in tracer.spans),
        "end": sorted((e, label) for label, _, _, e in tracer.spans),
    }
    steps: dict[str, list[float]] = defaultdict(list)
    totals: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, list[int]] = defaultdict(list)
    parallel: list[float] = []
    for closed, started, horizon in windows:
        previous = closed
        for title, kind, label in MILESTONES:
            when = started if kind == "agent" else None
            if kind != "agent":
                when = _first_at_or_after(sources[kind], label, previous, horizon)
            if when is None:
                continue
            when = min(when, started)
            steps[title].append(ms(when - previous))
            previous = when
        callback = _first_at_or_after(sources["start"], "inotify_callback", closed, started)
        if callback is not None:
            parallel.append(ms(callback - closed))
        inside: dict[str, list[int]] = defaultdict(list)
        for label, _, start, end in tracer.spans:
            low, high = max(start, closed), min(end, started)
            if label not in _NOT_TOTALLED and high > low:
                inside[label].append(high - low)
        for label, parts in inside.items():
            totals[label].append(ms(sum(parts)))
            calls[label].append(len(parts))
    return {
        "critical_path_ms": {t: dist(steps[t]) for t, _, _ in MILESTONES if t in steps},
        "span_totals_in_window_ms": {
            label: {**dist(values), "calls_per_handoff_p50": percentile(calls[label], 50)}
            for label, values in sorted(totals.items())
        },
        "inotify_detection_parallel_ms": dist(parallel),
    }


def _store_synchronous(repo: Path) -> str | None:
    """The ``PRAGMA synchronous`` of a tmops store connection (FULL: an fsync per commit)."""
    from tmops_core.store import STORE_NAME, Store

    store = Store.open_existing(repo / ".tmops" / STORE_NAME)
    if store is None:
        return None
    try:
        value = store._db.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        store.close()
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(int(value), str(value))


def _handoff_service(args: argparse.Namespace, work: Path) -> tuple[Any, Path, Path, list[str]]:
    """A scratch repository and a Service whose workflow is bench-1..bench-N (command agent)."""
    from tmops_core.config import LoadedConfig, parse_config
    from tmops_core.demo_project import create_demo_project
    from tmops_core.plugins import create_plugin_manager
    from tmops_core.service import Service

    repo = work / "handoff-repo"
    create_demo_project(repo)
    agent = work / "agent.py"
    agent.write_text(AGENT, encoding="utf-8")
    times_dir = work / "agent-times"
    times_dir.mkdir()
    phases = [f"bench-{n}" for n in range(1, args.phases + 1)]
    argv = [str(agent), "{checkpoint_dir}", "{phase}", "{feature}", "{run}", str(times_dir)]
    config = parse_config(
        {
            "providers": {
                "command": {
                    "command": sys.executable,
                    "args": argv,
                    "timeout_s": 120,
                    "idle_timeout_s": 60,
                }
            },
            "features": {
                "default_provider": "command",
                "default_phases": phases,
                "checkpoint_timeout": 30,
                "max_retries": 0,
            },
            "telemetry": {"level": "warning"},
        },
        source="benchmarks/run.py",
    )
    plugins = create_plugin_manager(extra=[("bench", bench_plugin(args.phases))])
    missing = [p for p in phases if p not in plugins.phases()]
    if missing:
        raise RuntimeError(f"the bench plugin's phases are not registered: {missing}")
    return Service(LoadedConfig(config, None), plugins), repo, times_dir, phases


def _drive_runs(
    args: argparse.Namespace, service: Any, repo: Path, features: list[str], probe: Path
) -> dict[str, Any]:
    """For each feature: a slice of the floor samples, then init, start and serve the engine
    in this thread until idle. Floors and runs alternate, so a change of machine load during
    the benchmark touches both alike."""
    from tmops_core.features import InitRequest

    per_slot = -(-args.floor_samples // (len(features) + 1))  # ceil
    out: dict[str, Any] = {"inotify": [], "spawn": [], "init": [], "engine_s": 0.0}

    def floors(slot: int) -> None:
        out["inotify"] += measure_inotify(per_slot, probe / str(slot))
        out["spawn"] += measure_spawn(per_slot)

    tracer = install_tracer()
    try:
        for slot, feature in enumerate(features):
            floors(slot)
            t0 = time.perf_counter_ns()
            service.init(InitRequest(feature=feature, workspace=repo))
            out["init"].append(ms(time.perf_counter_ns() - t0))
            service.start(feature, workspace=repo, spawn=False)
            t0 = time.perf_counter_ns()
            service.serve_engine(workspace=repo, idle_exit_s=0.05)
            out["engine_s"] += (time.perf_counter_ns() - t0) / 1e9
        floors(len(features))
    finally:
        tracer.close()
    statuses = {f: service.status(f, workspace=repo)["status"] for f in features}
    bad = {f: s for f, s in statuses.items() if s != "completed"}
    if bad:
        raise RuntimeError(f"benchmark runs did not complete: {bad} (see {repo}/.tmops)")
    out["tracer"] = tracer
    return out


def run_handoff(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    from tmops_core.events import configure_logging

    configure_logging("warning")
    service, repo, times_dir, phases = _handoff_service(args, work)
    features = [f"hand-{n:02d}" for n in range(1, args.rounds + 1)]
    try:
        driven = _drive_runs(args, service, repo, features, work / "inotify-probe")
    finally:
        service.close()
    tracer, inotify, spawn = driven["tracer"], driven["inotify"], driven["spawn"]
    handoffs: list[float] = []
    windows: list[tuple[int, int, int]] = []
    for feature in features:
        marks = []
        for phase in phases:
            started, closed = (times_dir / f"{feature}.{phase}.times").read_text().split()
            marks.append((int(started), int(closed)))
        for (_, closed), (started, next_closed) in itertools.pairwise(marks):
            handoffs.append(ms(started - closed))
            windows.append((closed, started, next_closed))

    extra = max(10, args.floor_samples // 2)  # informative samples, not floors
    like_total, like_fork, like_interp = measure_spawn_like_tmops(extra)
    inotify_d, spawn_d, handoff_d = dist(inotify), dist(spawn), dist(handoffs)
    floor_p50 = round(inotify_d["p50"] + spawn_d["p50"], 3)
    floor_p95 = round(inotify_d["p95"] + spawn_d["p95"], 3)
    r50 = ratio(handoff_d["p50"], floor_p50)
    results["handoff"] = {
        "description": "completion checkpoint closed -> next agent's first statement "
        f"({args.rounds} runs x {args.phases} gate-less phases, command provider, in-process "
        "engine)",
        "handoff_ms": handoff_d,
        "floor": {
            "inotify_ms": inotify_d,
            "spawn_ms": spawn_d,
            "p50_ms": floor_p50,
            "p95_ms": floor_p95,
            "definition": "p50(inotify) + p50(spawn); p95(inotify) + p95(spawn)",
        },
        "ratio_p50": r50,
        "ratio_p95": ratio(handoff_d["p95"], floor_p95),
        "engine_wall_s": round(driven["engine_s"], 3),
        "profile": {
            **analyse_handoff(tracer, windows),
            "spawn_like_tmops_outside_engine_ms": {
                "total": dist(like_total),
                "popen_fork_exec": dist(like_fork),
                "child_interpreter_to_first_statement": dist(like_interp),
            },
            "python_exit_seen_ms": dist(measure_exit(extra)),
            "store_synchronous": _store_synchronous(repo),
            "not_traced": tracer.missing,
        },
    }
    results["targets"].append(target(TARGET_NAMES["handoff"][0], r50, HANDOFF_TARGET))
    results.setdefault("init", {})["service_init_ms_handoff_repo"] = dist(driven["init"])


# --------------------------------------------------------------------------------------------
# Service.init latency
# --------------------------------------------------------------------------------------------


def _default_service() -> Any:
    from tmops_core.config import LoadedConfig, parse_config
    from tmops_core.events import configure_logging
    from tmops_core.plugins import create_plugin_manager
    from tmops_core.service import Service

    configure_logging("warning")
    return Service(LoadedConfig(parse_config({}), None), create_plugin_manager())


def run_init(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    from tmops_core.demo_project import create_demo_project
    from tmops_core.features import InitRequest

    repo = work / "init-repo"
    create_demo_project(repo)
    service = _default_service()
    samples: list[float] = []
    try:
        for n in range(1, args.init_samples + 1):
            t0 = time.perf_counter_ns()
            service.init(InitRequest(feature=f"init-{n:02d}", workspace=repo))
            samples.append(ms(time.perf_counter_ns() - t0))
    finally:
        service.close()
    results.setdefault("init", {})["service_init_ms"] = dist(samples)


# --------------------------------------------------------------------------------------------
# MCP: tmops_get_status over stdio vs a no-op tool, and cold start
# --------------------------------------------------------------------------------------------

NOOP_SERVER = '''\
from pydantic import BaseModel
from mcp.server.mcpserver import MCPServer


class Pong(BaseModel):
    ok: bool
    feature: str


mcp = MCPServer("noop", version="0.0.0")


@mcp.tool()
def noop(feature: str) -> Pong:
    """Do nothing and say so."""
    return Pong(ok=True, feature=feature)


if __name__ == "__main__":
    mcp.run()
'''

MCP_FEATURE = "status-bench"
STATUS_ARGS = {"feature": MCP_FEATURE}
MINIMAL_ARGS = {"feature": MCP_FEATURE, "include_sessions": False, "include_checkpoints": False}


def tmops_command() -> list[str]:
    script = Path(sys.executable).with_name("tmops")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tmops_core.cli"]


def prepare_mcp_repo(work: Path) -> Path:
    """A project with one feature whose first two phases are done (so status has checkpoints
    to list), under the default config and plugins, as `tmops mcp` will see it."""
    from tmops_core.demo_project import create_demo_project
    from tmops_core.features import InitRequest

    repo = work / "mcp-repo"
    create_demo_project(repo)
    service = _default_service()
    try:
        result = service.init(InitRequest(feature=MCP_FEATURE, workspace=repo))
        specs = service.plugins.phases()
        for name in service.config.features.default_phases[:2]:
            spec = specs[name].spec
            for checkpoint in filter(None, (spec.trigger_checkpoint, spec.completion_checkpoint)):
                (result.checkpoint_dir / checkpoint).write_text(
                    f"# Checkpoint: {checkpoint}\n**From:** Bench\n**To:** Bench\n"
                    f"**Feature:** {MCP_FEATURE}\n**Run:** {result.run}\n**Status:** complete\n",
                    encoding="utf-8",
                )
    finally:
        service.close()
    return repo


def _server_params(argv: list[str], cwd: Path) -> Any:
    from mcp import StdioServerParameters

    return StdioServerParameters(command=argv[0], args=argv[1:], cwd=str(cwd))


async def _timed_calls(
    sessions: list[tuple[str, Any, str, dict[str, Any]]], warmup: int, calls: int
) -> dict[str, list[float]]:
    """One call on each session in turn, ``warmup + calls`` times; the last ``calls`` count."""
    out: dict[str, list[float]] = {key: [] for key, *_ in sessions}
    for index in range(warmup + calls):
        for key, session, tool, arguments in sessions:
            t0 = time.perf_counter_ns()
            result = await session.call_tool(tool, arguments)
            elapsed = time.perf_counter_ns() - t0
            if result.is_error:
                raise RuntimeError(f"{tool} failed: {result.content}")
            if index >= warmup:
                out[key].append(ms(elapsed))
    return out


async def _mcp_round_trips(
    status_argv: list[str], noop_argv: list[str], repo: Path, args: argparse.Namespace, errlog: Any
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, list[float]]]:
    from mcp import ClientSession, stdio_client

    # The client's share of each round trip: the SDK client re-validates the structured
    # content against the tool's output schema on every call (validate_tool_result).
    validation: dict[str, list[float]] = defaultdict(list)
    original = ClientSession.validate_tool_result

    async def timed_validate(self: Any, name: str, result: Any) -> None:
        t0 = time.perf_counter_ns()
        try:
            await original(self, name, result)
        finally:
            validation[name].append(ms(time.perf_counter_ns() - t0))

    ClientSession.validate_tool_result = timed_validate  # type: ignore[method-assign]
    sizes: dict[str, int] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            opened = {}
            for key, argv in (("noop", noop_argv), ("status", status_argv)):
                streams = await stack.enter_async_context(
                    stdio_client(_server_params(argv, repo), errlog=errlog)
                )
                opened[key] = await stack.enter_async_context(ClientSession(*streams))
                await opened[key].initialize()
            sessions = [
                ("noop", opened["noop"], "noop", {"feature": MCP_FEATURE}),
                ("status", opened["status"], "tmops_get_status", STATUS_ARGS),
                # informative: the same server without the optional sessions and checkpoints
                ("status_minimal", opened["status"], "tmops_get_status", MINIMAL_ARGS),
            ]
            for key, session, tool, arguments in sessions:
                first = await session.call_tool(tool, arguments)
                if first.is_error:
                    raise RuntimeError(f"{tool} failed: {first.content}")
                sizes[key] = len(first.model_dump_json(by_alias=True, exclude_none=True))
            latencies = await _timed_calls(sessions, args.warmup, args.calls)
    finally:
        ClientSession.validate_tool_result = original  # type: ignore[method-assign]
    statuses = validation["tmops_get_status"][-2 * args.calls :]
    client = {
        "noop": validation["noop"][-args.calls :],
        "status": statuses[0::2],
        "status_minimal": statuses[1::2],
    }
    return latencies, sizes, client


async def _server_side_in_process(repo: Path, samples: int) -> dict[str, dict[str, Any]]:
    """Each server's ``call_tool`` in this process (argument validation, the tool, conversion
    and output validation of the result; no transport), and a JSON dump + parse of the result."""
    from mcp.types import CallToolResult

    from tmops_core.mcp_server import build_server

    namespace: dict[str, Any] = {"__name__": "noop_in_process"}
    exec(compile(NOOP_SERVER, "noop_server.py", "exec"), namespace)  # noqa: S102 - our own code
    service = _default_service()
    out: dict[str, dict[str, Any]] = {}
    try:
        servers = (
            ("noop", namespace["mcp"], "noop"),
            ("status", build_server(service, workspace=repo), "tmops_get_status"),
        )
        for key, server, tool in servers:
            call: list[float] = []
            codec: list[float] = []
            for index in range(samples + 20):
                t0 = time.perf_counter_ns()
                result = await server.call_tool(tool, {"feature": MCP_FEATURE})
                t1 = time.perf_counter_ns()
                text = result.model_dump_json(by_alias=True, exclude_none=True)
                CallToolResult.model_validate_json(text)
                t2 = time.perf_counter_ns()
                if index >= 20:
                    call.append(ms(t1 - t0))
                    codec.append(ms(t2 - t1))
            out[key] = {"call_tool_ms": dist(call), "json_dump_and_parse_ms": dist(codec)}
    finally:
        service.close()
    return out


def _status_in_process(repo: Path, samples: int) -> list[float]:
    """``Service.status`` called directly (what the tool does, without MCP)."""
    service = _default_service()
    out = []
    try:
        for index in range(samples + 20):
            t0 = time.perf_counter_ns()
            service.status(MCP_FEATURE, workspace=repo)
            if index >= 20:
                out.append(ms(time.perf_counter_ns() - t0))
    finally:
        service.close()
    return out


async def _cold_start(argv: list[str], cwd: Path, errlog: Any) -> float:
    from mcp import ClientSession, stdio_client

    t0 = time.perf_counter_ns()
    async with (
        stdio_client(_server_params(argv, cwd), errlog=errlog) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        elapsed = time.perf_counter_ns() - t0
    return ms(elapsed)


def _wall_ms(argv: list[str]) -> float:
    t0 = time.perf_counter_ns()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return ms(time.perf_counter_ns() - t0)


def _mcp_status(
    args: argparse.Namespace, status_argv: list[str], noop_argv: list[str], repo: Path, errlog: Any
) -> dict[str, Any]:
    import anyio

    latencies, sizes, client = anyio.run(
        _mcp_round_trips, status_argv, noop_argv, repo, args, errlog
    )
    status_d, noop_d = dist(latencies["status"]), dist(latencies["noop"])
    return {
        "description": f"call_tool round trip over stdio (SDK ClientSession), {args.calls} calls "
        f"after {args.warmup} warm-up, the servers called in turn",
        "status_ms": status_d,
        "floor_noop_ms": noop_d,
        "ratio_p50": ratio(status_d["p50"], noop_d["p50"]),
        "ratio_p95": ratio(status_d["p95"], noop_d["p95"]),
        "status_minimal_ms": dist(latencies["status_minimal"]),
        "profile": {
            "service_status_in_process_ms": dist(_status_in_process(repo, args.calls)),
            "client_validate_tool_result_ms": {k: dist(v) for k, v in client.items()},
            "server_in_process": anyio.run(_server_side_in_process, repo, args.calls),
            "result_json_bytes": sizes,
        },
    }


def _cold_starts(
    args: argparse.Namespace, status_argv: list[str], noop_argv: list[str], repo: Path, errlog: Any
) -> dict[str, Any]:
    import anyio

    tmops_cold, noop_cold, sdk_import, bare = [], [], [], []
    for _ in range(args.cold):
        tmops_cold.append(anyio.run(_cold_start, status_argv, repo, errlog))
        noop_cold.append(anyio.run(_cold_start, noop_argv, repo, errlog))
        sdk_import.append(_wall_ms([sys.executable, "-c", "import mcp.server.mcpserver"]))
        bare.append(_wall_ms([sys.executable, "-c", "pass"]))
    tmops_d, import_d = dist(tmops_cold), dist(sdk_import)
    return {
        "description": "spawn -> initialize answered (SDK stdio client), against the wall time "
        "of importing the SDK in a fresh interpreter; no target",
        "tmops_mcp_ms": tmops_d,
        "noop_server_ms": dist(noop_cold),
        "import_mcp_server_mcpserver_ms": import_d,
        "python_bare_ms": dist(bare),
        "ratio_p50_tmops_vs_import": ratio(tmops_d["p50"], import_d["p50"]),
    }


def run_mcp(
    args: argparse.Namespace, work: Path, results: dict[str, Any], sections: set[str]
) -> None:
    repo = prepare_mcp_repo(work)
    noop = work / "noop_server.py"
    noop.write_text(NOOP_SERVER, encoding="utf-8")
    status_argv = [*tmops_command(), "mcp", "--workspace", str(repo)]
    noop_argv = [sys.executable, str(noop)]
    with open(work / "mcp-servers.log", "w", encoding="utf-8") as errlog:
        if "mcp" in sections:
            status = _mcp_status(args, status_argv, noop_argv, repo, errlog)
            results["mcp_status"] = status
            for name, key in zip(TARGET_NAMES["mcp"], ("ratio_p50", "ratio_p95"), strict=True):
                results["targets"].append(target(name, status[key], STATUS_TARGET))
        if "cold" in sections:
            results["cold_start"] = _cold_starts(args, status_argv, noop_argv, repo, errlog)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        info["mcp_version"] = version("mcp")
        info["watchdog_version"] = version("watchdog")
    with contextlib.suppress(Exception):
        git = shutil.which("git") or "git"
        done = subprocess.run([git, "--version"], capture_output=True, text=True, check=False)
        info["git"] = done.stdout.strip()
    return info


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _row(title: str, d: dict[str, Any], r50: Any = "", r95: Any = "") -> tuple[str, ...]:
    return (title, str(d["n"]), _fmt(d["p50"]), _fmt(d["p95"]), _fmt(r50), _fmt(r95))


def _rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    if handoff := results.get("handoff"):
        floor = handoff["floor"]
        rows += [
            _row("handoff (close -> next agent)", handoff["handoff_ms"],
                 handoff["ratio_p50"], handoff["ratio_p95"]),
            _row("  floor: inotify event", floor["inotify_ms"]),
            _row("  floor: python spawn", floor["spawn_ms"]),
            ("  floor: sum", "", _fmt(floor["p50_ms"]), _fmt(floor["p95_ms"]), "", ""),
        ]  # fmt: skip
    if status := results.get("mcp_status"):
        noop, minimal, prof = (
            status["floor_noop_ms"],
            status["status_minimal_ms"],
            status["profile"],
        )
        rows += [
            _row("tmops_get_status (stdio)", status["status_ms"],
                 status["ratio_p50"], status["ratio_p95"]),
            _row("  floor: no-op tool (stdio)", noop),
            _row("  status without sessions/checkpoints", minimal,
                 ratio(minimal["p50"], noop["p50"]), ratio(minimal["p95"], noop["p95"])),
        ]  # fmt: skip
        for key in ("status", "noop"):
            server = prof["server_in_process"][key]
            rows += [
                _row(f"  {key}: server call_tool in-process", server["call_tool_ms"]),
                _row(f"  {key}: SDK client output validation",
                     prof["client_validate_tool_result_ms"][key]),
                _row(f"  {key}: result JSON dump+parse", server["json_dump_and_parse_ms"]),
            ]  # fmt: skip
        rows.append(_row("  Service.status in-process", prof["service_status_in_process_ms"]))
    if cold := results.get("cold_start"):
        rows += [
            _row("cold start: tmops mcp -> init", cold["tmops_mcp_ms"],
                 cold["ratio_p50_tmops_vs_import"]),
            _row("  no-op server -> init", cold["noop_server_ms"]),
            _row("  python -c 'import mcp.server.mcpserver'",
                 cold["import_mcp_server_mcpserver_ms"]),
            _row("  python -c pass", cold["python_bare_ms"]),
        ]  # fmt: skip
    for key, value in results.get("init", {}).items():
        rows.append(_row(key, value))
    return rows


def _print_handoff_profile(out: Any, handoff: dict[str, Any]) -> None:
    profile = handoff["profile"]
    out.write("\nhandoff critical path, in order (p50 / p95 ms of each step):\n")
    for title, d in profile["critical_path_ms"].items():
        out.write(f"  {title:<48} {_fmt(d['p50']):>8} {_fmt(d['p95']):>8}\n")
    extras = {
        "inotify detection (watcher thread, in parallel)": profile["inotify_detection_parallel_ms"],
        "python child: last statement -> exit seen": profile["python_exit_seen_ms"],
        **{
            f"tmops-style spawn outside the engine: {key}": d
            for key, d in profile["spawn_like_tmops_outside_engine_ms"].items()
        },
    }
    for title, d in extras.items():
        out.write(f"  [{title}] {_fmt(d['p50'])} / {_fmt(d['p95'])}\n")
    out.write(f"  [store PRAGMA synchronous] {profile['store_synchronous']}\n")
    if profile["not_traced"]:
        out.write(f"  [not traced: missing in the source] {', '.join(profile['not_traced'])}\n")


def print_report(results: dict[str, Any]) -> None:
    out = sys.stdout
    meta = results["meta"]
    out.write(
        f"\ntmops benchmarks: python {meta['python']}, {meta['cpu_count']} CPU(s), "
        f"load {meta.get('loadavg_at_start')} -> {meta.get('loadavg_at_end')}\n\n"
    )
    header = ("measure", "n", "p50 ms", "p95 ms", "ratio p50", "ratio p95")
    rows = [header, *_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        cells = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
        out.write("  ".join(cells).rstrip() + "\n")
        if index == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    if results.get("handoff"):
        _print_handoff_profile(out, results["handoff"])
    out.write("\ntargets:\n")
    for item in results["targets"]:
        verdict = "MET" if item["met"] else "MISSED"
        out.write(
            f"  [{verdict:>6}] {item['name']}: ratio {_fmt(item['value'])} "
            f"(limit {_fmt(item['limit'])})\n"
        )
    for section, error in results["errors"].items():
        out.write(f"  [ ERROR] {section}: {error.strip().splitlines()[-1]}\n")
    out.flush()


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="tmops benchmarks: ratios against floors measured in the same run."
    )
    add = parser.add_argument
    add("--rounds", type=int, default=8, help="handoff runs, each of --phases (default 8)")
    add("--phases", type=int, default=6, help="phases per handoff run (default 6)")
    add("--floor-samples", type=int, default=60, help="samples of each floor (default 60)")
    add("--calls", type=int, default=300, help="timed MCP calls per server (default 300)")
    add("--warmup", type=int, default=30, help="MCP warm-up calls (default 30)")
    add("--cold", type=int, default=5, help="cold-start samples (default 5)")
    add("--init-samples", type=int, default=10, help="Service.init samples (default 10)")
    add("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    add("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    add("--keep", action="store_true", help="keep the scratch folder")
    add("--check", action="store_true", help="exit 1 if a target is missed or not measured")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.phases < 2 or args.floor_samples < 2 or args.calls < 1:
        parser.error("need --rounds >= 1, --phases >= 2, --floor-samples >= 2, --calls >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = set(args.only or SECTIONS)
    results: dict[str, Any] = {"meta": machine_info(), "targets": [], "errors": {}}
    results["meta"]["arguments"] = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
    }
    work = Path(tempfile.mkdtemp(prefix="tmops-bench-"))
    results["meta"]["scratch"] = str(work)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("handoff", lambda: run_handoff(args, work, results)),
        ("mcp", lambda: run_mcp(args, work, results, sections)),
        ("init", lambda: run_init(args, work, results)),
    ]
    try:
        for name, step in steps:
            wanted = sections & ({"mcp", "cold"} if name == "mcp" else {name})
            if not wanted:
                continue
            print(f"running {' + '.join(sorted(wanted))}...", flush=True)
            try:
                step()
            except Exception:  # a broken section is reported; the others still run
                results["errors"][name] = traceback.format_exc()
                traceback.print_exc()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):
        results["meta"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    measured = {item["name"] for item in results["targets"]}
    for section, names in TARGET_NAMES.items():
        for name in names:
            if section in sections and name not in measured:
                results["targets"].append(
                    {"name": name, "value": None, "limit": None, "met": False,
                     "error": "not measured (see errors)"}
                )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_report(results)
    print(f"\nresults: {args.out}")
    return 1 if args.check and not all(item["met"] for item in results["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
