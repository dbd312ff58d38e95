"""The kill harness: the engine killed dead at each named crash point, restarted by a user.

For each crash point of :mod:`tmops_core.orchestration.crashpoints`, a real ``tmops engine``
process is started with ``TMOPS_CRASH_AT=<point>:<n>`` on the demo project (the scripted agent
plays the roles, its journal on) and dies by SIGKILL there; after 0.1 s, or after 2 s, the user
restarts the feature with ``tmops start FEATURE`` (at once) or ``tmops start FEATURE --resume``
(later), which spawns an engine without ``TMOPS_CRASH_AT``. Then the run must complete with every
invariant of :mod:`tests.kill_checks` kept: no agent of the feature ever ran alongside another
or after its phase was accepted, nothing was lost or committed under another phase's name, the
store is whole with every attempt closed, and no process is left. The dead engine is reaped at
once here, as init does (eventually); one more case restarts while it is still a zombie, as
it is when init is slow or a long-lived process (the MCP server) spawned it.

A case that fails on the current code is marked ``xfail(strict=True)`` with the defect it
shows (:data:`KNOWN_DEFECTS` for the crash-point cases, empty now: all sixteen pass; the
zombie case: engine liveness), so a fix turns it into an XPASS that fails the suite until the
mark is removed.

The second part checks the checks: on a run that completed untouched, each kind of breakage,
made for real (a file left in the worktree, a commit under another phase's name, an agent run
again, a process left with an agent's mark, an attempt left open, a run left running), must
be found.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine_support import WAIT_S, git, new_feature
from tests.kill_checks import Subject, check_project
from tests.kill_support import KillProject, kill_project, start_engine, user_start
from tmops_core.agents.processes import boot_clock, boot_id, process_start_time
from tmops_core.orchestration.crashpoints import CRASH_POINTS
from tmops_core.orchestration.daemon import engine_alive
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.store import STORE_NAME, AttemptRecord, RunRecord, SQLiteStore
from tmops_core.workspace.layout import iso, utc_now
from tmops_plugins.scripted_journal import JOURNAL_ENV, MARK_ENV
from tmops_plugins.scripted_session import FAULT_ENV, STATE_ENV

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow

#: Where each point is hit: (which time it is reached, the run's current phase when it is).
#: The occurrences spread the kills over the four phases.
WHERE: dict[str, tuple[int, str]] = {
    "after-spawn": (2, "tester"),
    "checkpoint-detected": (2, "tester"),
    "during-gate": (2, "implementer"),
    "before-commit": (3, "implementer"),
    "after-commit": (2, "tester"),
    "before-transition": (4, "verifier"),
    "after-transition": (3, "verifier"),
    "during-summary": (1, "verifier"),
}
#: Cases that fail on the current code, with the defect they show: (point, delay) -> reason.
KNOWN_DEFECTS: dict[tuple[str, float], str] = {}
DELAYS = (0.1, 2.0)


def _case(point: str, delay: float) -> object:
    reason = KNOWN_DEFECTS.get((point, delay))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(point, delay, marks=marks, id=f"{point}-{delay}s")


def test_every_crash_point_has_a_case() -> None:
    assert set(WHERE) == set(CRASH_POINTS)


@pytest.mark.parametrize(("point", "delay"), [_case(p, d) for p in CRASH_POINTS for d in DELAYS])
def test_an_engine_killed_at_a_crash_point_recovers_on_restart(
    tmp_path: Path, point: str, delay: float
) -> None:
    occurrence, phase = WHERE[point]
    project = kill_project(tmp_path)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine = start_engine(project, f"{point}:{occurrence}")
        assert engine.wait(timeout=WAIT_S) == -signal.SIGKILL, f"the engine never reached {point}"
        run = _run(project)
        assert (run.status, run.current_phase) == ("running", phase)
        time.sleep(delay)
        restart = user_start(project, DEMO_FEATURE, resume=delay > 1)
        assert restart.returncode == 0, restart.stdout + restart.stderr
        findings = project.finish(timeout=WAIT_S)
        assert not findings, "\n".join(findings.all())
    finally:
        project.close()


def test_a_run_whose_dead_engine_is_not_reaped_yet_is_taken_over(tmp_path: Path) -> None:
    """A killed process stays a zombie until its parent reaps it: init may take a while (here,
    seconds), a long-lived parent that spawned the engine (the MCP server) until it next
    spawns. A restart in that time must still take the run over."""
    project = kill_project(tmp_path)
    engine = None
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine = start_engine(project, "after-spawn:2")
        # Watch it die WITHOUT reaping it (WNOWAIT): it stays a zombie until the end.
        deadline = time.monotonic() + WAIT_S
        unreaped = os.WEXITED | os.WNOHANG | os.WNOWAIT
        while (died := os.waitid(os.P_PID, engine.pid, unreaped)) is None:
            assert time.monotonic() < deadline, "the engine never reached after-spawn"
            time.sleep(0.02)
        assert (died.si_code, died.si_status) == (os.CLD_KILLED, signal.SIGKILL)
        time.sleep(0.1)
        restart = user_start(project, DEMO_FEATURE, resume=False)
        assert restart.returncode == 0, restart.stdout + restart.stderr
        findings = project.finish(timeout=WAIT_S)
        assert not findings, "\n".join(findings.all())
    finally:
        if engine is not None:
            engine.wait()
        project.close()


def _run(project: KillProject) -> RunRecord:
    store = SQLiteStore.open_existing(project.root / ".tmops" / STORE_NAME)
    assert store is not None
    try:
        run = store.run(DEMO_FEATURE, project.inits[DEMO_FEATURE].run)
    finally:
        store.close()
    assert run is not None
    return run


# -- the checks find what they are for ---------------------------------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillProject]:
    """A run driven to its end by an engine nobody killed."""
    project = kill_project(tmp_path_factory.mktemp("clean"))
    project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
    assert start_engine(project, None).wait(timeout=WAIT_S) == 0
    yield project
    project.close()


def _check(project: KillProject) -> dict[str, list[str]]:
    return check_project(project.root, project.journal, project.subjects()).by_category


def test_a_run_nobody_killed_keeps_every_invariant(clean: KillProject) -> None:
    findings = _check(clean)
    assert not any(findings.values()), findings


def test_work_left_uncommitted_is_lost(clean: KillProject) -> None:
    left = clean.inits[DEMO_FEATURE].worktree / "notes.txt"
    left.write_text("work nobody committed\n")
    try:
        assert any("notes.txt" in m for m in _check(clean)["lost"])
    finally:
        left.unlink()


def test_code_committed_under_the_testers_name_is_miscredited(clean: KillProject) -> None:
    worktree = clean.inits[DEMO_FEATURE].worktree
    (worktree / "slug.py").write_text("def slugify(text: str) -> str:\n    return text\n")
    git(worktree, "commit", "-q", "-am", "test(slug): more tests")
    try:
        findings = _check(clean)
        assert any("slug.py committed in" in m and "test(slug)" in m
                   for m in findings["miscredited"])  # fmt: skip
        assert any("slug.py on" in m for m in findings["lost"])
    finally:
        git(worktree, "reset", "-q", "--hard", "HEAD~1")


def _tester_again(
    project: KillProject, journal: Path, *, fault: str = ""
) -> subprocess.Popen[bytes]:
    """The accepted tester's session resumed by hand, writing to ``journal``."""
    attempt = next(a for a in _attempts(project) if a.phase == "tester" and a.session_id)
    env = dict(os.environ, **{STATE_ENV: str(project.base / "state"), JOURNAL_ENV: str(journal),
                              FAULT_ENV: fault})  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "tmops_plugins.scripted_agent", "-p", "go on",
         "--output-format", "stream-json", "--verbose", "--resume", str(attempt.session_id)],
        cwd=project.inits[DEMO_FEATURE].worktree, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _attempts(project: KillProject) -> list[AttemptRecord]:
    store = SQLiteStore.open_existing(project.root / ".tmops" / STORE_NAME)
    assert store is not None
    try:
        return store.attempts(DEMO_FEATURE, project.inits[DEMO_FEATURE].run)
    finally:
        store.close()


