"""What a person sees while agents work: the real ``tmops`` under a pseudo-terminal draws the
live view (the phases with their state and time, elapsed time, cost, the agents' tool calls as
they happen); with stdout a pipe the same run is one plain line per event. Real processes, a
real pty, the scripted agent playing every role."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tmops_core.service.demo_project import DEMO_FEATURE

from .takeover_support import TMOPS, make_project

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow

#: what rich's Live writes to redraw in place: erase the line, go up one
REDRAW = "\x1b[2K\x1b[1A"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """A program run with a 120x50 pseudo-terminal as stdin, stdout and stderr."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.output = bytearray()

    @property
    def screen(self) -> str:
        """Everything written to the terminal so far."""
        return self.output.decode("utf-8", errors="replace")

    def read_until(self, done: Callable[[], bool], *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not chunk:
                return
            self.output += chunk

    def finish(self, *, timeout: float) -> int:
        """Read to the program's end; its exit code (killed if it outlives ``timeout``)."""
        self.read_until(lambda: False, timeout=timeout)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        os.close(self.master)
        return self.process.wait(timeout=30)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TERM": "xterm-256color"}
    for name in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TERM_PROGRAM"):
        env.pop(name, None)
    return env


def test_the_demo_in_a_terminal_draws_the_live_view(tmp_path: Path) -> None:
    terminal = Terminal([TMOPS, "demo", "--dir", str(tmp_path / "demo")], _env(tmp_path))
    code = terminal.finish(timeout=240)
    screen = terminal.screen
    assert code == 0, screen
    assert REDRAW in screen  # drawn in place, not printed line after line
    text = ANSI.sub("", screen)
    # the agents' tool calls, as they happened
    assert "tester: Write tests/test_slug.py" in text
    assert re.search(r"tester: Bash python[0-9.]* -m pytest -q", text), text
    assert "implementer: Write slug.py" in text
    # the phase timeline, the run's elapsed time and its cost
    for phase in ("orchestrator", "tester", "implementer", "verifier"):
        assert re.search(rf"{phase}\s+✓ completed\s+[0-9.]+ s", text), phase
    assert re.search(r"slugify\s+running\s+run initial\s+elapsed [0-9.]+ s\s+cost \$0\.0000", text)
    assert re.search(r"slugify\s+completed\s+run initial\s+elapsed", text)
    assert "▶ in_progress" in text  # a frame drawn while a phase ran
    assert "slugify: completed; next: review and merge feature/slugify" in text


def test_the_demo_into_a_pipe_prints_one_plain_line_per_event(tmp_path: Path) -> None:
    done = subprocess.run(
        [TMOPS, "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, env=_env(tmp_path), timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    clock = r"[0-9]{2}:[0-9]{2}:[0-9]{2}"
    assert any(re.fullmatch(rf"{clock} tester: Write tests/test_slug\.py", line) for line in lines)
    assert any(
        re.fullmatch(rf"{clock} tester: Bash python[0-9.]* -m pytest -q", line) for line in lines
    )
    assert any(
        re.fullmatch(rf"{clock} verifier: Write 007-verify-complete\.md", line) for line in lines
    )
    assert any(
        re.fullmatch(rf"{clock} tester -> implementer \([0-9.]+ s\)", line) for line in lines
    )
    # in order: the tests are written before they are run, and both before the tester's end
    order = [
        next(i for i, line in enumerate(lines) if needle in line)
        for needle in ("tester: Write tests/", "tester: Bash python", "tester -> implementer")
    ]
    assert order == sorted(order)


def test_ctrl_c_on_the_live_view_stops_following_and_gives_the_terminal_back(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, fault="orchestrator:slow=60")
    try:
        assert project.cli("start", DEMO_FEATURE).returncode == 0
        terminal = Terminal(
            [TMOPS, "--config", str(project.config), "watch", DEMO_FEATURE,
             "--workspace", str(project.root)],
            _env(tmp_path),
        )  # fmt: skip
        terminal.read_until(lambda: "▶ in_progress" in terminal.screen, timeout=60)
        assert "▶ in_progress" in terminal.screen  # the view is up, the orchestrator at work
        terminal.process.send_signal(signal.SIGINT)
        assert terminal.finish(timeout=60) == 130
        text = ANSI.sub("", terminal.screen)
        assert "Traceback" not in text
        assert "stopped following slugify; its run goes on in the background engine" in text
        assert terminal.screen.rfind("\x1b[?25h") > terminal.screen.rfind("\x1b[?25l")  # cursor
        assert project.run().status == "running"
    finally:
        project.cli("cancel", DEMO_FEATURE)
        project.close()
