"""The temporal executor for real: a Temporal dev server, ``tmops worker`` processes in clones
of their own, a bare repository as the shared remote, the scripted agent."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.engine_support import COMPLETIONS, PHASES, WAIT_S, git
from tests.takeover_support import leftovers, wait_until
from tests.temporal_support import (
    HEARTBEAT_TIMEOUT_S,
    RUN_IDLE_TIMEOUT_S,
    Fleet,
    dev_server,
    make_fleet,
)
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.store import AttemptRecord
from tmops_plugins.scripted_roles import CODE_FILE, TEST_FILE
from tmops_plugins.temporal.workflow import RunWorkflow

pytestmark = pytest.mark.slow

RUN = "initial"
#: set to record the history tests/test_temporal_replay.py replays (the verifier's attempt)
RECORD_ENV = "TMOPS_RECORD_TEMPORAL_HISTORY"
HISTORY = Path(__file__).parent / "data" / "temporal" / "run-attempt.json"


def test_a_run_goes_through_its_four_phases_on_a_worker(tmp_path: Path) -> None:
    with dev_server(tmp_path) as server:
        fleet = make_fleet(tmp_path, server)
        try:
            clone = fleet.clone("w1")
            fleet.worker(clone)
            project = fleet.project
            project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
            project.engine()
            project.wait_completed(DEMO_FEATURE, timeout=4 * WAIT_S)

            attempts = project.attempts()
            assert [(a.phase, a.state) for a in attempts] == [
                (phase, "completed") for phase in PHASES
            ]
            # each phase's work came from the worker: its own ref on the shared remote
            fencing = project.run().fencing
            assert _work(fleet) == {(phase, 1, fencing, 1) for phase in PHASES}
            checkpoints = project.root / ".tmops" / DEMO_FEATURE / "runs" / RUN / "checkpoints"
            for name in COMPLETIONS.values():
                assert (checkpoints / name).is_file(), name
            # the agents' own commits, made on the worker, are the branch's: every commit of
            # it is one of the workers' refs (fetched by the engine under the same names)
            log = git(project.root, "log", "--format=%s", f"feature/{DEMO_FEATURE}")
            assert "test(slug):" in log
            assert "feat(slug):" in log
            not_from_workers = git(
                project.root, "rev-list", f"feature/{DEMO_FEATURE}", "--not",
                f"--glob=refs/tmops/{DEMO_FEATURE}/{RUN}/work/*", "main",
            )  # fmt: skip
            assert not_from_workers == ""
            tree = git(project.root, "ls-tree", "-r", "--name-only", f"feature/{DEMO_FEATURE}")
            assert any(path.startswith("tests/") for path in tree.splitlines())
            worker_tree = clone / ".tmops" / "worktrees" / DEMO_FEATURE
            assert worker_tree.is_dir()  # the agent ran there, not in the engine's worktree
            for folder in (".tmops", ".tmops/worktrees", f".tmops/{DEMO_FEATURE}/runs/{RUN}"):
                assert stat.S_IMODE((clone / folder).stat().st_mode) == 0o700, folder

            # the run is one workflow: its four attempts are its updates, one activity each;
            # it ends once idle, and its real history replays against its code
            wait_until(lambda: fleet.workflow_status(DEMO_FEATURE, RUN) == "COMPLETED" or None,
                       timeout=RUN_IDLE_TIMEOUT_S + WAIT_S, what="the workflow ended")  # fmt: skip
            history = fleet.history(DEMO_FEATURE, RUN)
            kinds = _kinds(history)
            assert kinds.count("EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED") == len(PHASES)
            assert kinds.count("EVENT_TYPE_ACTIVITY_TASK_COMPLETED") == len(PHASES)
            replayed = asyncio.run(
                Replayer(workflows=[RunWorkflow]).replay_workflow(
                    WorkflowHistory.from_json("recorded", history)
                )
            )
            assert replayed.replay_failure is None
            if os.environ.get(RECORD_ENV) == "1":
                HISTORY.write_text(
                    _neutral(
                        history,
                        {str(tmp_path): "/srv/tmops", str(Path(sys.executable).parent): "/opt/bin"},
                    )
                )
        finally:
            fleet.close()


def _neutral(history: str, paths: dict[str, str]) -> str:
    """The history with this machine's paths replaced inside its (base64 JSON) payloads."""
    data = json.loads(history)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                text = base64.b64decode(node["data"]).decode()
                for old, new in paths.items():
                    text = text.replace(old, new)
                node["data"] = base64.b64encode(text.encode()).decode()
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return json.dumps(data, indent=1) + "\n"


