"""``tmops list`` with 1,000 features against ``tmops list`` with 10: a listing that stays
linear costs little more than the command's own start-up."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from bench_cli import compile_sources, demo_project, time_in_turn, tmops_argv
from bench_stats import dist, ratio, target

LIST_TARGET = 3.0  # 1,000 features within 3x 10 (p50)
LIST_TARGET_NAMES = ("tmops list p50: 1000 features <= 3x 10 features",)
TEMPLATE = "list-0000"


def _clone_features(service: Any, repo: Path, count: int) -> None:
    """``count - 1`` more features shaped like the one ``tmops init`` made (its records, its
    FEATURES.txt line and its ``.tmops`` folder), without a git worktree each: a listing reads
    none of them, and 1,000 real inits take minutes."""
    import attrs

    from tmops_core.workspace.layout import Layout
    from tmops_core.workspace.project_files import FeatureLine, write_feature_line

    layout = Layout(repo)
    store = service._create_store(layout)
    feature = store.feature(TEMPLATE)
    run = store.run(TEMPLATE, feature.current_run)
    for n in range(1, count):
        name = f"list-{n:04d}"
        store.record_init(attrs.evolve(feature, name=name), attrs.evolve(run, feature=name))
        line = FeatureLine(name, run.status, run.updated_at, feature.branch)
        write_feature_line(layout, line, replace=False)
        shutil.copytree(layout.tmops_dir / TEMPLATE, layout.tmops_dir / name, symlinks=True)


def run_list(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    compile_sources()
    repos = {}
    for count in (10, 1000):
        service, repo = demo_project(work, f"list-{count}", [TEMPLATE])
        try:
            _clone_features(service, repo, count)
        finally:
            service.close()
        repos[count] = repo
    times = time_in_turn(
        {
            f"list_{count}": [*tmops_argv(), "list", "--json", "--workspace", str(repo)]
            for count, repo in repos.items()
        },
        args.cli_samples,
        cwd=work,
    )
    section: dict[str, Any] = {key: dist(values) for key, values in times.items()}
    section["ratio_p50"] = ratio(section["list_1000"]["p50"], section["list_10"]["p50"])
    results["list"] = section
    results["targets"].append(target(LIST_TARGET_NAMES[0], section["ratio_p50"], LIST_TARGET))
