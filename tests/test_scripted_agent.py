"""The scripted local agent (no model behind it): the four roles on the demo project it works on.

The agent runs for real: as a subprocess (``python -m tmops_plugins.scripted_agent``, exactly
as tmops starts ``claude``) and in-process through ``main()``, in a demo repository made by
``create_demo_project``, with the prompts the ``phases`` plugin really writes. Its command line
and stream contract are tested in ``test_scripted_agent_cli.py``, its faults in
``test_scripted_agent_faults.py``; the parsing of faults and prompts and the session store are
unit-tested in ``test_scripted_session.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tmops_core.service.demo_project import DEMO_FEATURE, DEMO_TASK_SPEC, create_demo_project

from .conftest import git, log_subjects
from .scripted_support import (
    COMPLETION,
    Demo,
    Runner,
    check_checkpoint,
    check_stream,
    pytest_in,
    section,
)

pytestmark = pytest.mark.usefixtures("agent_env")


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
