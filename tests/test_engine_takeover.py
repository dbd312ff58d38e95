"""A dead, stopped or doubled engine, with REAL engine processes, agents and their daemons.

The tester's agent (the scripted agent) starts a daemon the way a dev server does (the
``detach`` fault: a new session and a double fork, so it is no descendant of the agent) and
then sleeps (``slow``), which gives the test the time to kill, stop or double the engine while
an agent runs. "Nothing left behind" is checked by looking for every live process that
carries the agents' state folder in its environment. The helpers are in
``takeover_support.py``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.engine_support import SHORT_WORKFLOW, WAIT_S, in_memory_service, scripted_config, serve
from tests.mcp_support import server_env, text_of
from tests.takeover_support import (
    TMOPS,
    Project,
    assert_no_overlap,
    engines_of,
    follow_to_end,
    is_zombie,
    leftovers,
    make_project,
    wait_until,
)
from tmops_core.agents.processes import boot_clock, boot_id, process_alive, process_start_time
from tmops_core.orchestration.daemon import Engine
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.service.status import feature_status
from tmops_core.store import AttemptRecord
from tmops_core.workspace.layout import Layout

#: the tester starts a daemon, then sleeps: the window in which the engine is killed
SLOW_TESTER = "tester:detach,tester:slow=5"


@dataclass
class Killed:
    """The engine was killed (SIGKILL) while this agent and its daemon ran."""

    agent: AttemptRecord
    daemon: tuple[int, int]
    engine_pid: int
    queue_seq: int | None


def kill_engine_during_the_tester(project: Project) -> Killed:
    """Wait for the tester's agent and its daemon, kill -9 the engine, wait 0.1 s."""
    agent = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S, what="the tester")
    [(daemon, started)] = wait_until(
        lambda: project.daemons("tester") or None, timeout=WAIT_S, what="the tester's daemon"
    )
    assert started is not None
    run = project.run()
    engine = run.engine_pid
    assert engine is not None
    engine_start = process_start_time(engine)
    assert engine_start is not None
    os.kill(engine, signal.SIGKILL)
    # dead (a zombie or gone): kill -9 has done its work; the restart comes 0.1 s later
    wait_until(
        lambda: not process_alive(engine, engine_start), timeout=10, what="the engine to die"
    )
    time.sleep(0.1)
    return Killed(agent, (daemon, started), engine, run.queue_seq)


def check_taken_over(project: Project, killed: Killed) -> None:
    """The run completes, its place in the queue kept; one agent at a time; nothing left."""
    followed = follow_to_end(project)
    assert followed.run.status == "completed", followed.run.last_error
    assert followed.run.queue_seq == killed.queue_seq
    assert followed.most_live <= 1, "two agents of the feature were live at once"
    tester = project.attempts("tester")
    assert next((a.id, a.state) for a in tester) == (killed.agent.id, "abandoned")
    assert tester[-1].state == "completed"
    assert_no_overlap(project.attempts())
    assert not process_alive(*killed.daemon), "the killed agent's daemon still runs"
    wait_until(lambda: not engines_of(project.root), timeout=30, what="the engine to exit")
    assert leftovers(project.state) == []


# -- kill -9, then start again 0.1 s later --------------------------------------------------------


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_kill_9_then_start_from_the_cli_takes_over_and_the_run_completes(tmp_path: Path) -> None:
    project = make_project(tmp_path, fault=SLOW_TESTER, default_phases=SHORT_WORKFLOW)
    try:
        first = project.cli("start", DEMO_FEATURE)
        assert first.returncode == 0, first.stderr
        killed = kill_engine_during_the_tester(project)
        again = project.cli("start", DEMO_FEATURE)
        assert again.returncode == 0, again.stderr
        assert "already running" not in again.stdout
        check_taken_over(project, killed)
    finally:
        project.close()


def test_start_on_a_run_whose_engine_is_a_zombie_takes_over(tmp_path: Path) -> None:
    """The engine is the test's child and is never reaped: its pid stays, as a zombie."""
    project = make_project(tmp_path, fault=SLOW_TESTER, default_phases=SHORT_WORKFLOW)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine = project.engine()
        killed = kill_engine_during_the_tester(project)
        assert is_zombie(engine.pid)
        answer = project.service.start(DEMO_FEATURE, workspace=project.root)
        assert "already running" not in answer["message"]
        check_taken_over(project, killed)
        assert is_zombie(engine.pid)  # still there: its pid was never free for reuse
    finally:
        project.close()


def test_status_of_a_run_whose_engine_died_says_so(tmp_path: Path) -> None:
    project = make_project(tmp_path, fault=SLOW_TESTER, default_phases=SHORT_WORKFLOW)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        project.engine()
        kill_engine_during_the_tester(project)
        # the read alone: it never starts anything
        status = feature_status(
            Layout(project.root), project.store, DEMO_FEATURE,
            workflow=SHORT_WORKFLOW, phases={},
        )  # fmt: skip
        assert (status["status"], status["engine"]) == ("running", "dead")
        assert f"tmops start {DEMO_FEATURE}" in status["next_action"]
    finally:
        project.close()


