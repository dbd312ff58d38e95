"""The built-in ``phases`` plugin: the four TeamOps roles, their checkpoints and instructions."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

from tmops_core.config import FeaturesConfig
from tmops_core.plugins import create_plugin_manager
from tmops_hookspecs import Artifact, Gate, PhaseSpec
from tmops_plugins.phases import WORKFLOW, load_instructions

from .conftest import REPO

CHECKPOINTS = {
    "orchestrator": (None, "001-discovery-trigger.md"),
    "tester": ("001-discovery-trigger.md", "003-tests-complete.md"),
    "implementer": ("004-impl-trigger.md", "005-impl-complete.md"),
    "verifier": ("006-verify-trigger.md", "007-verify-complete.md"),
}
READ_WRITE = {"Read", "Write", "Edit", "Glob", "Grep"}
RUN_TESTS = {"Bash(python -m pytest:*)", "Bash(pytest:*)"}
COMMIT = {"Bash(git add:*)", "Bash(git commit:*)"}
PLACEHOLDERS = {
    "feature": "login-api",
    "run": "initial",
    "task_spec": "/project/.tmops/login-api/runs/initial/TASK_SPEC.md",
    "checkpoint_dir": "/project/.tmops/login-api/runs/initial/checkpoints",
    "worktree": "/project/.tmops/worktrees/login-api",
    "branch": "feature/login-api",
}


def _phases() -> dict[str, PhaseSpec]:
    registered = create_plugin_manager().phases()
    return {name: r.spec for name, r in registered.items() if r.plugin == "phases"}


def _fill(phase: PhaseSpec) -> str:
    return phase.prompt.format(
        **PLACEHOLDERS,
        trigger_checkpoint=phase.trigger_checkpoint or "",
        completion_checkpoint=phase.completion_checkpoint,
    )


def test_the_four_phases_load_through_entry_points_in_workflow_order() -> None:
    plugins = create_plugin_manager()
    assert not [f for f in plugins.failures if f.name == "phases"]
    info = {i.name: i for i in plugins.info()}
    assert info["phases"].distribution == "tmops-plugins"
    assert info["phases"].module == "tmops_plugins.phases"
    assert set(info["phases"].registers["phases"]) == set(WORKFLOW)
    assert WORKFLOW == ("orchestrator", "tester", "implementer", "verifier")
    assert tuple(_phases()) == WORKFLOW
    assert all(spec.role == name for name, spec in _phases().items())


def test_the_default_workflow_names_exactly_these_phases() -> None:
    assert FeaturesConfig().default_phases == WORKFLOW


@pytest.mark.parametrize("name", WORKFLOW)
def test_checkpoint_names_follow_the_upstream_protocol(name: str) -> None:
    phase = _phases()[name]
    assert (phase.trigger_checkpoint, phase.completion_checkpoint) == CHECKPOINTS[name]


def test_each_trigger_is_written_before_its_phase_runs() -> None:
    phases = _phases()
    # the tester's trigger is the orchestrator's completion; tmops writes 004 and 006 itself
    assert phases["tester"].trigger_checkpoint == phases["orchestrator"].completion_checkpoint
    completions = [phases[name].completion_checkpoint for name in WORKFLOW]
    assert completions == sorted(completions)


def test_gates() -> None:
    phases = _phases()
    assert phases["orchestrator"].gates == ()
    assert phases["tester"].gates == (Gate.TESTS_FAIL,)
    assert phases["implementer"].gates == (Gate.TESTS_PASS,)
    assert phases["verifier"].gates == (Gate.TESTS_PASS,)


def test_each_phase_declares_what_its_checkpoint_must_hold() -> None:
    declared = {
        name: {(r.what, r.fields, r.sections) for r in spec.requires}
        for name, spec in _phases().items()
    }
    assert declared == {
        "orchestrator": {
            ("test plan", ("action_required", "test_plan", "details"),
             ("action_required", "test_plan")),
        },
        "tester": {
            ("test files", ("test_files", "details"), ("work_completed", "test_files")),
            ("run of the new tests", ("passing", "details"), ()),
        },
        "implementer": {("run of the whole test suite", ("passing", "details"), ())},
        "verifier": {
            ("quality score", ("quality_score",), ()),
            ("merge verdict", ("ready_for_merge",), ()),
        },
    }  # fmt: skip
    for spec in _phases().values():
        assert all(requirement.hint for requirement in spec.requires)


@pytest.mark.parametrize("name", WORKFLOW)
def test_every_required_section_is_one_the_instructions_name(name: str) -> None:
    text = load_instructions(name)
    phase = _phases()[name]
    first_sections = [r.sections[0] for r in phase.requires if r.sections]
    for key in first_sections:
        assert f"## {key.replace('_', ' ').title()}" in text


def test_rollback_policies() -> None:
    preserved = {name: spec.rollback.preserve for name, spec in _phases().items()}
    assert preserved == {
        "orchestrator": {Artifact.TASK_SPEC},
        "tester": {Artifact.TASK_SPEC, Artifact.TESTS},
        "implementer": {Artifact.TASK_SPEC, Artifact.TESTS},
        "verifier": {Artifact.TASK_SPEC, Artifact.TESTS, Artifact.CODE},
    }


def test_allowed_tools() -> None:
    tools = {name: set(spec.allowed_tools) for name, spec in _phases().items()}
    assert tools["orchestrator"] == READ_WRITE
    assert tools["tester"] == READ_WRITE | COMMIT | RUN_TESTS
    assert tools["implementer"] == tools["tester"]
    assert tools["verifier"] == {
        "Read",
        "Glob",
        "Grep",
        "Write",
        "Bash(git log:*)",
        "Bash(git diff:*)",
        "Bash(git show:*)",
        *RUN_TESTS,
    }
    for spec in _phases().values():
        assert len(spec.allowed_tools) == len(set(spec.allowed_tools))


@pytest.mark.parametrize("name", WORKFLOW)
def test_each_prompt_fills_every_placeholder(name: str) -> None:
    phase = _phases()[name]
    prompt = _fill(phase)
    assert "{" not in prompt
    assert "}" not in prompt
    assert f"{PLACEHOLDERS['checkpoint_dir']}/{phase.completion_checkpoint}" in prompt
    assert PLACEHOLDERS["worktree"] in prompt
    assert PLACEHOLDERS["task_spec"] in prompt
    assert "feature/login-api" in prompt
    if phase.trigger_checkpoint:
        assert f"{PLACEHOLDERS['checkpoint_dir']}/{phase.trigger_checkpoint}" in prompt


def test_the_orchestrator_prompt_does_not_use_the_empty_trigger() -> None:
    assert "{trigger_checkpoint}" not in _phases()["orchestrator"].prompt


@pytest.mark.parametrize("name", WORKFLOW)
def test_instructions_load_from_package_data(name: str) -> None:
    text = load_instructions(name)
    phase = _phases()[name]
    assert phase.instructions == text
    assert 40 <= len(text.splitlines()) <= 90
    assert f"# Checkpoint: {phase.completion_checkpoint}" in text
    for field in ("From", "To", "Timestamp", "Feature", "Run", "Status"):
        assert f"**{field}:**" in text
    for section in ("## Work Completed", "## Metrics", "## Git Commit"):
        assert section in text
    assert f"{phase.completion_checkpoint}.tmp" in text  # the atomic write is spelled out
    assert "current" in text  # and the symlink warning


def test_the_verifier_gives_a_score_and_a_verdict() -> None:
    text = load_instructions("verifier")
    assert "## Quality Score" in text
    assert "Quality score: X/10" in text
    assert "Feature ready for merge: YES" in text
    assert "`NO`" in text


def test_the_tester_reports_zero_passing() -> None:
    assert "- Passing: 0/N" in load_instructions("tester")


@pytest.mark.parametrize("role", ["", "../phases", "security-review", "Tester"])
def test_unknown_roles_have_no_instructions(role: str) -> None:
    with pytest.raises(ValueError, match="no built-in instructions"):
        load_instructions(role)


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_the_wheel_ships_the_instructions(tmp_path: Path) -> None:
    # Offline and quicker when hatchling is already installed; otherwise pip fetches it.
    isolation = ["--no-build-isolation"] if find_spec("hatchling") else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
         str(REPO / "plugins"), "-w", str(tmp_path)],
        check=True,
    )  # fmt: skip
    [wheel] = tmp_path.glob("tmops_plugins-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for role in WORKFLOW:
            member = f"tmops_plugins/instructions/{role}.md"
            assert member in names
            assert archive.read(member).decode() == load_instructions(role)
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "phases = tmops_plugins.phases" in archive.read(entry_points).decode()