def test_cancel_reaches_the_agent_on_its_worker_at_the_next_heartbeat(tmp_path: Path) -> None:
    with dev_server(tmp_path) as server:
        fleet = make_fleet(tmp_path, server, fault="tester:slow=120")
        try:
            _, attempt, _ = _tester_on_a_first_worker(fleet)
            project = fleet.project
            assert attempt.start_time == -1  # another machine's process: never signalled here
            wait_until(lambda: leftovers(project.state), timeout=WAIT_S, what="the agent")
            # the verbs read the run as for a local one
            status = project.cli("status", DEMO_FEATURE, "--json")
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["status"] == "running"

            cancelled_at = time.monotonic()
            cancelled = project.cli("cancel", DEMO_FEATURE)
            assert cancelled.returncode == 0, cancelled.stderr
            wait_until(lambda: not leftovers(project.state), timeout=4 * HEARTBEAT_TIMEOUT_S,
                       what="the worker to stop its agent")  # fmt: skip
            print(f"cancel -> agent gone: {time.monotonic() - cancelled_at:.2f} s")

            assert project.run().status == "cancelled"
            # the run's workflow cancelled its activity, answered the attempt, then ended idle
            wait_until(lambda: fleet.workflow_status(DEMO_FEATURE, RUN) == "COMPLETED" or None,
                       timeout=RUN_IDLE_TIMEOUT_S + WAIT_S, what="the workflow ended")  # fmt: skip
            kinds = _kinds(fleet.history(DEMO_FEATURE, RUN))
            assert "EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED" in kinds
            assert "EVENT_TYPE_ACTIVITY_TASK_CANCELED" in kinds
            log = (tmp_path / "w1.log").read_text()
            assert "cancelled at a heartbeat: agent stopped" in log
            assert not fleet.remote_refs(f"refs/tmops/{DEMO_FEATURE}/{RUN}/work/tester")
        finally:
            fleet.close()


def test_a_remote_agents_actions_reach_the_trail_while_it_works(tmp_path: Path) -> None:
    """Live progress: the worker's heartbeats carry its agent's events and the engine records
    them as they come (what `tmops watch` draws); the attempt's result brings none twice."""
    with dev_server(tmp_path) as server:
        # each of the scripted agent's actions takes 0.8 s: the tester works for seconds
        fleet = make_fleet(tmp_path, server, claude_env={"TMOPS_SCRIPTED_DELAY_S": "0.8"})
        try:
            fleet.worker(fleet.clone("w1"))
            project = fleet.project
            project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
            project.engine()

            def tester_tools_while_it_runs() -> list[dict[str, Any]] | None:
                running = project.live_agent("tester")
                tools = _tools(project, "tester")
                return tools if running is not None and tools else None

            started = time.monotonic()
            seen = wait_until(tester_tools_while_it_runs, timeout=WAIT_S,
                              what="a tester's action in the trail while it runs")  # fmt: skip
            print(f"first remote action in the trail after {time.monotonic() - started:.2f} s")
            assert project.live_agent("tester") is not None or _tools(project, "verifier") == []
            project.wait_completed(DEMO_FEATURE, timeout=4 * WAIT_S)

            tools = _tools(project, "tester")
            assert seen == tools[: len(seen)]  # relayed live, then the rest in order
            actions = [(tool["tool"], tool["target"]) for tool in tools]
            # the worker's paths are told as the engine's: the targets read as a local run's
            assert ("Write", "003-tests-complete.md") in actions
            assert not [target for _, target in actions if "/w1/" in target]
            assert len(actions) == len(set(actions)), actions  # none recorded twice
        finally:
            fleet.close()