def test_an_agent_run_again_alongside_another_after_acceptance_is_a_duplicate(
    clean: KillProject, tmp_path: Path
) -> None:
    # Their own journal, so the other checks of the module still read the clean one.
    journal = tmp_path / "journal"
    slow = _tester_again(clean, journal, fault="tester:slow=60:always")
    try:
        deadline = time.monotonic() + WAIT_S
        while not (journal / "journal.jsonl").exists():
            assert time.monotonic() < deadline, "the slow tester never started"
            time.sleep(0.02)
        assert _tester_again(clean, journal).wait(timeout=WAIT_S) == 0
    finally:
        slow.kill()
        slow.wait()
    found = _check(dataclasses.replace(clean, journal=journal))["duplicates"]
    assert sum("started after tester was accepted" in m for m in found) == 2, found
    assert any(f"while agent {slow.pid} (tester) was alive" in m for m in found), found


@pytest.mark.parametrize("recorded", [True, False], ids=["mark-in-store", "unrecorded-mark"])
def test_a_process_left_with_an_agents_mark_is_an_orphan(
    clean: KillProject, tmp_path: Path, recorded: bool
) -> None:
    # A mark the store knows is found anywhere; one it never learnt (the engine died between
    # spawn and record), by the process running inside the project.
    mark = next(a.mark for a in _attempts(clean) if a.mark) if recorded else "never-recorded"
    left = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env=dict(os.environ, **{MARK_ENV: str(mark)}),
        cwd=tmp_path if recorded else clean.inits[DEMO_FEATURE].worktree,
    )
    try:
        found = _check(clean)["orphans"]
    finally:
        left.kill()
        left.wait()
    assert found == [f"process {left.pid} still carries the agent mark {mark}"]


