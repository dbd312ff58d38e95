#!/usr/bin/env python
"""The recovery soak: kill the engine at random moments, restart it as a user would, count.

Runs features of the demo task with the scripted agent (its journal on), several at once in one
project, and kills their engine with SIGKILL again and again until ``--kills`` kills are done::

    .venv/bin/python benchmarks/soak.py [--kills 100] [--features 3] [--kills-per-project 25]
        [--max-gap 2.0] [--max-restart-delay 1.0] [--crash-point-share 0.25] [--seed N]
        [--timeout 120] [--out benchmarks/results/soak.json] [--keep] [--check]
        [--known FIGURE ...]

One cycle: wait a random gap (0.05 s to ``--max-gap``), SIGKILL every engine of the project
(or find it already dead at the named crash point it was armed with), wait ``0`` or a random
delay up to ``--max-restart-delay``, then restart with ``tmops start FEATURE`` or ``tmops start
FEATURE --resume`` (chosen at random) in a process of its own, as a user does. A share of the
restarts (``--crash-point-share``) arm the engine they spawn with ``TMOPS_CRASH_AT`` at a random
named point, so kills land on those exact steps too. After ``--kills-per-project`` kills (or
when every run of the project has ended) the runs get ``--timeout`` seconds to end, and the
invariants of ``tests/kill_checks.py`` are checked. Then a new project, until enough kills.

The figures (JSON in ``--out``, text on stdout): **stuck** (a run not ended ``--timeout`` s
after the last restart, or left with no engine serving it for 5 s), **failed** (ended, not
completed), **lost** (uncommitted work, a phase's commit or a checkpoint missing, a dirty
worktree), **miscredited** (work committed under another phase's name), **duplicates** (two
agents of one feature alive at once, or a phase's agent run again after it was accepted),
**orphans** (agent processes or an engine left), **store** (integrity, attempts never closed);
each as findings and as runs affected. Also where the kills landed (``agent:<phase>``,
``handoff:<phase>``, ``queued``: from the store at the moment of the kill), how each restart
went, and how many restarts were made while a killed engine was still a zombie.

Everything happens in a fresh temporary folder (kept with ``--keep``). The exit code is 0
whatever was found; with ``--check`` it is 1 when a finding was made in a figure not named by
``--known`` (a known defect, reported but tolerated until its fix lands). Only engines of the
soak's own projects are ever signalled.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness lives with the tests it shares its checks with

from tests.kill_checks import CATEGORIES, process_state  # noqa: E402
from tests.kill_support import KillProject, kill_engines, kill_project, user_start  # noqa: E402
from tmops_core.orchestration.crashpoints import CRASH_POINTS  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "soak.json"
_MIN_GAP_S = 0.05
#: A project whose engine is found gone this many times in a row is left to end as it can.
_MAX_GONE_IN_A_ROW = 5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="tmops recovery soak: SIGKILL the engine at random moments, restart, check."
    )
    add = parser.add_argument
    add("--kills", type=int, default=100, help="engine kills in all (default 100)")
    add("--features", type=int, default=3, help="features run at once per project (default 3)")
    add("--kills-per-project", type=int, default=25, help="kills before a project's runs are "
        "left to end and checked (default 25)")  # fmt: skip
    add("--max-gap", type=float, default=2.0, help="longest wait before a kill, s (default 2)")
    add(
        "--max-restart-delay",
        type=float,
        default=1.0,
        help="longest wait between a kill and its restart, s; half restart at once (default 1)",
    )
    add(
        "--crash-point-share",
        type=float,
        default=0.25,
        help="share of restarts armed with TMOPS_CRASH_AT at a random point (default 0.25)",
    )
    add("--seed", type=int, default=None, help="random seed (default: from the clock, reported)")
    add(
        "--timeout",
        type=float,
        default=120.0,
        help="how long runs get to end after the last restart, s (default 120)",
    )
    add("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    add("--keep", action="store_true", help="keep the scratch folder")
    add("--check", action="store_true", help="exit 1 if anything was found")
    add("--known", action="append", choices=CATEGORIES, default=[], metavar="FIGURE",
        help="a figure whose findings are a known defect: reported, but no exit 1 under "
        "--check (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.kills < 1 or args.features < 1 or args.kills_per_project < 1:
        parser.error("--kills, --features and --kills-per-project must be at least 1")
    if args.max_gap < _MIN_GAP_S or args.max_restart_delay < 0 or args.timeout <= 0:
        parser.error(f"need --max-gap >= {_MIN_GAP_S}, --max-restart-delay >= 0, --timeout > 0")
    if not 0 <= args.crash_point_share <= 1:
        parser.error("--crash-point-share is a share: 0 to 1")
    return args


def _restart(project: KillProject, rng: random.Random, share: float) -> dict[str, Any]:
    """``tmops start`` one of the project's unfinished features, as a user would."""
    feature = rng.choice(project.active() or sorted(project.inits))
    resume = rng.random() < 0.5
    armed = None
    if rng.random() < share:
        armed = f"{rng.choice(CRASH_POINTS)}:{rng.randint(1, 2)}"
    done = user_start(project, feature, resume=resume, crash_at=armed)
    return {
        "feature": feature,
        "resume": resume,
        "armed": armed,
        "exit_code": done.returncode,
        "message": (done.stdout + done.stderr).strip()[-300:],
    }


