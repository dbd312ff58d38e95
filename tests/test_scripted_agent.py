"""The scripted local agent (no model behind it) and the demo project it works on.

The agent runs for real: as a subprocess (``python -m tmops_plugins.scripted_agent``, exactly
as tmops starts ``claude``) and in-process through ``main()``, in a demo repository made by
``create_demo_project``, with the prompts the ``phases`` plugin really writes. The parsing of
faults and prompts and the session store are unit-tested in ``test_scripted_session.py``.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from tmops_core.demo_project import (
    DEMO_FEATURE,
    DEMO_TASK_SPEC,
    DemoProject,
    create_demo_project,
)
from tmops_hookspecs import PhaseSpec
from tmops_plugins import scripted_agent
from tmops_plugins.phases import tmops_register_phases
from tmops_plugins.scripted_agent import DELAY_ENV, main
from tmops_plugins.scripted_roles import LABEL
from tmops_plugins.scripted_session import CRASH_EXIT_CODE, FAULT_ENV, FAULT_KINDS, STATE_ENV

from .conftest import git

RUN = "initial"
PHASES: dict[str, PhaseSpec] = {spec.name: spec for spec in tmops_register_phases()}
COMPLETION = {name: spec.completion_checkpoint for name, spec in PHASES.items()}


# -- fixtures and helpers -----------------------------------------------------------------------


@attrs.frozen
class Session:
    """One finished agent process."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[Any]:
        """The stream-json lines, parsed (each one must be JSON)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def init(self) -> dict[str, Any]:
        first: dict[str, Any] = self.lines[0]
        return first

    @property
    def result(self) -> dict[str, Any]:
        last: dict[str, Any] = self.lines[-1]
        assert last["type"] == "result", last
        return last

    def tool_uses(self) -> list[dict[str, Any]]:
        return [
            block
            for line in self.lines
            if line["type"] == "assistant"
            for block in line["message"]["content"]
            if block["type"] == "tool_use"
        ]


@attrs.frozen
class Demo:
    project: DemoProject
    checkpoints: Path
    spec: Path

    @property
    def path(self) -> Path:
        return self.project.path

    def prompt(self, role: str) -> str:
        phase = PHASES[role]
        return phase.prompt.format(
            feature=DEMO_FEATURE,
            run=RUN,
            task_spec=self.spec,
            worktree=self.path,
            checkpoint_dir=self.checkpoints,
            trigger_checkpoint=phase.trigger_checkpoint or "",
            completion_checkpoint=phase.completion_checkpoint,
        )

    def checkpoint(self, role: str) -> Path:
        return self.checkpoints / COMPLETION[role]

    def argv(self, role: str | None, *extra: str, prompt: str | None = None) -> list[str]:
        text = prompt if prompt is not None else self.prompt(str(role))
        return [
            "-p",
            text,
            "--output-format",
            "stream-json",
            "--verbose",
            "--append-system-prompt",
            "role instructions",
            "--permission-mode",
            "acceptEdits",
            "--add-dir",
            str(self.checkpoints),
            "--allowedTools",
            "Read,Write",
            "Bash(git add:*)",
            *extra,
        ]

    def trigger(self, name: str, sender: str = "Orchestrator", to: str = "Implementer") -> None:
        """A trigger checkpoint as tmops' orchestrator step writes it."""
        (self.checkpoints / name).write_text(
            f"# Checkpoint: {name}\n**From:** {sender}\n**To:** {to}\n"
            f"**Timestamp:** 2026-01-01 10:00:00\n**Feature:** {DEMO_FEATURE}\n**Run:** {RUN}\n"
            "## Action Required\nGo on.\n"
        )


Runner = Callable[..., Session]


