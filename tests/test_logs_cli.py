"""``tmops logs``: an agent's log printed safely (escape sequences out), found by role and run,
followed with ``-f`` until the run ends; clear errors for what is not there, and a log reached
through a link refused. ``tmops list --watch`` shows the listing again until Ctrl-C. Real
``tmops`` processes, real files, a real run of the scripted agent."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmops_core.service.demo_project import DEMO_FEATURE

from .engine_support import SHORT_WORKFLOW
from .takeover_support import RUN, TMOPS, Project, make_project


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    made = make_project(tmp_path, default_phases=SHORT_WORKFLOW)
    yield made
    made.close()


def _logs_dir(project: Project) -> Path:
    return project.root / ".tmops" / DEMO_FEATURE / "runs" / RUN / "logs"


def test_logs_prints_a_roles_log_without_its_escape_sequences(project: Project) -> None:
    logs = _logs_dir(project)
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    (logs / "tester.log").write_bytes(
        b'{"type": "system"}\n\x1b]0;owned\x07\x1b[31mred\x1b[0m line\nno newline at the end'
    )
    done = project.cli("logs", DEMO_FEATURE, "--role", "tester")
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"type": "system"}\nred line\nno newline at the end\n'
    # without --role: the role of the last phase that has a log
    assert project.cli("logs", DEMO_FEATURE).stdout == done.stdout


def test_logs_says_clearly_what_is_not_there(project: Project) -> None:
    nothing = project.cli("logs", DEMO_FEATURE)
    assert nothing.returncode == 1
    assert "no agent of slugify has written a log yet" in nothing.stderr
    role = project.cli("logs", DEMO_FEATURE, "--role", "tester")
    assert role.returncode == 1
    assert "the tester of slugify (run initial) has written no log yet" in role.stderr
    assert "--role tester -f` waits for it" in role.stderr
    unknown = project.cli("logs", DEMO_FEATURE, "--role", "reviewer")
    assert unknown.returncode == 1
    assert "no role named 'reviewer'" in unknown.stderr
    assert "the roles: orchestrator, tester" in unknown.stderr
    run = project.cli("logs", DEMO_FEATURE, "--run", "other")
    assert run.returncode == 1
    assert "has no run 'other'" in run.stderr
    feature = project.cli("logs", "nosuch")
    assert feature.returncode == 1
    assert "no feature named 'nosuch'" in feature.stderr
    for stream in (nothing, role, unknown, run, feature):
        assert "Traceback" not in stream.stderr


def test_logs_refuses_a_log_that_is_a_link(project: Project, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("not tmops' to show\n")
    logs = _logs_dir(project)
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    (logs / "tester.log").symlink_to(secret)
    done = project.cli("logs", DEMO_FEATURE, "--role", "tester")
    assert done.returncode == 1
    assert "not tmops' to show" not in done.stdout
    assert "link" in done.stderr


def test_logs_follow_prints_the_agent_as_it_works_until_the_run_ends(project: Project) -> None:
    assert project.cli("start", DEMO_FEATURE).returncode == 0
    done = project.cli("logs", DEMO_FEATURE, "--role", "tester", "-f", timeout=180)
    assert done.returncode == 0, done.stderr
    assert project.run().status == "completed"
    lines = done.stdout.splitlines()
    assert '"subtype": "init"' in lines[0]  # from its first line...
    assert '"type": "result"' in lines[-1]  # ...to its last, the tester's run having ended
    assert any("tests/test_slug.py" in line and '"tool_use"' in line for line in lines)


def test_list_watch_shows_the_listing_again_until_ctrl_c(project: Project) -> None:
    process = subprocess.Popen(
        [TMOPS, "--config", str(project.config), "list", "--watch", "--interval", "0.2",
         "--workspace", str(project.root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    readings = 0
    deadline = time.monotonic() + 60
    while readings < 3 and time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else ""
        if line.startswith("FEATURE"):
            assert line.split() == [
                "FEATURE", "BRANCH", "RUN", "STATUS", "PHASE", "ELAPSED", "COST", "UPDATED"
            ]  # fmt: skip
            row = process.stdout.readline().split()
            assert row[:4] == [DEMO_FEATURE, f"feature/{DEMO_FEATURE}", RUN, "initialized"]
            readings += 1
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert readings == 3
    assert process.returncode == 0, err
    assert "Traceback" not in err