def test_pause_resume_rollback_and_retry_work_as_for_a_local_run(tmp_path: Path) -> None:
    """The verbs do not depend on the executor: a pause stops the agent on its worker, a resume
    runs the phase again there, a rollback reverts the worker's commits, a retry replays."""
    with dev_server(tmp_path) as server:
        fleet = make_fleet(tmp_path, server, fault="tester:slow=5")
        try:
            _tester_on_a_first_worker(fleet)
            project = fleet.project
            wait_until(lambda: leftovers(project.state), timeout=WAIT_S, what="the agent")
            paused = _answer(project, "pause", DEMO_FEATURE, "--now")
            assert paused["status"] == "paused"
            wait_until(lambda: not leftovers(project.state), timeout=4 * HEARTBEAT_TIMEOUT_S,
                       what="the worker to stop its agent")  # fmt: skip
            assert [a.state for a in project.attempts("tester")] == ["interrupted"]

            resumed = project.cli("resume", DEMO_FEATURE, "--wait", timeout=4 * WAIT_S)
            assert resumed.returncode == 0, resumed.stdout + resumed.stderr
            assert [a.state for a in project.attempts("tester")] == ["interrupted", "completed"]
            worktree = project.root / ".tmops" / "worktrees" / DEMO_FEATURE
            assert (worktree / CODE_FILE).is_file()  # the worker's commit, fetched

            rolled = _answer(project, "rollback", DEMO_FEATURE, "--phase", "implementer")
            assert CODE_FILE in rolled["reverted"]
            assert not (worktree / CODE_FILE).exists()
            assert (worktree / TEST_FILE).is_file()
            retried = project.cli("retry", DEMO_FEATURE, "--phase", "implementer", "--wait",
                                  timeout=4 * WAIT_S)  # fmt: skip
            assert retried.returncode == 0, retried.stdout + retried.stderr
            assert (worktree / CODE_FILE).is_file()
            states = [a.state for a in project.attempts("implementer")]
            assert states == ["completed", "reset", "reset", "completed"], states  # as locally
            # the retried implementer's work came through a worker's ref (the first one's ref,
            # of the same name, was overwritten: its commits are kept by the rollback's backup)
            work = fleet.remote_refs(f"refs/tmops/{DEMO_FEATURE}/{RUN}/work/")
            refs = {ref: commit for ref, commit in work.items() if "/implementer-" in ref}
            branch = git(project.root, "rev-parse", f"feature/{DEMO_FEATURE}").strip()
            on_branch = [
                commit
                for commit in refs.values()
                if git(project.root, "merge-base", commit, branch).strip() == commit
            ]
            assert on_branch, refs
            # and its agent ran on the worker again: not the first one's answer served twice
            log = (tmp_path / "w1.log").read_text()
            assert log.count(f"of {DEMO_FEATURE}/{RUN} implementer (try 1)") == 2, log
        finally:
            fleet.close()


def _answer(project: Any, *args: str) -> dict[str, Any]:
    done = project.cli(*args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _tools(project: Any, phase: str) -> list[dict[str, Any]]:
    """The ``agent.tool`` events of ``phase`` in the run's trail, oldest first."""
    found = []
    for row in project.store.events_for(DEMO_FEATURE):
        data = json.loads(row["data"])
        if row["event_type"] == "agent.tool" and data.get("phase") == phase:
            found.append(data)
    return found


def _kinds(history: str) -> list[str]:
    return [event["eventType"] for event in json.loads(history)["events"]]


def _work(fleet: Fleet) -> set[tuple[str, int, int, int]]:
    """The workers' refs on the shared remote: (phase, attempt, fencing token, try)."""
    found = set()
    for ref in fleet.remote_refs(f"refs/tmops/{DEMO_FEATURE}/{RUN}/work/"):
        matched = re.fullmatch(r"([a-z]+)-(\d+)-f(\d+)-a(\d+)", ref.rsplit("/", 1)[1])
        assert matched, ref
        phase, number, fencing, try_ = matched.groups()
        found.add((phase, int(number), int(fencing), int(try_)))
    return found


def _tester_on_a_first_worker(
    fleet: Fleet,
) -> tuple[subprocess.Popen[bytes], AttemptRecord, set[int]]:
    """A worker in clone w1 and the run started: its tester's agent runs there (the attempt,
    and the agent's processes)."""
    first = fleet.worker(fleet.clone("w1"))
    project = fleet.project
    project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
    project.engine()
    attempt = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S,
                         what="the tester's agent on the first worker")  # fmt: skip
    return first, attempt, set(leftovers(project.state))


def test_a_killed_workers_attempt_is_run_again_by_another_worker(tmp_path: Path) -> None:
    with dev_server(tmp_path) as server:
        # the first worker's tester hangs (its own config); the second's behaves
        fleet = make_fleet(tmp_path, server, fault="tester:slow=120")
        try:
            first, attempt, _ = _tester_on_a_first_worker(fleet)
            project = fleet.project
            w1 = tmp_path / "w1"
            heads_before = git(w1, "for-each-ref", "--format=%(objectname) %(refname)")
            fleet.worker(fleet.clone("w2"), config=fleet.config_without_faults())

            killed_at = time.monotonic()
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            wait_until(lambda: not leftovers(project.state) or None, timeout=WAIT_S,
                       what="the killed worker's agent to die with it")  # fmt: skip
            retried = wait_until(
                lambda: (a := project.live_agent("tester")) and a.pid != attempt.pid and a,
                timeout=WAIT_S, what="the tester's agent on the second worker",
            )  # fmt: skip
            recovered_s = time.monotonic() - killed_at
            project.wait_completed(DEMO_FEATURE, timeout=4 * WAIT_S)
            print(f"SIGKILL -> agent again on the second worker: {recovered_s:.2f} s; "
                  f"-> run completed: {time.monotonic() - killed_at:.2f} s")  # fmt: skip
            assert retried.id == attempt.id  # the same tmops attempt, run again by Temporal

            assert [(a.phase, a.state) for a in project.attempts()] == [
                (phase, "completed") for phase in PHASES
            ]
            # the second try's work; the killed one pushed none
            tries = {(n, t) for phase, n, _, t in _work(fleet) if phase == "tester"}
            assert tries == {(1, 2)}
            # nothing of the killed worker's reached the branch or the remote after the kill
            assert git(w1, "for-each-ref", "--format=%(objectname) %(refname)") == heads_before
            not_from_workers = git(
                project.root, "rev-list", f"feature/{DEMO_FEATURE}", "--not",
                f"--glob=refs/tmops/{DEMO_FEATURE}/{RUN}/work/*", "main",
            )  # fmt: skip
            assert not_from_workers == ""
        finally:
            fleet.close()


