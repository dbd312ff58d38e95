"""The CLI's read commands: ``tmops status`` against ``python -c "import click"``, and the
helpers the other command-line sections share (timing commands in turn, a scratch project)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench_stats import dist, ms, ratio, target

CLI_TARGET = 4.0  # `tmops status` within 4x `python -c "import click"` (p50)
CLI_TARGET_NAMES = ("tmops status p50 <= 4x python -c 'import click' p50",)


def tmops_argv() -> list[str]:
    script = Path(sys.executable).with_name("tmops")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tmops_core.surfaces.cli"]


def bench_env() -> dict[str, str]:
    """The environment of a user's shell: byte code is read from (and written to) the caches,
    as an installed tmops does (a CI image may set PYTHONDONTWRITEBYTECODE)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_sources() -> None:
    """Byte-compile tmops once, so no sample pays for compiling a source that has no cache."""
    import compileall

    import tmops_core
    import tmops_hookspecs
    import tmops_plugins

    for package in (tmops_core, tmops_hookspecs, tmops_plugins):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)


def time_in_turn(
    commands: Mapping[str, Sequence[str]], samples: int, *, cwd: Path, warmup: int = 2
) -> dict[str, list[float]]:
    """Run each command in turn, ``samples`` times after ``warmup`` rounds; wall time in ms of
    each run, per command (in turn, so a change of load hits them all alike)."""
    env = bench_env()
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(warmup + samples):
        for name, argv in commands.items():
            t0 = time.perf_counter_ns()
            done = subprocess.run(
                list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False
            )
            elapsed = ms(time.perf_counter_ns() - t0)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def demo_project(work: Path, name: str, features: Sequence[str]) -> tuple[Any, Path]:
    """A scratch project with ``features`` initialised under the default config."""
    from bench_init import default_service

    from tmops_core.service.demo_project import create_demo_project
    from tmops_core.workspace.features import InitRequest

    repo = work / name
    create_demo_project(repo)
    service = default_service()
    for feature in features:
        service.init(InitRequest(feature=feature, workspace=repo))
    return service, repo


def run_cli(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    compile_sources()
    service, repo = demo_project(work, "cli-repo", ["cli-bench"])
    service.close()
    times = time_in_turn(
        {
            "status": [*tmops_argv(), "status", "cli-bench"],
            "import_click": [sys.executable, "-c", "import click"],
            "python_bare": [sys.executable, "-c", "pass"],
        },
        args.cli_samples,
        cwd=repo,
    )
    section = {key: dist(values) for key, values in times.items()}
    section["ratio_p50"] = ratio(section["status"]["p50"], section["import_click"]["p50"])
    results["cli"] = section
    results["targets"].append(target(CLI_TARGET_NAMES[0], section["ratio_p50"], CLI_TARGET))
