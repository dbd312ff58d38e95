#!/usr/bin/env python
"""tmops performance benchmarks: handoff latency, ``tmops_get_status`` over stdio, cold start,
``tmops list`` at 1,000 features, ``tmops status``'s start-up, ``tmops start`` under load.

Every number is compared with a *floor* measured in the same run on the same machine, so the
verdicts are ratios, never absolute times::

    .venv/bin/python benchmarks/run.py [--rounds N] [--out benchmarks/results/results.json]
                                       [--check] [--only handoff|mcp|cold|init|list|cli|start]

It prints a table and whether each target is met, and writes every distribution to JSON. The
exit code is 0 whatever the results; with ``--check`` it is 1 when a target is missed (or could
not be measured). See benchmarks/README.md for what is measured and how.

This file holds the command line, the table, the JSON and the targets; the sections are
``bench_handoff.py`` (with ``bench_floors.py`` and ``bench_profile.py``), ``bench_mcp.py``
and ``bench_init.py``, and the statistics ``bench_stats.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_cli import CLI_TARGET_NAMES, run_cli
from bench_handoff import HANDOFF_TARGET_NAMES, run_handoff
from bench_init import run_init
from bench_list import LIST_TARGET_NAMES, run_list
from bench_mcp import STATUS_TARGET_NAMES, run_mcp
from bench_start import START_TARGET_NAMES, run_start
from bench_stats import ratio

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "results.json"
SECTIONS = ("handoff", "mcp", "cold", "init", "list", "cli", "start")

TARGET_NAMES = {
    "handoff": HANDOFF_TARGET_NAMES,
    "mcp": STATUS_TARGET_NAMES,
    "list": LIST_TARGET_NAMES,
    "cli": CLI_TARGET_NAMES,
    "start": START_TARGET_NAMES,
}

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
    if listing := results.get("list"):
        rows += [
            _row("tmops list, 1000 features", listing["list_1000"], listing["ratio_p50"]),
            _row("  floor: tmops list, 10 features", listing["list_10"]),
        ]
    if cli := results.get("cli"):
        rows += [
            _row("tmops status (process)", cli["status"], cli["ratio_p50"]),
            _row("  floor: python -c 'import click'", cli["import_click"]),
            _row("  python -c pass", cli["python_bare"]),
        ]
    if start := results.get("start"):
        rows += [
            _row(f"tmops start, {start['in_flight']} runs in flight", start["loaded"],
                 start["ratio_p50"]),
            _row("  floor: tmops start, idle project", start["idle"]),
            ("  loaded engine: CPU share meanwhile", "", _fmt(start["loaded_engine_cpu_share"]),
             "", "", ""),
        ]  # fmt: skip
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
    add("--cli-samples", type=int, default=15, help="samples of each command (default 15)")
    add("--in-flight", type=int, default=100, help="runs in flight for start (default 100)")
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
        ("list", lambda: run_list(args, work, results)),
        ("cli", lambda: run_cli(args, work, results)),
        ("start", lambda: run_start(args, work, results)),
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
