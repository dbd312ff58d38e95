"""The scripted local agent: its command line, like ``claude -p``, and its output formats.

The agent runs for real, as a subprocess and in-process through ``main()``, on the demo project.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tmops_plugins import scripted_agent
from tmops_plugins.scripted_agent import DELAY_ENV, main
from tmops_plugins.scripted_roles import LABEL
from tmops_plugins.scripted_session import CRASH_EXIT_CODE, FAULT_ENV, FAULT_KINDS

from .scripted_support import Demo, Runner, Session, check_stream, run_subprocess

pytestmark = pytest.mark.usefixtures("agent_env")


# -- the command line -----------------------------------------------------------------------------


def test_resume_keeps_the_session_id(demo: Demo, runner: Runner) -> None:
    session_id = str(uuid.uuid4())
    session = runner(demo, demo.argv("orchestrator", "--resume", session_id))
    check_stream(session)
    assert session.init["session_id"] == session_id
    assert session.result["session_id"] == session_id


def test_a_bare_resume_prompt_continues_the_saved_session(
    demo: Demo, in_process: Runner, agent_env: Path
) -> None:
    first = in_process(demo, demo.argv("tester"), fault="tester:crash")
    assert first.returncode == CRASH_EXIT_CODE
    session_id = first.init["session_id"]
    assert (agent_env / f"{session_id}.json").is_file()
    again = in_process(demo, demo.argv(None, "--resume", session_id, prompt="Go on."))
    check_stream(again)
    assert again.init["session_id"] == session_id
    assert demo.checkpoint("tester").is_file()


def test_a_prompt_without_a_role_does_nothing(demo: Demo, in_process: Runner) -> None:
    session = in_process(demo, demo.argv(None, prompt="Say hello."))
    assert session.returncode == 0
    assert session.result["is_error"] is False
    assert "no tmops role" in session.result["result"]
    assert not list(demo.checkpoints.iterdir())


def test_an_unknown_flag_exits_1_with_no_json(demo: Demo) -> None:
    session = run_subprocess(demo, [*demo.argv("orchestrator"), "--bogus-flag"])
    assert session.returncode == 1
    assert session.stdout == ""
    assert "--bogus-flag" in session.stderr
    assert not demo.checkpoint("orchestrator").exists()


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["-p", "--output-format", "stream-json", "Hi"], {}, "requires --verbose"),
        (["-p", "--output-format", "xml", "--verbose", "Hi"], {}, "invalid choice"),
        (["--verbose", "Hi"], {}, "print mode only"),
        (["-p", "--resume", "not-a-uuid", "Hi"], {}, "valid session ID"),
        (["-p", "--max-turns", "0", "Hi"], {}, "positive whole number"),
        (["-p", "--permission-mode", "yolo", "Hi"], {}, "invalid choice"),
        (["-p", "--outp", "json", "Hi"], {}, "unrecognized arguments"),
        (["-p", "   "], {}, "Input must be provided"),
        (["-p"], {}, "Input must be provided"),
        (["-p", "Hi"], {FAULT_ENV: "tester:explode"}, "unknown kind"),
        (["-p", "Hi"], {DELAY_ENV: "soon"}, DELAY_ENV),
        (["-p", "Hi"], {DELAY_ENV: "-1"}, DELAY_ENV),
    ],
)
def test_bad_command_lines_exit_1_with_no_json(
    demo: Demo,
    in_process: Runner,
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    session = in_process(demo, argv, **env)
    assert session.returncode == 1
    assert session.stdout == ""
    assert message in session.stderr


def test_help_works_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tmops_plugins.scripted_agent", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no AI model" in done.stdout
    for flag in ("--output-format", "--resume", "--add-dir", "--allowedTools", "--max-turns"):
        assert flag in done.stdout
    assert main(["--help"], stdout=io.StringIO()) == 0


def test_the_module_is_importable_and_documents_itself() -> None:
    assert callable(scripted_agent.main)
    doc = scripted_agent.__doc__ or ""
    assert "NO AI model" in doc
    for kind in FAULT_KINDS:
        assert f"{kind}" in doc


def test_the_prompt_can_come_from_stdin(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    code = main(
        ["-p", "--output-format", "stream-json", "--verbose"],
        stdin=io.StringIO(demo.prompt("orchestrator")),
        stdout=out,
        cwd=demo.path,
    )
    assert code == 0, capsys.readouterr().err
    check_stream(Session(code, out.getvalue(), ""))
    assert demo.checkpoint("orchestrator").is_file()


def test_json_and_text_output_formats(demo: Demo, in_process: Runner) -> None:
    plain = in_process(demo, ["-p", demo.prompt("orchestrator"), "--output-format", "json"])
    assert plain.returncode == 0
    (result,) = plain.lines
    assert result["type"] == "result"
    assert result["subtype"] == "success"

    verbose = in_process(
        demo, ["-p", demo.prompt("orchestrator"), "--output-format", "json", "--verbose"]
    )
    (messages,) = verbose.lines
    assert isinstance(messages, list)
    assert messages[0]["subtype"] == "init"
    assert messages[-1]["type"] == "result"

    text = in_process(demo, ["-p", demo.prompt("orchestrator")])
    assert text.returncode == 0
    assert text.stdout.startswith(f"[{LABEL}] orchestrator: ")
    assert text.stdout.count("\n") == 1


def test_max_turns_ends_with_an_error_result(demo: Demo, in_process: Runner) -> None:
    session = in_process(demo, demo.argv("tester", "--max-turns", "2"))
    assert session.returncode == 1
    assert session.result["subtype"] == "error_max_turns"
    assert session.result["is_error"] is True
    assert session.result["errors"] == ["Reached maximum number of turns (2)"]
    assert len(session.tool_uses()) == 2
    assert not demo.checkpoint("tester").exists()


def test_the_delay_is_slept_before_each_action(demo: Demo, in_process: Runner) -> None:
    started = time.monotonic()
    session = in_process(demo, demo.argv("orchestrator"), **{DELAY_ENV: "0.2"})
    check_stream(session)
    assert time.monotonic() - started >= 0.4  # Read + Write
