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
from pathlib import Path

from .takeover_support import TMOPS

#: what rich's Live writes to redraw in place: erase the line, go up one
REDRAW = "\x1b[2K\x1b[1A"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _in_a_terminal(argv: list[str], env: dict[str, str], *, timeout: float) -> tuple[int, str]:
    """Run ``argv`` with a 120x50 pseudo-terminal as stdin, stdout and stderr; its exit code
    and everything it wrote to the terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    process = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            output += chunk
        else:
            process.send_signal(signal.SIGKILL)
    finally:
        os.close(master)
    return process.wait(timeout=30), output.decode("utf-8", errors="replace")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TERM": "xterm-256color"}
    for name in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TERM_PROGRAM"):
        env.pop(name, None)
    return env


def test_the_demo_in_a_terminal_draws_the_live_view(tmp_path: Path) -> None:
    code, screen = _in_a_terminal(
        [TMOPS, "demo", "--dir", str(tmp_path / "demo")], _env(tmp_path), timeout=240
    )
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
