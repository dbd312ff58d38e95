"""The control verbs on a live run of the REAL Claude Code CLI (only the model is faked, by
``tests/fake_anthropic.py``): pause --now stops an agent that is in the middle of a tool call,
resume runs the phase afresh, an approval gate holds the run until approved, rollback undoes
the implementer's code and keeps the tests, retry runs it again, cancel stops it at the gate;
all through the `tmops` CLI against a background engine, as a person would."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tmops_core.agents.processes import process_alive
from tmops_core.service.demo_project import DEMO_FEATURE, DEMO_TASK_SPEC, create_demo_project

from .engine_support import WAIT_S, file_service, new_feature, open_store, write_config
from .fake_anthropic import FakeAnthropic, bash
from .fake_tdd_script import CODE_FILE, TEST_FILE, tdd_script
from .takeover_support import Project, wait_until
from .test_e2e_claude import AGENT_TEST_COMMAND, config_data

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow

#: a real session of the real CLI takes seconds; a whole phase somewhat more
LONG_S = 180.0


def _hang_the_first_tester(script: Any, hung: threading.Event) -> Any:
    """The tester's first session runs ``sleep`` as its first tool call (a hung agent); the
    sessions after it work normally."""
    steps = dict(script.steps)
    first = steps["tester"][0]

    def step(*where: Any) -> Any:
        if hung.is_set():
            return first(*where) if callable(first) else first
        hung.set()
        return [bash("sleep 600", "Wait for the build")]

    steps["tester"] = [step, *steps["tester"][1:]]
    return replace(script, steps=steps)


def _answer(project: Project, *args: str) -> dict[str, Any]:
    done = project.cli(*args, "--json", timeout=LONG_S)
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _watch(project: Project) -> int:
    return project.cli("watch", DEMO_FEATURE, timeout=LONG_S).returncode


def test_every_verb_on_a_live_run_of_the_real_cli(tmp_path: Path, claude_bin: Path) -> None:
    hung = threading.Event()
    script = _hang_the_first_tester(tdd_script(test_command=AGENT_TEST_COMMAND), hung)
    with FakeAnthropic(script) as fake:
        data = config_data(claude_bin, fake.url, tmp_path / "home")
        data["features"]["approve_before"] = ["implementer"]
        config = write_config(tmp_path / "tmops.yaml", data)
        root = create_demo_project(tmp_path / "p").path
        service = file_service(config)
        init = new_feature(service, root)
        assert init.task_spec.read_text() == DEMO_TASK_SPEC
        project = Project(tmp_path, root, config, tmp_path / "state", service, open_store(root))
        try:
            assert project.cli("start", DEMO_FEATURE).returncode == 0
            # pause --now while the tester's CLI waits on its tool call
            wait_until(hung.is_set, timeout=LONG_S, what="the tester's hung tool call")
            agent = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S, what="agent")
            paused = _answer(project, "pause", DEMO_FEATURE, "--now")
            assert (paused["status"], paused["agents_stopped"]) == ("paused", 1)
            assert not process_alive(agent.pid or 0, agent.start_time or 0)
            assert [a.state for a in project.attempts("tester")] == ["interrupted"]
            assert _watch(project) == 3

            # resume: the tester runs afresh; the approval gate holds the implementer
            assert _answer(project, "resume", DEMO_FEATURE)["status"] in ("queued", "running")
            assert _watch(project) == 3, project.run()
            assert (project.run().pause_reason, project.run().current_phase) == (
                "awaiting_approval", "implementer",
            )  # fmt: skip
            assert [a.state for a in project.attempts("tester")] == ["interrupted", "completed"]
            assert _answer(project, "approve", DEMO_FEATURE)["approved"] == "implementer"
            assert _watch(project) == 0, project.run()
            worktree = Path(init.worktree)
            assert (worktree / CODE_FILE).is_file()

            # rollback of the implementer: code gone, tests kept, backup ref taken
            rolled = _answer(project, "rollback", DEMO_FEATURE, "--phase", "implementer")
            assert CODE_FILE in rolled["reverted"]
            assert not (worktree / CODE_FILE).exists()
            assert (worktree / TEST_FILE).is_file()
            # retry from the implementer: its approval went with the rollback, so it waits
            retried = _answer(project, "retry", DEMO_FEATURE, "--phase", "implementer")
            assert retried["retry_from"] == "implementer"
            assert _watch(project) == 3
            # cancel it there, resume it (back to the gate), approve it
            assert _answer(project, "cancel", DEMO_FEATURE)["status"] == "cancelled"
            assert _watch(project) == 4
            assert _answer(project, "resume", DEMO_FEATURE)["status"] in ("queued", "running")
            assert _watch(project) == 3
            _answer(project, "approve", DEMO_FEATURE)
            assert _watch(project) == 0, project.run()
            assert (worktree / CODE_FILE).is_file()
            states = [a.state for a in project.attempts("implementer")]
            assert states == ["completed", "reset", "reset", "completed"], states
        finally:
            project.close()