def soak_project(
    args: argparse.Namespace, rng: random.Random, base: Path, index: int, budget: int
) -> dict[str, Any]:
    """One project: start its features, kill and restart up to ``budget`` times, check."""
    features = [f"soak-{index}-{n}" for n in range(args.features)]
    project = kill_project(base, features)
    kills: list[dict[str, Any]] = []
    began = time.monotonic()
    try:
        for feature in features:  # the first start spawns the engine; the others queue
            user_start(project, feature, resume=False)
        armed: str | None = None
        gone_in_a_row = 0
        while len(_counted(kills)) < budget and gone_in_a_row < _MAX_GONE_IN_A_ROW:
            gap = rng.uniform(_MIN_GAP_S, args.max_gap)
            time.sleep(gap)
            if not project.active():
                break
            moment = project.moment()
            killed = kill_engines(project)
            if killed:
                how = "sigkill"
            elif armed is not None:
                how = f"crash-point {armed}"  # it died there by itself, before our kill
            else:
                # No engine and nobody killed it: it exited (or never started). A user's
                # start brings it back; a run left with no engine shows up as stuck later.
                kills.append({"how": "none", "restart": _restart(project, rng, 0.0)})
                kills[-1]["counted"] = False
                gone_in_a_row += 1
                continue
            gone_in_a_row = 0
            delay = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, args.max_restart_delay)
            time.sleep(delay)
            # Dead engines not reaped yet when the next one starts (see the stuck figure).
            zombies = [pid for pid in killed if process_state(pid) == "a zombie"]
            # The last restart is never armed: the runs must be free to end.
            last = len(_counted(kills)) + 1 == budget
            restart = _restart(project, rng, 0.0 if last else args.crash_point_share)
            armed = restart["armed"]
            kills.append({
                "at_s": round(time.monotonic() - began, 3), "gap_s": round(gap, 3),
                "how": how, "moment": moment, "restart_delay_s": round(delay, 3),
                "restart": restart, "killed": killed, "zombies_at_restart": zombies,
                "counted": True,
            })  # fmt: skip
            print(f"  kill {len(_counted(kills)):3d} ({how}) at {moment} -> restart "
                  f"{'--resume ' if restart['resume'] else ''}after {delay:.2f} s: "
                  f"exit {restart['exit_code']}", flush=True)  # fmt: skip
        findings = project.finish(timeout=args.timeout)
        statuses = project.statuses()
    finally:
        project.close()
    return {
        "project": str(project.root),
        "features": features,
        "kills": kills,
        "statuses": statuses,
        "findings": findings.by_category,
        "duration_s": round(time.monotonic() - began, 1),
    }


