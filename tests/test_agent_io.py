"""An agent's output, stdin and log, through real processes run by this interpreter."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loguru import logger

from tmops_core.agents.io import STDERR_TAIL_BYTES
from tmops_hookspecs import WorkspaceError

from .test_supervisor import Agent, run, script_writer


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], list[str]]:
    return script_writer(tmp_path)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    factory = Agent(tmp_path)
    yield factory
    factory.cleanup()


def test_both_streams_go_to_a_private_log(
    agent: Agent, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    argv = script("""
        import sys
        print("out 1")
        sys.stderr.write("err 1\\r\\n")
        sys.stderr.flush()
        print("out 2")
        sys.stderr.write("x" * 5000 + "\\nerr last\\n")
    """)
    outcome = run(agent(argv))
    log = tmp_path / "logs" / "agent.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    text = log.read_text()
    assert "out 1\n" in text
    assert "out 2\n" in text
    assert "[stderr] err 1\n" in text
    assert "[stderr] err last\n" in text
    assert text.index("out 1") < text.index("out 2")
    assert outcome.stderr_tail.endswith("x\nerr last\n")
    assert len(outcome.stderr_tail.encode()) == STDERR_TAIL_BYTES
    assert outcome.lines == 2


def test_log_is_appended_and_never_follows_a_symlink(
    agent: Agent, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    argv = script("print('again')\n")
    run(agent(argv))
    run(agent(argv))
    assert (tmp_path / "logs" / "agent.log").read_text() == "again\nagain\n"
    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    (tmp_path / "logs" / "link.log").symlink_to(target)
    with pytest.raises(WorkspaceError, match="symlink"):
        agent(argv, log_name="link.log").start()
    assert target.read_text() == ""


def test_stdin_is_delivered_then_closed(agent: Agent, script: Callable[[str], list[str]]) -> None:
    argv = script("""
        import hashlib, sys
        data = sys.stdin.buffer.read()
        print(len(data), hashlib.sha256(data).hexdigest())
    """)
    text = "prompt \u00e9\n" * 30000  # larger than a pipe buffer
    outcome = run(agent(argv, stdin=text))
    assert outcome.returncode == 0
    data = text.encode()
    assert agent.lines == [f"{len(data)} {hashlib.sha256(data).hexdigest()}"]


def test_without_stdin_the_child_reads_end_of_file(
    agent: Agent, script: Callable[[str], list[str]]
) -> None:
    argv = script("import sys\nprint(repr(sys.stdin.read()))\n")
    run(agent(argv))
    assert agent.lines == ["''"]


def test_invalid_utf8_is_read_with_replacement(
    agent: Agent, script: Callable[[str], list[str]]
) -> None:
    argv = script(r"""
        import sys
        sys.stdout.buffer.write(b"\xff\xfeok\n\xc3\xa9\n")
    """)
    outcome = run(agent(argv))
    assert agent.lines == ["\ufffd\ufffdok", "\u00e9"]
    assert outcome.returncode == 0


def test_a_failing_on_line_is_logged_once_and_reading_goes_on(
    agent: Agent, script: Callable[[str], list[str]], tmp_path: Path
) -> None:
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        raise ValueError("provider bug")

    messages: list[str] = []
    handler = logger.add(messages.append, level="WARNING", format="{message}")
    try:
        argv = script("for i in range(50):\n    print(i)\n")
        outcome = run(agent(argv, on_line=on_line))
    finally:
        logger.remove(handler)
    assert seen == [str(i) for i in range(50)]
    assert outcome.lines == 50
    assert outcome.returncode == 0
    assert len([m for m in messages if "on_line failed" in m]) == 1
    assert (tmp_path / "logs" / "agent.log").read_text().count("\n") == 50
