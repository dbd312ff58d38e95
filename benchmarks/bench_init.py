"""``Service.init`` latency, and the service under the default config it measures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench_stats import dist, ms


def default_service() -> Any:
    from tmops_core.config import LoadedConfig, parse_config
    from tmops_core.events import configure_logging
    from tmops_core.plugins import create_plugin_manager
    from tmops_core.service.operations import Service

    configure_logging("warning")
    return Service(LoadedConfig(parse_config({}), None), create_plugin_manager())


def run_init(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    from tmops_core.service.demo_project import create_demo_project
    from tmops_core.workspace.features import InitRequest

    repo = work / "init-repo"
    create_demo_project(repo)
    service = default_service()
    samples: list[float] = []
    try:
        for n in range(1, args.init_samples + 1):
            t0 = time.perf_counter_ns()
            service.init(InitRequest(feature=f"init-{n:02d}", workspace=repo))
            samples.append(ms(time.perf_counter_ns() - t0))
    finally:
        service.close()
    results.setdefault("init", {})["service_init_ms"] = dist(samples)