def _counted(kills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [k for k in kills if k["counted"]]


def figures(projects: list[dict[str, Any]]) -> dict[str, Any]:
    """The totals: kills, where they landed, restarts, and findings by category."""
    kills = [k for p in projects for k in _counted(p["kills"])]
    landed: Counter[str] = Counter()
    for kill in kills:
        landed.update(kill["moment"].values())
    named = Counter(k["how"].split(" ", 1)[1] for k in kills if k["how"] != "sigkill")
    restarts = Counter(
        ("--resume" if k["restart"]["resume"] else "plain") + f" exit {k['restart']['exit_code']}"
        for k in kills
    )
    runs = [(p, f) for p in projects for f in p["features"]]
    result: dict[str, Any] = {
        "kills": len(kills),
        "kills_by_kind": dict(Counter(k["how"].split(" ")[0] for k in kills)),
        "kills_at_named_points": dict(sorted(named.items())),
        "kill_moments": dict(sorted(landed.items())),
        "restarts": dict(sorted(restarts.items())),
        "engine_found_gone": sum(1 for p in projects for k in p["kills"] if not k["counted"]),
        "restarts_with_a_dead_engine_unreaped": sum(1 for k in kills if k["zombies_at_restart"]),
        "runs": len(runs),
        "runs_completed": sum(1 for p, f in runs if p["statuses"].get(f) == "completed"),
    }
    for category in CATEGORIES:
        messages = [m for p in projects for m in p["findings"][category]]
        affected = {(p["project"], f) for p in projects for f in p["features"]
                    for m in p["findings"][category] if m.startswith(f"{f}/")}  # fmt: skip
        result[category] = {"findings": len(messages), "runs": len(affected)}
    return result


def print_report(results: dict[str, Any]) -> None:
    fig = results["figures"]
    print(f"\nsoak: {fig['kills']} kills over {fig['runs']} runs in "
          f"{len(results['projects'])} projects, {results['meta']['duration_s']} s "
          f"(seed {results['meta']['seed']})")  # fmt: skip
    print(f"  kills by kind:     {fig['kills_by_kind']}")
    print(f"  at named points:   {fig['kills_at_named_points']}")
    print(f"  runs at the kills: {fig['kill_moments']}")
    print(
        f"  restarts:          {fig['restarts']}; "
        f"{fig['restarts_with_a_dead_engine_unreaped']} while a killed engine was a zombie"
    )
    print(f"  runs completed:    {fig['runs_completed']}/{fig['runs']}")
    print(f"\n  {'figure':<12} {'findings':>8} {'runs':>6}")
    for category in CATEGORIES:
        print(f"  {category:<12} {fig[category]['findings']:>8} {fig[category]['runs']:>6}")
    details = [(p["project"], c, m) for p in results["projects"]
               for c, ms in p["findings"].items() for m in ms]  # fmt: skip
    if details:
        print("\nfindings:")
        for project, category, message in details:
            print(f"  [{category}] {Path(project).parent.name}: {message}")


def _stop(signum: int, frame: object) -> None:
    # SIGTERM (CI's time bound) unwinds, so each project's engines are killed and the
    # scratch folder removed on the way out.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    rng = random.Random(seed)  # noqa: S311 - timing, not secrets; the seed replays it
    work = Path(tempfile.mkdtemp(prefix="tmops-soak-"))
    began = time.monotonic()
    projects: list[dict[str, Any]] = []
    try:
        while (done := sum(len(_counted(p["kills"])) for p in projects)) < args.kills:
            index = len(projects)
            budget = min(args.kills_per_project, args.kills - done)
            print(f"project {index}: {args.features} features, up to {budget} kills", flush=True)
            projects.append(soak_project(args, rng, work / f"project-{index}", index, budget))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {
        "meta": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "seed": seed,
            "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "cpu_count": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "duration_s": round(time.monotonic() - began, 1),
            "scratch": str(work),
        },
        "figures": figures(projects),
        "projects": projects,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_report(results)
    print(f"\nresults: {args.out}")
    failing = [c for c in CATEGORIES if c not in args.known and results["figures"][c]["findings"]]
    for known in args.known:
        if not results["figures"][known]["findings"]:
            print(f"note: no {known} finding this time; if its defect is fixed, drop --known "
                  f"{known}")  # fmt: skip
    return 1 if args.check and failing else 0


if __name__ == "__main__":
    sys.exit(main())
