"""``tmops start`` while 100 runs are in flight against ``tmops start`` on an idle project.

Both projects have an engine serving already (``tmops engine`` with a long idle exit), so each
``start`` queues its run and rings the engine's doorbell; only the load differs. The agent is
``sleep``, so the runs stay in flight at their first phase and cost the machine next to
nothing but what tmops itself does for them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from bench_cli import bench_env, compile_sources, time_in_turn, tmops_argv
from bench_stats import dist, ratio, target

START_TARGET = 1.5  # with 100 runs in flight within 1.5x idle (p50)
START_TARGET_NAMES = ("tmops start p50: 100 runs in flight <= 1.5x idle",)
_IN_FLIGHT_WAIT_S = 300.0


def _config(path: Path) -> Path:
    data = {
        "providers": {
            "command": {
                "command": "sleep",
                "args": ["3600"],
                "timeout_s": 7200,
                "idle_timeout_s": 7200,
            }
        },
        "features": {"default_provider": "command", "concurrent_limit": 500},
        "telemetry": {"level": "warning"},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    path.chmod(0o600)
    return path


def _project(work: Path, name: str, features: list[str], config: Path) -> tuple[Any, Path]:
    from tmops_core.config import load_config
    from tmops_core.plugins import create_plugin_manager
    from tmops_core.service.demo_project import create_demo_project
    from tmops_core.service.operations import Service
    from tmops_core.workspace.features import InitRequest

    repo = work / name
    create_demo_project(repo)
    service = Service(load_config(config), create_plugin_manager())
    for feature in features:
        service.init(InitRequest(feature=feature, workspace=repo))
    return service, repo


def _engine(repo: Path, config: Path) -> subprocess.Popen[bytes]:
    """An engine that serves until told to stop (SIGTERM stops it in order)."""
    argv = [*tmops_argv(), "--config", str(config), "engine", "--workspace", str(repo)]
    return subprocess.Popen(
        [*argv, "--idle-exit", "3600"], cwd=repo, env=bench_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_serving(repo: Path) -> None:
    from tmops_core.orchestration.daemon import engine_running
    from tmops_core.workspace.layout import Layout

    deadline = time.monotonic() + 60
    while not engine_running(Layout(repo)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no engine came up for {repo}")
        time.sleep(0.05)


def _wait_in_flight(service: Any, repo: Path, count: int) -> None:
    from tmops_core.workspace.layout import Layout

    store = service._create_store(Layout(repo))
    deadline = time.monotonic() + _IN_FLIGHT_WAIT_S
    while len([a for a in store.live_attempts() if a.pid]) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(store.live_attempts())} of {count} agents started")
        time.sleep(0.2)


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of the process ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_start(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    compile_sources()
    config = _config(work / "start.yaml")
    rounds = args.cli_samples + 2  # the warm-up rounds of time_in_turn
    busy = [f"busy-{n:03d}" for n in range(args.in_flight)]
    sampled = {
        "idle": [f"idle-{n:03d}" for n in range(rounds)],
        "loaded": [f"loaded-{n:03d}" for n in range(rounds)],
    }
    idle_service, idle_repo = _project(work, "start-idle", sampled["idle"], config)
    loaded_service, loaded_repo = _project(work, "start-loaded", busy + sampled["loaded"], config)
    engines = [_engine(idle_repo, config), _engine(loaded_repo, config)]
    try:
        _wait_serving(idle_repo)
        _wait_serving(loaded_repo)
        for feature in busy:
            loaded_service.start(feature, workspace=loaded_repo, force=True)
        _wait_in_flight(loaded_service, loaded_repo, args.in_flight)
        samples = {name: iter(features) for name, features in sampled.items()}
        repos = {"idle": idle_repo, "loaded": loaded_repo}

        class _Next(list[str]):
            """An argv whose feature is the next unstarted one each time it is iterated."""

            def __init__(self, name: str) -> None:
                super().__init__()
                self.name = name

            def __iter__(self) -> Any:
                feature = next(samples[self.name])
                argv = [*tmops_argv(), "--config", str(config), "start", feature, "--force"]
                return iter([*argv, "--workspace", str(repos[self.name])])

        cpu_before, wall_before = _cpu_s(engines[1].pid), time.monotonic()
        times = time_in_turn(
            {"idle": _Next("idle"), "loaded": _Next("loaded")}, args.cli_samples, cwd=work
        )
        engine_cpu = (_cpu_s(engines[1].pid) - cpu_before) / (time.monotonic() - wall_before)
    finally:
        for engine in engines:
            engine.terminate()
        for engine in engines:
            with contextlib.suppress(subprocess.TimeoutExpired):
                engine.wait(120)
        idle_service.close()
        loaded_service.close()
    section: dict[str, Any] = {key: dist(values) for key, values in times.items()}
    section["in_flight"] = args.in_flight
    # informative: the share of a CPU the loaded engine used meanwhile (its own threads; its
    # agents sleep), which every other process on the machine, `start` included, competes with
    section["loaded_engine_cpu_share"] = round(engine_cpu, 3)
    section["ratio_p50"] = ratio(section["loaded"]["p50"], section["idle"]["p50"])
    results["start"] = section
    results["targets"].append(target(START_TARGET_NAMES[0], section["ratio_p50"], START_TARGET))