def test_watch_of_a_run_whose_engine_died_takes_over_and_follows_it_to_the_end(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, fault=SLOW_TESTER, default_phases=SHORT_WORKFLOW)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        project.engine()
        killed = kill_engine_during_the_tester(project)
        watched = project.cli("watch", DEMO_FEATURE, timeout=120)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert watched.stdout.splitlines()[-1].startswith(f"{DEMO_FEATURE}: completed")
        check_taken_over(project, killed)
    finally:
        project.close()


# -- the same from an MCP session ------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def mcp_server(project: Project) -> StdioServerParameters:
    """``tmops mcp`` as a process of its own: the engine it starts is ITS child."""
    return StdioServerParameters(
        command=TMOPS,
        args=["--config", str(project.config), "mcp", "--workspace", str(project.root)],
        env=server_env(),
        cwd=str(project.root),
    )


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
@pytest.mark.anyio
@pytest.mark.parametrize("restart_from", ["mcp", "cli"])
async def test_kill_9_of_an_engine_started_from_mcp_then_start_again(
    tmp_path: Path, restart_from: str
) -> None:
    project = make_project(tmp_path, fault=SLOW_TESTER, default_phases=SHORT_WORKFLOW)
    try:
        with (tmp_path / "mcp-stderr.txt").open("w") as errlog:
            async with (
                stdio_client(mcp_server(project), errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                tool = "tmops_start_orchestration"
                first = await session.call_tool(tool, {"feature": DEMO_FEATURE})
                assert first.is_error is False, text_of(first)
                killed = await anyio.to_thread.run_sync(kill_engine_during_the_tester, project)
                if restart_from == "mcp":
                    again = await session.call_tool(tool, {"feature": DEMO_FEATURE})
                    assert again.is_error is False, text_of(again)
                    message = text_of(again)
                else:
                    done = await anyio.to_thread.run_sync(
                        lambda: project.cli("start", DEMO_FEATURE)
                    )
                    assert done.returncode == 0, done.stderr
                    message = done.stdout
                assert "already running" not in message
                await anyio.to_thread.run_sync(check_taken_over, project, killed)
    finally:
        project.close()


# -- SIGTERM: an orderly stop ----------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_engine_in_order_and_the_next_start_resumes(
    tmp_path: Path, signum: signal.Signals
) -> None:
    project = make_project(
        tmp_path, fault="tester:detach,tester:slow=60", default_phases=SHORT_WORKFLOW
    )
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        queue_seq = project.run().queue_seq
        engine = project.engine()
        agent = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S, what="tester")
        [(daemon, started)] = wait_until(
            lambda: project.daemons("tester") or None, timeout=WAIT_S, what="the daemon"
        )
        assert started is not None
        assert process_alive(daemon, started)

        engine.send_signal(signum)
        assert engine.wait(timeout=60) == 0

        assert leftovers(project.state) == []
        assert not process_alive(daemon, started)
        assert not process_alive(agent.pid or 0, agent.start_time or 0)
        assert [(a.id, a.state) for a in project.attempts("tester")] == [(agent.id, "interrupted")]
        run = project.run()
        assert (run.status, run.queue_seq) == ("queued", queue_seq)

        # The next start resumes it (with an agent that is quick this time).
        quick = in_memory_service(scripted_config(project.state, default_phases=SHORT_WORKFLOW))
        try:
            answer = quick.start(DEMO_FEATURE, workspace=project.root, spawn=False)
            assert answer["status"] == "queued"
            serve(quick, project.root)
        finally:
            quick.close()
        assert project.run().status == "completed"
        assert [a.state for a in project.attempts("tester")] == ["interrupted", "completed"]
        assert_no_overlap(project.attempts())
    finally:
        project.close()


# -- the lock file removed: the lease decides ------------------------------------------------------


def test_a_second_engine_never_touches_a_live_engines_agents_when_the_lock_file_is_gone(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, fault="tester:slow=60", default_phases=SHORT_WORKFLOW)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        first = project.engine()
        agent = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S, what="tester")
        before = project.run()
        (project.root / ".tmops" / "engine.lock").unlink()

        second = project.cli("engine")

        assert second.returncode == 0, second.stderr
        assert "another engine serves this project" in second.stderr
        assert agent.pid is not None
        assert agent.start_time is not None
        assert process_alive(agent.pid, agent.start_time)
        still = project.live_agent("tester")
        assert still is not None
        assert (still.id, still.state, still.pid) == (agent.id, agent.state, agent.pid)
        after = project.run()
        assert (after.status, after.fencing, after.engine_pid) == (
            before.status, before.fencing, first.pid,
        )  # fmt: skip
        assert first.poll() is None
    finally:
        project.close()


