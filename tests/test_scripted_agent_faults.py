"""The scripted local agent: the faults it injects on request, and how a resume recovers.

The agent runs for real, as a subprocess and in-process through ``main()``, on the demo project.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tmops_core.agents.processes import process_alive, process_start_time
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_plugins.scripted_roles import ARTEFACT_VENV
from tmops_plugins.scripted_session import CRASH_EXIT_CODE, FAULT_ENV, STATE_ENV

from .conftest import log_subjects
from .scripted_support import (
    Demo,
    Runner,
    check_checkpoint,
    check_stream,
    header,
    pytest_in,
    run_subprocess,
    section,
)

pytestmark = pytest.mark.usefixtures("agent_env")


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_passing_tests_on_the_first_attempt_then_real_tests_on_resume(
    demo: Demo, in_process: Runner
) -> None:
    first = in_process(demo, demo.argv("tester"), fault="tester:passing-tests")
    check_stream(first)
    assert "from slug" not in (demo.path / "tests" / "test_slug.py").read_text()
    assert "- Tests written: 1\n- Passing: 1/1" in section(demo.checkpoint("tester"), "Metrics")
    assert pytest_in(demo.path).returncode == 0  # the red gate would catch this

    again = in_process(
        demo,
        demo.argv("tester", "--resume", first.init["session_id"]),
        fault="tester:passing-tests",
    )
    check_stream(again)
    assert "from slug import slugify" in (demo.path / "tests" / "test_slug.py").read_text()
    assert "- Tests written: 6\n- Passing: 0/6" in section(demo.checkpoint("tester"), "Metrics")
    subjects = [s for _, s in log_subjects(demo.path)]
    assert [s.split("(")[0] for s in subjects[:2]] == ["test", "test"]


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
@pytest.mark.parametrize(("fault", "fixed"), [("broken-code", True), ("broken-code:always", False)])
def test_broken_code_is_fixed_on_resume_unless_always(
    demo: Demo, in_process: Runner, fault: str, fixed: bool
) -> None:
    in_process(demo, demo.argv("tester"))
    first = in_process(demo, demo.argv("implementer"), fault=f"implementer:{fault}")
    check_stream(first)
    metrics = section(demo.checkpoint("implementer"), "Metrics")
    passing = re.search(r"Passing: (\d+)/6", metrics)
    assert passing
    assert int(passing.group(1)) < 6
    assert pytest_in(demo.path).returncode == 1

    again = in_process(
        demo,
        demo.argv("implementer", "--resume", first.init["session_id"]),
        fault=f"implementer:{fault}",
    )
    check_stream(again)
    assert ("Passing: 6/6" in section(demo.checkpoint("implementer"), "Metrics")) is fixed
    assert (pytest_in(demo.path).returncode == 0) is fixed
    assert section(demo.checkpoint("implementer"), "Git Commit") == log_subjects(demo.path)[0][0]


def test_no_checkpoint_does_the_work_and_resume_writes_it(demo: Demo, in_process: Runner) -> None:
    first = in_process(demo, demo.argv("tester"), fault="tester:no-checkpoint")
    check_stream(first)
    assert "no checkpoint written" in first.result["result"]
    assert not demo.checkpoint("tester").exists()
    commit = log_subjects(demo.path)[0][0]

    again = in_process(
        demo,
        demo.argv("tester", "--resume", first.init["session_id"]),
        fault="tester:no-checkpoint",
    )
    check_stream(again)
    check_checkpoint(demo, "tester", "Tester", "Orchestrator")
    # The work was committed already: no second commit, the report names the first one.
    assert log_subjects(demo.path)[0][0] == commit
    assert section(demo.checkpoint("tester"), "Git Commit") == commit
    commands = [t["input"]["command"] for t in again.tool_uses() if t["name"] == "Bash"]
    assert not any(c.startswith("git commit") for c in commands)


@pytest.mark.parametrize("role", ["orchestrator", "verifier"])
def test_crash_prints_init_then_exits_3_and_resume_works(demo: Demo, role: str) -> None:
    first = run_subprocess(demo, demo.argv(role), fault=f"{role}:crash")
    assert first.returncode == CRASH_EXIT_CODE
    assert [line["type"] for line in first.lines] == ["system"]
    assert not demo.checkpoint(role).exists()

    again = run_subprocess(
        demo, demo.argv(role, "--resume", first.init["session_id"]), fault=f"{role}:crash"
    )
    check_stream(again)
    assert demo.checkpoint(role).is_file()


def test_a_fault_for_any_role_and_faults_for_other_roles(demo: Demo, in_process: Runner) -> None:
    crashed = in_process(demo, demo.argv("implementer"), fault="*:crash")
    assert crashed.returncode == CRASH_EXIT_CODE
    untouched = in_process(demo, demo.argv("orchestrator"), fault="tester:crash,tester:slow=60")
    check_stream(untouched)


def test_slow_sleeps_after_the_init_line(demo: Demo, tmp_path: Path) -> None:
    environ = dict(os.environ, **{FAULT_ENV: "orchestrator:slow=60"})
    with subprocess.Popen(
        [sys.executable, "-m", "tmops_plugins.scripted_agent", *demo.argv("orchestrator")],
        cwd=demo.path,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            init = json.loads(process.stdout.readline())
            assert init["subtype"] == "init"
            time.sleep(0.5)
            assert process.poll() is None  # still sleeping, no work done
            assert not demo.checkpoint("orchestrator").exists()
        finally:
            process.terminate()
            returncode = process.wait(timeout=10)
    assert returncode == 143  # SIGTERM is handled: 128 + 15, and no result line


def test_slow_then_works(demo: Demo, in_process: Runner) -> None:
    started = time.monotonic()
    session = in_process(demo, demo.argv("orchestrator"), fault="orchestrator:slow=0.3")
    check_stream(session)
    assert time.monotonic() - started >= 0.3
    assert session.result["duration_ms"] >= 300


def test_wrong_feature_names_another_feature(demo: Demo, in_process: Runner) -> None:
    session = in_process(demo, demo.argv("orchestrator"), fault="orchestrator:wrong-feature")
    check_stream(session)
    assert header(demo.checkpoint("orchestrator"))["Feature"] == f"{DEMO_FEATURE}-other"


def test_exit_without_result_does_the_work_but_ends_the_stream_early(
    demo: Demo, runner: Runner
) -> None:
    session = runner(demo, demo.argv("orchestrator"), fault="orchestrator:exit-without-result")
    assert session.returncode == 0
    assert "result" not in {line["type"] for line in session.lines}
    assert session.lines[-1]["type"] == "user"
    assert demo.checkpoint("orchestrator").is_file()


def test_leave_artefacts_leaves_a_venv_byte_code_and_coverage_uncommitted(
    demo: Demo, in_process: Runner
) -> None:
    session = in_process(demo, demo.argv("tester"), fault="tester:leave-artefacts")
    check_stream(session)
    assert (demo.path / ARTEFACT_VENV / "pyvenv.cfg").is_file()
    assert list((demo.path / "tests" / "__pycache__").glob("*.pyc"))
    assert (demo.path / ".coverage").is_file()
    # the agent commits its tests by path, as its instructions say; the rest is left behind
    committed = subprocess.run(
        ["git", "show", "--name-only", "--format=", "HEAD"],
        cwd=demo.path, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert committed == ["tests/test_slug.py"]
    assert header(demo.checkpoint("tester"))["Status"] == "complete"


def test_detach_leaves_a_daemon_in_a_session_of_its_own(demo: Demo, agent_env: Path) -> None:
    session = run_subprocess(demo, demo.argv("orchestrator"), fault="orchestrator:detach")
    check_stream(session)
    [pid_file] = agent_env.glob("detached-orchestrator-*.pid")
    agent_pid = int(pid_file.stem.rsplit("-", 1)[1])
    daemon = int(pid_file.read_text())
    try:
        start_time = process_start_time(daemon)
        assert start_time is not None
        assert process_alive(daemon, start_time)  # it outlived the agent
        assert os.getsid(daemon) not in {os.getsid(0), agent_pid}  # a session of its own
        stat = Path(f"/proc/{daemon}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[1]) != agent_pid  # re-parented: not the agent's child
        environ = Path(f"/proc/{daemon}/environ").read_bytes().split(b"\0")
        assert f"{STATE_ENV}={agent_env}".encode() in environ
    finally:
        os.kill(daemon, signal.SIGKILL)
