"""The scripted agent's journal: start and end lines, and the agents alive alongside.

Real agent processes (``python -m tmops_plugins.scripted_agent``) on the demo project; one is
made slow (``slow=<s>`` fault) so that another can start while it lives, then killed with
SIGKILL as a dying engine's agent would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_plugins.scripted_journal import JOURNAL_ENV, MARK_ENV, read_journal
from tmops_plugins.scripted_session import FAULT_ENV

from .scripted_support import Demo, Runner, check_stream

pytestmark = pytest.mark.usefixtures("agent_env")


def _starts(folder: Path) -> list[dict[str, object]]:
    return [line for line in read_journal(folder) if line["event"] == "start"]


def _background(demo: Demo, role: str, journal: Path, fault: str) -> subprocess.Popen[str]:
    env = dict(os.environ, **{JOURNAL_ENV: str(journal), FAULT_ENV: fault})
    return subprocess.Popen(
        [sys.executable, "-m", "tmops_plugins.scripted_agent", *demo.argv(role)],
        cwd=demo.path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _wait_for_start(journal: Path, pid: int) -> None:
    deadline = time.monotonic() + 30
    while not any(line["pid"] == pid for line in _starts(journal)):
        assert time.monotonic() < deadline, "the slow agent never wrote its start line"
        time.sleep(0.02)


def test_a_session_writes_its_start_and_end_lines(
    demo: Demo, in_process: Runner, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    session = in_process(
        demo, demo.argv("orchestrator"), **{JOURNAL_ENV: str(journal), MARK_ENV: "m-1"}
    )
    check_stream(session)
    start, end = read_journal(journal)
    assert start["event"] == "start"
    assert (start["pid"], start["role"], start["feature"], start["run"]) == (
        os.getpid(),
        "orchestrator",
        DEMO_FEATURE,
        "initial",
    )
    assert start["session_id"] == session.init["session_id"]
    assert (start["resumed"], start["mark"], start["alongside"]) == (False, "m-1", [])
    assert end == {"event": "end", "pid": os.getpid(), "time": end["time"], "exit_code": 0}
    assert float(str(end["time"])) >= float(str(start["time"]))
    assert oct((journal / "journal.jsonl").stat().st_mode & 0o777) == oct(0o600)


def test_without_the_variable_there_is_no_journal(
    demo: Demo, in_process: Runner, tmp_path: Path
) -> None:
    check_stream(in_process(demo, demo.argv("orchestrator")))
    assert not list(tmp_path.rglob("journal.jsonl"))


def test_an_agent_started_while_another_of_its_feature_lives_names_it(
    demo: Demo, in_process: Runner, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    slow = _background(demo, "orchestrator", journal, "orchestrator:slow=60")
    try:
        _wait_for_start(journal, slow.pid)
        check_stream(in_process(demo, demo.argv("tester"), **{JOURNAL_ENV: str(journal)}))
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    starts = _starts(journal)
    assert [s["role"] for s in starts] == ["orchestrator", "tester"]
    assert starts[1]["alongside"] == [{"pid": slow.pid, "role": "orchestrator"}]
    # killed: no end line for it, and its lock died with it
    ends = [line["pid"] for line in read_journal(journal) if line["event"] == "end"]
    assert ends == [os.getpid()]
    check_stream(in_process(demo, demo.argv("implementer"), **{JOURNAL_ENV: str(journal)}))
    assert _starts(journal)[-1]["alongside"] == []


def test_an_agent_of_another_feature_is_not_counted(
    demo: Demo, in_process: Runner, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    other = demo.prompt("orchestrator").replace(f"Feature: {DEMO_FEATURE} ", "Feature: other ")
    assert other != demo.prompt("orchestrator")
    env = dict(os.environ, **{JOURNAL_ENV: str(journal), FAULT_ENV: "orchestrator:slow=60"})
    slow = subprocess.Popen(
        [sys.executable, "-m", "tmops_plugins.scripted_agent",
         *demo.argv(None, prompt=other)],
        cwd=demo.path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_start(journal, slow.pid)
        in_process(demo, demo.argv("orchestrator"), **{JOURNAL_ENV: str(journal)})
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    assert [(s["feature"], s["alongside"]) for s in _starts(journal)] == [
        ("other", []),
        (DEMO_FEATURE, []),
    ]


def test_a_sigterm_still_writes_the_end_line(demo: Demo, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    slow = _background(demo, "orchestrator", journal, "orchestrator:slow=60")
    try:
        _wait_for_start(journal, slow.pid)
        slow.send_signal(signal.SIGTERM)
        assert slow.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    assert read_journal(journal)[-1] == {
        "event": "end",
        "pid": slow.pid,
        "time": read_journal(journal)[-1]["time"],
        "exit_code": 128 + signal.SIGTERM,
    }


def test_a_journal_that_cannot_be_written_does_not_stop_the_session(
    demo: Demo, in_process: Runner, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the journal folder should be\n")
    session = in_process(demo, demo.argv("orchestrator"), **{JOURNAL_ENV: str(blocker)})
    check_stream(session)
    assert "cannot open the journal" in session.stderr
    assert demo.checkpoint("orchestrator").is_file()