def test_an_attempt_left_open_and_a_run_left_running_are_found(clean: KillProject) -> None:
    # A second feature of the project, queued and admitted as an engine would, then left: its
    # run stays running and its attempt open (the engine "died" before closing them).
    left = new_feature(clean.service, clean.root, "left-open")
    clean.service.start(left.feature, workspace=clean.root, spawn=False)
    store = SQLiteStore.open_existing(clean.root / ".tmops" / STORE_NAME)
    assert store is not None
    now = iso(utc_now())
    start_time = process_start_time(os.getpid())
    assert start_time is not None
    owner, _ = store.acquire_lease(
        pid=os.getpid(), start_time=start_time, boot_id=boot_id(),
        lease_until=boot_clock() + 60, now=now, alive=engine_alive,
    )  # fmt: skip
    fencing = store.admit_run(
        left.feature, left.run, engine_id=owner.id, engine_pid=os.getpid(), now=now
    )
    attempt = store.start_attempt(left.feature, left.run, fencing, phase="orchestrator",
                                  attempt=1, provider="claude-code", start_commit=None,
                                  now=now)  # fmt: skip
    subject = Subject(left.feature, left.run, left.branch, left.worktree, left.checkpoint_dir,
                      left.run_dir)  # fmt: skip
    try:
        found = check_project(clean.root, clean.journal, [subject]).by_category
        name = f"{left.feature}/{left.run}"
        assert found["store"] == [f"{name}: attempt {attempt} (orchestrator) is still starting"]
        [stuck] = found["stuck"]
        assert stuck.startswith(f"{name}: still running (phase orchestrator, engine {os.getpid()}")
    finally:
        store.finish_attempt(attempt, left.feature, left.run, fencing, state="abandoned",
                             outcome="crashed", message="test", session_id=None, cost_usd=None,
                             turns=None, now=now)  # fmt: skip
        store.end_run(left.feature, left.run, fencing, status="cancelled", now=now)
        store.release_lease(owner.id, now=now)
        store.close()