# -- a hung engine: only its lease can tell -----------------------------------------------------


def test_a_hung_engine_loses_its_lease_to_a_new_engine_and_then_touches_nothing(
    tmp_path: Path,
) -> None:
    project = make_project(
        tmp_path, fault="tester:detach,tester:slow=60", default_phases=SHORT_WORKFLOW
    )
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        hung = project.engine("--heartbeat", "0.1", "--lease", "1")
        agent = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S, what="tester")
        [(daemon, started)] = wait_until(
            lambda: project.daemons("tester") or None, timeout=WAIT_S, what="the daemon"
        )
        assert started is not None
        os.kill(hung.pid, signal.SIGSTOP)  # alive, holding the lock file, and silent

        def lease_expired() -> bool:
            engine = project.store.serving_engine()
            return engine is not None and engine.lease_until < boot_clock()

        wait_until(lease_expired, timeout=30, what="the hung engine's lease to expire")
        quick = in_memory_service(scripted_config(project.state, default_phases=SHORT_WORKFLOW))
        try:
            serve(quick, project.root)  # takes over without the lock, and completes the run
        finally:
            quick.close()
        run = project.run()
        assert run.status == "completed", run.last_error
        assert [(a.id, a.state) for a in project.attempts("tester")] == [
            (agent.id, "abandoned"),
            (agent.id + 1, "completed"),
        ]
        assert not process_alive(daemon, started)
        assert not process_alive(agent.pid or 0, agent.start_time or 0)
        recorded = project.attempts()

        os.kill(hung.pid, signal.SIGCONT)
        assert hung.wait(timeout=60) == 0

        assert project.attempts() == recorded  # it wrote nothing once it woke up
        assert (project.run().status, project.run().fencing) == ("completed", run.fencing)
        assert leftovers(project.state) == []
    finally:
        project.close()


# -- the same, with the engine in this process ----------------------------------------------------


def engine_in_thread(project: Project) -> tuple[Engine, threading.Thread, list[bool]]:
    """An engine serving in a thread of the test (heartbeat 0.05 s, lease 0.5 s)."""
    engine = Engine(
        config=project.service.config, plugins=project.service.plugins,
        events=project.service.events, store=project.store, layout=Layout(project.root),
        retry_backoff_s=(0.05,), heartbeat_s=0.05, lease_s=0.5,
    )  # fmt: skip
    served: list[bool] = []
    thread = threading.Thread(target=lambda: served.append(engine.serve(idle_exit_s=0.2)))
    thread.start()
    return engine, thread, served


def test_an_engine_asked_to_stop_queues_its_runs_again_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    project = make_project(
        tmp_path, fault="tester:detach,tester:slow=60", default_phases=SHORT_WORKFLOW
    )
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine, thread, served = engine_in_thread(project)
        agent = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S, what="tester")
        [(daemon, started)] = wait_until(
            lambda: project.daemons("tester") or None, timeout=WAIT_S, what="the daemon"
        )
        engine.request_stop()
        thread.join(60)
        assert served == [True]
        assert not process_alive(daemon, started or 0)
        assert leftovers(project.state) == []
        assert [(a.id, a.state) for a in project.attempts("tester")] == [(agent.id, "interrupted")]
        assert project.run().status == "queued"
        assert project.store.serving_engine() is None
        assert engine.record is not None
        assert project.store.engine(engine.record.id).state == "stopped"  # type: ignore[union-attr]
    finally:
        project.close()


def test_an_engine_whose_lease_is_taken_stops_its_agents_and_writes_nothing(
    tmp_path: Path,
) -> None:
    project = make_project(
        tmp_path, fault="tester:detach,tester:slow=60", default_phases=SHORT_WORKFLOW
    )
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine, thread, served = engine_in_thread(project)
        agent = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S, what="tester")
        [(daemon, started)] = wait_until(
            lambda: project.daemons("tester") or None, timeout=WAIT_S, what="the daemon"
        )
        fencing = project.run().fencing
        # What a second engine does when it judges this one dead (its lease expired, say).
        start_time = process_start_time(os.getpid())
        assert start_time is not None
        other, taken = project.store.acquire_lease(
            pid=os.getpid(), start_time=start_time, boot_id=boot_id(),
            lease_until=boot_clock() + 60, now="2026-01-01T00:00:00Z", alive=lambda _: False,
        )  # fmt: skip
        assert [t.id for t in taken] == [engine.record.id]  # type: ignore[union-attr]
        recorded = project.attempts()

        thread.join(60)

        assert served == [True]
        assert engine.lease_lost.is_set()
        assert not process_alive(daemon, started or 0)
        assert not process_alive(agent.pid or 0, agent.start_time or 0)
        assert project.attempts() == recorded  # the run is the new engine's to record
        run = project.run()
        assert (run.status, run.fencing) == ("running", fencing + 1)
        assert project.store.serving_engine() == other
    finally:
        project.close()
