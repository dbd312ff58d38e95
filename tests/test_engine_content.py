"""The engine, with REAL processes, on what a checkpoint holds and on what tmops commits.

- A junk completion checkpoint planted before ``start`` is refused by the phase-content
  validator on the adoption path: the phase's agent runs, and the junk is set aside (0600).

The agent is the scripted one (``tmops-scripted-agent``) behind the real claude-code provider;
the helpers are in ``engine_support.py``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine_support import (
    COMPLETIONS,
    SHORT_WORKFLOW,
    Finished,
    run_workflow,
    scripted_config,
)
from tmops_core.workspace.features import InitResult

JUNK = "lorem ipsum dolor sit amet\nnothing a tester could work from\n"
PLAN = COMPLETIONS["orchestrator"]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- a junk checkpoint planted before start -------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("planted")

    def plant(init: InitResult) -> None:
        path = init.checkpoint_dir / PLAN
        path.write_text(JUNK)
        path.chmod(0o644)

    data = scripted_config(base / "state", default_phases=SHORT_WORKFLOW)
    finished = run_workflow(base, data, prepare=plant)
    yield finished
    finished.close()


def test_a_planted_junk_checkpoint_is_not_adopted(planted: Finished) -> None:
    assert planted.events("phase.adopted") == []
    [refused] = [e["data"] for e in planted.events("phase.not_adopted")]
    assert refused["phase"] == "orchestrator"
    assert f"checkpoint {PLAN} rejected by phase-content" in refused["reason"]
    assert "is missing the test plan" in refused["reason"]


def test_the_refusal_names_file_validator_and_reason(planted: Finished) -> None:
    problems = [
        e["data"] for e in planted.events("checkpoint.problem") if e["data"]["severity"] == "error"
    ]
    assert [(p["phase"], p["file"], p["validator"]) for p in problems] == [
        ("orchestrator", str(planted.init.checkpoint_dir / PLAN), "phase-content")
    ]
    assert "'## Action Required'" in problems[0]["message"]


def test_the_orchestrator_agent_runs_instead(planted: Finished) -> None:
    [attempt] = planted.attempts("orchestrator")
    assert (attempt.outcome, attempt.state) == ("succeeded", "completed")
    assert attempt.pid is not None
    plan = (planted.init.checkpoint_dir / PLAN).read_text()
    assert "**From:** Orchestrator" in plan
    assert "## Action Required" in plan
    assert planted.status()["status"] == "completed"


def test_the_junk_is_set_aside_and_private(planted: Finished) -> None:
    [aside] = planted.init.checkpoint_dir.glob(f".{PLAN}.rejected-*")
    assert aside.read_text() == JUNK
    assert mode(aside) == 0o600
