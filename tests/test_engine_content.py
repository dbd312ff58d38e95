"""The engine, with REAL processes, on what a checkpoint holds and on what tmops commits.

- A junk completion checkpoint planted before ``start`` is refused by the phase-content
  validator on the adoption path: the phase's agent runs, and the junk is set aside (0600).
- In a project with no .gitignore, the build artefacts an agent leaves (a virtual environment,
  byte code, pytest's cache, coverage data) never reach the feature branch; the work does.

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
    FEAT_SUBJECT,
    SHORT_WORKFLOW,
    TEST_SUBJECT,
    Finished,
    git,
    run_workflow,
    scripted_config,
)
from tmops_core.artefacts import is_artefact
from tmops_core.workspace.features import InitResult
from tmops_plugins.scripted_roles import ARTEFACT_VENV, CODE_FILE, TEST_FILE

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


# -- build artefacts in a project without a .gitignore --------------------------------------------


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("artefacts")

    def drop_gitignore(init: InitResult) -> None:
        git(init.worktree, "rm", "-q", ".gitignore")
        git(init.worktree, "commit", "-q", "-m", "chore: a project without a .gitignore")

    data = scripted_config(
        base / "state", fault="tester:leave-artefacts,implementer:leave-artefacts"
    )
    finished = run_workflow(base, data, prepare=drop_gitignore)
    yield finished
    finished.close()


def test_the_run_with_artefacts_left_behind_completes(artefacts: Finished) -> None:
    assert artefacts.status()["status"] == "completed"


def test_the_agent_really_left_artefacts_in_the_worktree(artefacts: Finished) -> None:
    worktree = artefacts.init.worktree
    assert not (worktree / ".gitignore").exists()
    assert (worktree / ARTEFACT_VENV / "pyvenv.cfg").is_file()
    assert (worktree / ".coverage").is_file()
    assert list((worktree / "tests" / "__pycache__").glob("*.pyc"))
    assert (worktree / ".pytest_cache").is_dir()  # the agent's own pytest runs


def test_the_feature_branch_holds_the_work_and_no_artefact(artefacts: Finished) -> None:
    branch = artefacts.init.branch
    files = git(artefacts.root, "ls-tree", "-r", "--name-only", branch).splitlines()
    assert TEST_FILE in files
    assert CODE_FILE in files
    assert [path for path in files if is_artefact(path, {ARTEFACT_VENV})] == []
    assert [path for path in files if path.startswith((f"{ARTEFACT_VENV}/", ".pytest_cache"))] == []


def test_tmops_made_no_commit_of_artefacts_alone(artefacts: Finished) -> None:
    subjects = git(artefacts.root, "log", "--format=%s", f"main..{artefacts.init.branch}")
    assert [
        s for s in subjects.splitlines() if not s.startswith(("chore:", TEST_SUBJECT, FEAT_SUBJECT))
    ] == []