def test_a_worker_that_lost_its_attempt_stops_its_agent_and_pushes_nothing(
    tmp_path: Path,
) -> None:
    """Frozen (SIGSTOP) past the heartbeat timeout, as behind a partition, then thawed: its
    heartbeat is refused, its agent stopped, and what it did never reaches the run."""
    with dev_server(tmp_path) as server:
        fleet = make_fleet(tmp_path, server, fault="tester:slow=120")
        try:
            first, attempt, stale_agents = _tester_on_a_first_worker(fleet)
            project = fleet.project
            os.kill(first.pid, signal.SIGSTOP)
            fleet.worker(fleet.clone("w2"), config=fleet.config_without_faults())
            wait_until(
                lambda: (a := project.live_agent("tester")) and a.pid != attempt.pid and a,
                timeout=WAIT_S, what="the tester's agent on the second worker",
            )  # fmt: skip
            os.kill(first.pid, signal.SIGCONT)
            wait_until(lambda: not stale_agents & set(leftovers(project.state)) or None,
                       timeout=WAIT_S, what="the thawed worker to stop its agent")  # fmt: skip
            project.wait_completed(DEMO_FEATURE, timeout=4 * WAIT_S)

            assert first.poll() is None  # it lives on, serving
            log = (tmp_path / "w1.log").read_text()
            assert "cancelled at a heartbeat: agent stopped" in log
            # the tester's tries the frozen worker took (the server may hand it one more
            # while it sleeps): none of them pushed the work the run took
            frozen_tries = {
                (int(number), int(try_))
                for number, try_ in re.findall(
                    rf"attempt (\d+) of {DEMO_FEATURE}/{RUN} tester \(try (\d+)\)", log
                )
            }
            assert frozen_tries
            pushed = {(n, t) for phase, n, _, t in _work(fleet) if phase == "tester"}
            assert pushed
            assert not pushed & frozen_tries
        finally:
            fleet.close()


def test_an_engine_that_died_mid_attempt_is_taken_over_and_its_stale_attempt_stopped(
    tmp_path: Path,
) -> None:
    """The next engine's attempt replaces the run's workflow: the dead engine's attempt, still
    running on its worker, is stopped at its next heartbeat and pushes nothing."""
    with dev_server(tmp_path) as server:
        fleet = make_fleet(tmp_path, server, fault="tester:slow=60")
        try:
            _, stale, stale_agents = _tester_on_a_first_worker(fleet)
            project = fleet.project
            stale_fencing = project.run().fencing
            dead = project.engines[0]
            dead.send_signal(signal.SIGKILL)
            dead.wait()
            taken_at = time.monotonic()
            project.engine()
            wait_until(lambda: not stale_agents & set(leftovers(project.state)) or None,
                       timeout=WAIT_S, what="the stale attempt's agent stopped")  # fmt: skip
            print(f"engine SIGKILL -> stale agent stopped: {time.monotonic() - taken_at:.2f} s")
            project.wait_completed(DEMO_FEATURE, timeout=4 * WAIT_S)

            tester = project.attempts("tester")
            assert [(a.attempt, a.state) for a in tester] == [(1, "abandoned"), (1, "completed")]
            assert tester[0].id == stale.id
            # only the new engine's attempt (its new token) pushed: the stale one stopped first
            tokens = {f for phase, _, f, _ in _work(fleet) if phase == "tester"}
            assert tokens == {project.run().fencing}
            assert stale_fencing < project.run().fencing
            assert "cancelled at a heartbeat: agent stopped" in (tmp_path / "w1.log").read_text()
        finally:
            fleet.close()
