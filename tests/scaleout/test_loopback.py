"""The scale-out proof on loopback: one engine on a PostgreSQL store, a Temporal dev server,
three ``tmops worker`` processes in clones of their own sharing a bare repository, 30 runs of
the scripted agent, several at once, and one worker SIGKILLed while it runs an agent.

What must hold: every run completes; no two agents of one feature ever run at once (the store's
attempt intervals, the scripted agent's journal); nothing the killed worker made reaches the
remote after its attempt was lost; its attempt's agent runs again on another worker within the
heartbeat timeout + 5 s. The figures are printed for the CI log (run it with ``-s``).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kill_checks import check_duplicates, marked_processes
from tests.scaleout.loopback_support import (
    RUN,
    Loopback,
    all_ended,
    figures,
    make_loopback,
    not_completed,
    wait_for,
)
from tests.temporal_support import DevServer, dev_server
from tmops_plugins.scripted_journal import read_journal

pytestmark = pytest.mark.scaleout

FEATURES = 30
CONCURRENT = 8
WORKERS = ("w1", "w2", "w3")
#: long enough that a loaded machine's late heartbeat does not lose attempts by itself
HEARTBEAT_TIMEOUT_S = 5.0
RECOVERY_BOUND_S = HEARTBEAT_TIMEOUT_S + 5
#: every tester sleeps this long before working: the SIGKILL lands mid-phase
TESTER_SLOW_S = 4
#: a tester's agent started less than this long ago has seconds of its sleep left
FRESH_S = 1.5
#: the whole fleet's bound (measured: about a minute and a half on 2 busy cores)
ALL_DONE_S = 600.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DevServer]:
    with dev_server(tmp_path) as started:
        yield started


@pytest.fixture
def loopback(tmp_path: Path, server: DevServer, pg_url: str) -> Iterator[Loopback]:
    """The fleet, its workers, engine and agents stopped at the end whatever happened (the
    dev server by ``server``, the PostgreSQL cluster by ``pg_cluster``)."""
    built = make_loopback(
        tmp_path, server, pg_url, count=FEATURES, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
        fault=f"tester:slow={TESTER_SLOW_S}", concurrent_limit=CONCURRENT,
    )  # fmt: skip
    try:
        yield built
    finally:
        built.fleet.close()


def _victim(loopback: Loopback) -> tuple[str, dict[str, object]] | None:
    """A worker running a tester's agent that is still in its sleep (started less than
    :data:`FRESH_S` ago, so it is mid-phase when the kill lands): (its name, the agent's
    journal line)."""
    for name in WORKERS:
        for line in loopback.agents_on(name).values():
            if line["role"] == "tester" and time.time() - float(str(line["time"])) < FRESH_S:
                return name, line
    return None


def test_thirty_runs_on_three_workers_survive_a_worker_killed_mid_phase(
    loopback: Loopback,
) -> None:
    project = loopback.project
    for name in WORKERS:
        loopback.worker(name)
    started = time.monotonic()
    for feature in loopback.features:
        project.service.start(feature, workspace=project.root, spawn=False)
    project.engine()

    victim, agent = wait_for(
        lambda: _victim(loopback), timeout=120,
        pending=lambda: "a worker to run a tester's agent; "
        + not_completed(loopback),
    )  # fmt: skip
    killed_at = time.time()
    os.kill(loopback.processes[victim].pid, signal.SIGKILL)
    loopback.processes[victim].wait()
    feature, phase, killed_pid = str(agent["feature"]), str(agent["role"]), agent["pid"]
    wait_for(
        lambda: not marked_processes((), under=loopback.clones[victim]), timeout=30,
        pending=lambda: f"the killed worker's agents still alive: "
        f"{marked_processes((), under=loopback.clones[victim])}",
    )  # fmt: skip

    def again() -> dict[str, object] | None:
        return next(
            (line for line in loopback.journal_starts()
             if line["feature"] == feature and line["role"] == phase and line["time"] > killed_at),
            None,
        )  # fmt: skip

    retried = wait_for(
        again, timeout=120,
        pending=lambda: f"{feature}'s {phase} agent to run again after the kill of {victim}",
    )  # fmt: skip
    recovery_s = float(str(retried["time"])) - killed_at

    wait_for(
        lambda: all_ended(loopback), timeout=ALL_DONE_S, pending=lambda: not_completed(loopback)
    )
    total_s = time.monotonic() - started

    statuses = loopback.statuses()
    completed = sum(status == "completed" for status in statuses.values())
    overlaps = check_duplicates(
        project.store, loopback.journal, [(f, RUN) for f in loopback.features]
    )
    remote, engine_side = loopback.fleet.remote, project.root
    late_commits = loopback.commits_by(victim, remote, after=killed_at) + loopback.commits_by(
        victim, engine_side, after=killed_at
    )
    late_pushes = loopback.pushes_by(victim, after=killed_at)
    # the try it was killed in: its own ref never reached the remote
    killed_tries = sorted(
        (n, t) for f, p, n, t in loopback.tries_of(victim) if (f, p) == (feature, phase)
    )
    assert killed_tries, f"{victim}'s log does not show the {feature} {phase} try it ran"
    number, lost = killed_tries[-1]
    pushed_lost = [
        ref for ref in loopback.fleet.remote_refs(f"refs/tmops/{feature}/{RUN}/work/")
        if ref.rsplit("/", 1)[1].startswith(f"{phase}-{number}-f") and ref.endswith(f"-a{lost}")
    ]  # fmt: skip
    ended_by_itself = [
        line for line in read_journal(loopback.journal)
        if line.get("event") == "end" and line.get("pid") == killed_pid
    ]  # fmt: skip
    per_phase = figures(loopback)
    commits_by_worker = {n: len(loopback.commits_by(n, remote)) for n in WORKERS}
    pushes_by_worker = {n: len(loopback.pushes_by(n, after=0)) for n in WORKERS}
    retries = sum(row["retries"] for row in per_phase.values())
    report = {
        "runs_completed": f"{completed}/{FEATURES}",
        "total_s": round(total_s, 1),
        "killed": {"worker": victim, "feature": feature, "phase": phase, "agent_pid": killed_pid},
        "recovery_s": round(recovery_s, 2),
        "recovery_bound_s": RECOVERY_BOUND_S,
        "overlaps": len(overlaps.all()),
        "commits_after_loss": len(late_commits),
        "lost_try": f"{phase}-{number}-a{lost}",
        "lost_try_refs_on_remote": len(pushed_lost),
        "pushes_after_loss": len(late_pushes),
        "commits_by_worker": commits_by_worker,
        "pushes_by_worker": pushes_by_worker,
        "per_phase": per_phase,
        "retries": retries,
    }
    print("\nscale-out on loopback: " + json.dumps(report, indent=1))

    assert completed == FEATURES, not_completed(loopback)
    assert not overlaps, overlaps.all()
    assert ended_by_itself == [], f"the killed agent {killed_pid} ended before the kill"
    assert late_commits == [], f"{victim} committed after it was killed: {late_commits}"
    assert late_pushes == [], f"the remote took pushes of {victim}'s after the kill: {late_pushes}"
    assert pushed_lost == [], f"the lost try's ref reached the remote: {pushed_lost}"
    assert recovery_s <= RECOVERY_BOUND_S, (
        f"{feature}'s {phase} ran again {recovery_s:.2f} s after the kill "
        f"(bound {RECOVERY_BOUND_S} s)"
    )
    assert retries >= 1  # the killed try, at least, ran again
    # the workers' identities are on the remote's commits: a late one of the victim's would show
    survivors = [name for name in WORKERS if name != victim]
    for name in survivors:
        assert commits_by_worker[name], report
        assert pushes_by_worker[name], report