@pytest.fixture(autouse=True)
def agent_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No fault or delay from outside; sessions saved under tmp_path."""
    monkeypatch.delenv(FAULT_ENV, raising=False)
    monkeypatch.delenv(DELAY_ENV, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv(STATE_ENV, str(state))
    return state


@pytest.fixture
def demo(tmp_path: Path) -> Demo:
    project = create_demo_project(tmp_path / "demo")
    run_dir = tmp_path / "tmops-run"
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    spec = run_dir / "TASK_SPEC.md"
    spec.write_text(project.task_spec, encoding="utf-8")
    return Demo(project=project, checkpoints=checkpoints, spec=spec)


def run_subprocess(demo: Demo, argv: list[str], fault: str = "", **env: str) -> Session:
    environ = dict(os.environ, **env)
    if fault:
        environ[FAULT_ENV] = fault
    done = subprocess.run(
        [sys.executable, "-m", "tmops_plugins.scripted_agent", *argv],
        cwd=demo.path,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Session(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Runner:
    def run(demo: Demo, argv: list[str], fault: str = "", **env: str) -> Session:
        with monkeypatch.context() as patch:
            if fault:
                patch.setenv(FAULT_ENV, fault)
            for name, value in env.items():
                patch.setenv(name, value)
            out = io.StringIO()
            code = main(argv, stdout=out, stdin=io.StringIO(""), cwd=demo.path)
        return Session(code, out.getvalue(), capsys.readouterr().err)

    return run


@pytest.fixture(params=["subprocess", "in-process"])
def runner(request: pytest.FixtureRequest, in_process: Runner) -> Runner:
    return run_subprocess if request.param == "subprocess" else in_process


def log_subjects(path: Path) -> list[tuple[str, str]]:
    """(id, subject) newest first."""
    lines = git(path, "log", "--format=%H %s").splitlines()
    return [(sha, subject) for sha, _, subject in (line.partition(" ") for line in lines)]


def header(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^\*\*(\w+):\*\* (.*)$", path.read_text(), re.M))


def section(path: Path, title: str) -> str:
    text = path.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no ## {title} in {path}"
    return match.group(1).strip()


def pytest_in(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=path,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
    )


def check_stream(session: Session) -> None:
    """The stream-json contract: init first, tool_use/tool_result pairs, result last."""
    assert session.returncode == 0, session.stderr
    init = session.init
    assert init["type"] == "system"
    assert init["subtype"] == "init"
    assert init["model"] == "scripted"
    assert init["claude_code_version"] == "scripted"
    assert init["tools"] == ["Read", "Write", "Bash"]
    session_id = init["session_id"]
    assert uuid.UUID(session_id)
    body = session.lines[1:-1]
    assert body, "no action at all"
    pending: str | None = None
    for line in body:
        assert line["session_id"] == session_id
        content = line["message"]["content"]
        assert len(content) == 1
        if line["type"] == "assistant":
            assert pending is None, "a tool_use without its tool_result"
            if content[0]["type"] == "tool_use":
                assert content[0]["name"] in {"Read", "Write", "Bash"}
                pending = content[0]["id"]
        else:
            assert line["type"] == "user"
            assert content[0]["type"] == "tool_result"
            assert content[0]["tool_use_id"] == pending
            pending = None
    assert body[-1]["type"] == "assistant"
    assert body[-1]["message"]["content"][0]["type"] == "text"
    result = session.result
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["session_id"] == session_id
    assert result["result"].startswith(f"[{LABEL}]")
    assert result["num_turns"] == sum(1 for line in body if line["type"] == "assistant")
    assert result["total_cost_usd"] == 0.0
    assert result["usage"] == {}
    assert result["permission_denials"] == []
    assert isinstance(result["duration_ms"], int)


def check_checkpoint(demo: Demo, role: str, sender: str, to: str) -> dict[str, str]:
    path = demo.checkpoint(role)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith(f"# Checkpoint: {path.name}\n")
    fields = header(path)
    assert fields["From"] == sender
    assert fields["To"] == to
    assert fields["Feature"] == DEMO_FEATURE
    assert fields["Run"] == RUN
    assert fields["Status"] == "complete"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", fields["Timestamp"])
    assert not [p for p in demo.checkpoints.iterdir() if p.name.endswith(".tmp")]
    return fields


# -- the whole workflow ---------------------------------------------------------------------------


def test_the_four_roles_do_the_demo_task_test_first(demo: Demo, runner: Runner) -> None:
    orchestrator = runner(demo, demo.argv("orchestrator"))
    check_stream(orchestrator)
    check_checkpoint(demo, "orchestrator", "Orchestrator", "Tester")
    plan = demo.checkpoint("orchestrator")
    assert "from slug import slugify" in section(plan, "Action Required")
    assert "'Crème Brûlée'" in section(plan, "Action Required")
    assert "003-tests-complete.md" in section(plan, "Expected Response")
    assert [t["name"] for t in orchestrator.tool_uses()] == ["Read", "Write"]
    assert orchestrator.tool_uses()[0]["input"] == {"file_path": str(demo.spec)}
    assert len(log_subjects(demo.path)) == 1  # the orchestrator commits nothing

    tester = runner(demo, demo.argv("tester"))
    check_stream(tester)
    check_checkpoint(demo, "tester", "Tester", "Orchestrator")
    test_file = demo.path / "tests" / "test_slug.py"
    assert "from slug import slugify" in test_file.read_text()
    assert not (demo.path / "slug.py").exists()
    report = demo.checkpoint("tester")
    assert "- Tests written: 6\n- Passing: 0/6" in section(report, "Metrics")
    assert "No module named 'slug'" in section(report, "Work Completed")
    test_commit, subject = log_subjects(demo.path)[0]
    assert subject.startswith("test(slug): ")
    assert section(report, "Git Commit") == test_commit
    assert git(demo.path, "show", "--name-only", "--format=", test_commit).split() == [
        "tests/test_slug.py"
    ]
    bash = [t["input"]["command"] for t in tester.tool_uses() if t["name"] == "Bash"]
    assert bash[0].endswith(" -m pytest -q")
    assert bash[1:3] == ["git add tests/test_slug.py", bash[2]]
    assert bash[2].startswith("git commit -m 'test(slug): ")

    demo.trigger("004-impl-trigger.md")
    implementer = runner(demo, demo.argv("implementer"))
    check_stream(implementer)
    check_checkpoint(demo, "implementer", "Implementer", "Orchestrator")
    assert "- Passing: 6/6" in section(demo.checkpoint("implementer"), "Metrics")
    code_commit, subject = log_subjects(demo.path)[0]
    assert subject.startswith("feat(slug): ")
    assert section(demo.checkpoint("implementer"), "Git Commit") == code_commit
    read = [t["input"]["file_path"] for t in implementer.tool_uses() if t["name"] == "Read"]
    assert read == [
        str(demo.checkpoints / n) for n in ("004-impl-trigger.md", COMPLETION["tester"])
    ]
    assert pytest_in(demo.path).returncode == 0

    demo.trigger("006-verify-trigger.md", to="Verifier")
    verifier = runner(demo, demo.argv("verifier"))
    check_stream(verifier)
    check_checkpoint(demo, "verifier", "Verifier", "Orchestrator")
    verdict = demo.checkpoint("verifier")
    assert section(verdict, "Quality Score") == "Quality score: 9/10\nFeature ready for merge: YES"
    assert f"confirmed (test {test_commit} before code {code_commit})" in verdict.read_text()
    assert section(verdict, "Git Commit") == code_commit
    commands = [t["input"]["command"] for t in verifier.tool_uses() if t["name"] == "Bash"]
    assert commands[0] == "git log '--format=%H %s'"

    subjects = [subject for _, subject in log_subjects(demo.path)]
    assert [s.split("(")[0] for s in subjects] == ["feat", "test", "chore: demo project for tmops"]
    assert git(demo.path, "status", "--porcelain") == ""  # all committed, caches ignored


def test_the_verifier_says_no_when_the_code_is_missing(demo: Demo, in_process: Runner) -> None:
    in_process(demo, demo.argv("tester"))
    session = in_process(demo, demo.argv("verifier"))
    check_stream(session)
    verdict = demo.checkpoint("verifier")
    assert section(verdict, "Quality Score") == "Quality score: 4/10\nFeature ready for merge: NO"
    assert "no code commit found" in verdict.read_text()
    assert "NOT ready" in session.result["result"]


def test_a_repository_without_identity_still_gets_the_commit(
    demo: Demo, in_process: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    git(demo.path, "config", "--unset", "user.name")
    git(demo.path, "config", "--unset", "user.email")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    session = in_process(demo, demo.argv("tester"))
    check_stream(session)
    assert git(demo.path, "log", "-1", "--format=%ae") == "scripted-agent@tmops.invalid\n"
    commands = [t["input"]["command"] for t in session.tool_uses() if t["name"] == "Bash"]
    assert any(c.startswith("git -c 'user.name=tmops scripted agent'") for c in commands)


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


# -- faults ---------------------------------------------------------------------------------------


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


# -- the demo project -----------------------------------------------------------------------------


def test_create_demo_project(tmp_path: Path) -> None:
    project = create_demo_project(tmp_path / "new" / "demo")
    assert project.path == (tmp_path / "new" / "demo").resolve()
    assert project.feature == DEMO_FEATURE == "slugify"
    assert project.task_spec == DEMO_TASK_SPEC
    for title in (
        "User Story",
        "Acceptance Criteria",
        "Technical Constraints",
        "Definition of Done",
    ):
        assert f"## {title}\n" in project.task_spec
    assert "slug.py" in project.task_spec
    assert "python -m pytest -q" in project.task_spec
    path = project.path
    assert git(path, "branch", "--show-current") == "main\n"
    assert len(log_subjects(path)) == 1
    assert git(path, "config", "user.name") == "tmops demo\n"
    assert git(path, "config", "user.email") == "demo@tmops.invalid\n"
    assert git(path, "status", "--porcelain") == ""
    assert sorted(git(path, "ls-files").split()) == [
        ".gitignore",
        "README.md",
        "pyproject.toml",
        "tests/__init__.py",
    ]
    assert 'pythonpath = ["."]' in (path / "pyproject.toml").read_text()
    assert pytest_in(path).returncode == 5  # no tests yet, and no error


def test_create_demo_project_refuses_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(FileExistsError):
        create_demo_project(tmp_path / "used")
    (tmp_path / "empty").mkdir()
    assert create_demo_project(tmp_path / "empty").path == (tmp_path / "empty").resolve()
