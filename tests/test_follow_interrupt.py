"""Following a run tells the truth: ``start --resume --wait`` shows the new run's events only,
and Ctrl-C on ``start --wait``, ``watch`` or ``demo`` stops the following at once (exit 130)
while the run goes on in the background engine. Real ``tmops`` processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tmops_core.service.demo_project import DEMO_FEATURE

from .engine_support import SHORT_WORKFLOW, open_store, scripted_config, write_config
from .takeover_support import TMOPS, engines_of, make_project, wait_until

RUN = "initial"


def _until_line(process: subprocess.Popen[str], needle: str) -> list[str]:
    """The process's stdout lines up to the first holding ``needle``."""
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or needle not in lines[-1]:
        line = process.stdout.readline()
        assert line, f"no line with {needle!r}; got {lines}"
        lines.append(line)
    return lines


def _check_interrupted(process: subprocess.Popen[str], workspace: Path) -> str:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "Traceback" not in err
    assert "goes on in the background engine" in out
    assert f"`tmops watch {DEMO_FEATURE} --workspace {workspace}` follows it again" in out
    assert f"`tmops cancel {DEMO_FEATURE} --workspace {workspace}` stops it" in out
    return out


@pytest.mark.parametrize("follow", [("start", "--wait"), ("watch",)])
def test_ctrl_c_stops_following_at_once_and_the_run_goes_on(
    tmp_path: Path, follow: tuple[str, ...]
) -> None:
    project = make_project(tmp_path, fault="orchestrator:slow=60")
    try:
        if follow[0] == "watch":
            assert project.cli("start", DEMO_FEATURE).returncode == 0
        process = subprocess.Popen(
            [TMOPS, "--config", str(project.config), *follow[:1], DEMO_FEATURE, *follow[1:],
             "--workspace", str(project.root)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _until_line(process, "session.started phase=orchestrator")
        _check_interrupted(process, project.root)
        # it did not wait for the run: the orchestrator's agent sleeps for a minute first
        assert project.run().status == "running"
        assert project.live_agent("orchestrator") is not None
    finally:
        project.cli("cancel", DEMO_FEATURE)
        project.close()


def test_ctrl_c_on_the_demo_leaves_its_run_to_the_background_engine(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    env = {**os.environ, "HOME": str(tmp_path / "home")}  # the scripted agent's state
    process = subprocess.Popen(
        [TMOPS, "demo", "--dir", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    _until_line(process, "session.started phase=orchestrator")
    out = _check_interrupted(process, root)
    assert "finished in" not in out
    store = open_store(root)
    try:
        # the engine, a process of its own, drives the run to its end
        wait_until(
            lambda: (run := store.run(DEMO_FEATURE, RUN)) and run.status == "completed",
            timeout=120, what="the demo's run to complete in the background",
        )  # fmt: skip
    finally:
        store.close()


def test_start_resume_wait_shows_only_the_new_runs_events(tmp_path: Path) -> None:
    failing = write_config(
        tmp_path / "failing.yaml",
        scripted_config(tmp_path / "state", fault="orchestrator:crash:always", max_retries=0,
                        default_phases=SHORT_WORKFLOW),
    )  # fmt: skip
    project = make_project(tmp_path, default_phases=SHORT_WORKFLOW)

    def tmops(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TMOPS, "--config", str(config), *args, "--workspace", str(project.root)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    try:
        first = tmops(failing, "start", DEMO_FEATURE, "--wait")
        assert first.returncode == 1, first.stdout + first.stderr
        assert "exit code 3" in first.stdout  # the crash, an event of the first attempt
        # the engine of the failing config goes idle and exits; the next one reads the other
        wait_until(lambda: not engines_of(project.root), timeout=60, what="the engine to exit")
        resumed = tmops(project.config, "start", DEMO_FEATURE, "--resume", "--wait")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "exit code 3" not in resumed.stdout
        assert f"{DEMO_FEATURE}: failed" not in resumed.stdout
        started = [line for line in resumed.stdout.splitlines() if "session.started" in line]
        assert len(started) == 2, resumed.stdout  # the orchestrator's and the tester's, once
        assert resumed.stdout.splitlines()[-1].startswith(f"{DEMO_FEATURE}: completed")
    finally:
        project.close()


def _engine_child(parent: int) -> int | None:
    """The ``tmops engine`` process ``parent`` started, once it runs (exec'd)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"engine" in argv:
            return int(name)
    return None


@pytest.mark.parametrize("verb", ["start", "resume"])
def test_ctrl_c_while_a_verb_waits_for_the_engine_to_come_up(tmp_path: Path, verb: str) -> None:
    project = make_project(tmp_path, fault="orchestrator:crash:always", max_retries=0)
    if verb == "resume":  # a failed run, and no engine left to serve it
        assert project.cli("start", DEMO_FEATURE, "--wait", timeout=120).returncode == 1
        wait_until(lambda: not engines_of(project.root), timeout=60, what="the engine to exit")
    process = subprocess.Popen(
        [TMOPS, "--config", str(project.config), verb, DEMO_FEATURE, "--wait",
         "--workspace", str(project.root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    engine = wait_until(lambda: _engine_child(process.pid), timeout=60, what="the engine")
    os.kill(engine, signal.SIGSTOP)  # stopped before it says it serves: the verb waits for it
    try:
        out = _check_interrupted(process, project.root)
        assert "session.started" not in out  # it was still waiting, not yet following
    finally:
        os.kill(engine, signal.SIGCONT)
        project.cli("cancel", DEMO_FEATURE)
        project.close()
