"""Handoff latency: a workflow of gate-less phases played by a tiny timestamping agent.

A handoff runs from one agent closing its completion checkpoint to the next agent's first
statement; the agents take both times. It is compared with the floor (an inotify event plus a
Python spawn, :mod:`bench_floors`), measured in slices between the runs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

from bench_floors import measure_exit, measure_inotify, measure_spawn, measure_spawn_like_tmops
from bench_profile import analyse_handoff, install_tracer
from bench_stats import dist, ms, ratio, target

HANDOFF_TARGET = 3.0  # handoff p50 within 3x the floor p50 (inotify event + Python spawn)
HANDOFF_TARGET_NAMES = ("handoff p50 <= 3x floor p50",)

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


def _store_synchronous(repo: Path) -> str | None:
    """The ``PRAGMA synchronous`` of a tmops store connection (FULL: an fsync per commit)."""
    from tmops_core.store import STORE_NAME, open_existing_store

    store = open_existing_store(repo / ".tmops" / STORE_NAME)
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
    from tmops_core.plugins import create_plugin_manager
    from tmops_core.service.demo_project import create_demo_project
    from tmops_core.service.operations import Service

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
    from tmops_core.workspace.features import InitRequest

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
            # the bench's agents do not read the task spec: start on init's template
            service.start(feature, workspace=repo, spawn=False, force=True)
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


def handoff_windows(
    times_dir: Path, features: list[str], phases: list[str]
) -> list[tuple[int, int, int]]:
    """Each handoff of the runs of ``features``, as the agents timed it (ns): the checkpoint
    closed, the next agent's first statement, that agent's checkpoint closed."""
    windows = []
    for feature in features:
        marks = []
        for phase in phases:
            started, closed = (times_dir / f"{feature}.{phase}.times").read_text().split()
            marks.append((int(started), int(closed)))
        for (_, closed), (started, next_closed) in itertools.pairwise(marks):
            windows.append((closed, started, next_closed))
    return windows


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
    windows = handoff_windows(times_dir, features, phases)
    handoffs = [ms(started - closed) for closed, started, _ in windows]

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
    results["targets"].append(target(HANDOFF_TARGET_NAMES[0], r50, HANDOFF_TARGET))
    results.setdefault("init", {})["service_init_ms_handoff_repo"] = dist(driven["init"])
