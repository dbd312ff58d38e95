"""A ready-made script for :mod:`tests.fake_anthropic`: one test-first run adding ``slugify``.

:func:`tdd_script` plays the four tmops roles against a project with no code: the orchestrator
plans, the tester writes and commits failing tests, the implementer makes them pass and the
verifier reviews. Each role ends by writing its checkpoint (:func:`checkpoint`), with the real
feature and run names and the real commit ids. The sources it writes are exported, so tests can
compare the files on disk with them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from .fake_anthropic import Action, Fault, Script, Step, bash, say, write

__all__ = [
    "CODE_FILE",
    "CODE_SOURCE",
    "HEADERS",
    "TEST_COMMAND",
    "TEST_FILE",
    "TEST_SOURCE",
    "checkpoint",
    "tdd_script",
]

TEST_COMMAND = "python -m pytest -q"
TEST_FILE = "tests/test_slug.py"
CODE_FILE = "slug.py"
TEST_SOURCE = """\
from slug import slugify


def test_lowercases_and_joins_words_with_hyphens():
    assert slugify("Hello World") == "hello-world"


def test_strips_punctuation():
    assert slugify("Hello, World!") == "hello-world"


def test_collapses_spaces():
    assert slugify("  many   spaces  here ") == "many-spaces-here"
"""
CODE_SOURCE = '''\
"""Turn titles into URL slugs."""

import re


def slugify(text: str) -> str:
    """Lowercase words of letters and digits, joined by hyphens."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))
'''
HEADERS = {
    "001-discovery-trigger.md": ("Orchestrator", "Tester"),
    "003-tests-complete.md": ("Tester", "Orchestrator"),
    "005-impl-complete.md": ("Implementer", "Orchestrator"),
    "007-verify-complete.md": ("Verifier", "Orchestrator"),
}


def checkpoint(name: str, feature: str, run: str, body: str, status: str = "complete") -> str:
    """A checkpoint in the header-block format of the role instructions (From/To by ``name``)."""
    sender, receiver = HEADERS[name]
    timestamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"# Checkpoint: {name}\n"
        f"**From:** {sender}\n"
        f"**To:** {receiver}\n"
        f"**Timestamp:** {timestamp}\n"
        f"**Feature:** {feature}\n"
        f"**Run:** {run}\n"
        f"**Status:** {status}\n" + body
    )


def _rev(worktree: Path, rev: str) -> str:
    """The short id of ``rev`` in ``worktree``, as the model would read it from git's output."""
    result = subprocess.run(
        ["git", "rev-parse", "--short", rev],
        cwd=worktree,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _plan(worktree: Path, checkpoints: Path, feature: str, run: str) -> list[Action]:
    body = f"""\
## Work Completed
The feature adds `slugify(text)` in a new module `slug` at the root of the worktree. The \
project has no code yet; its tests run with `{TEST_COMMAND}`.
## Action Required
- AC1: `slugify("Hello World") == "hello-world"` (lowercase, words joined by hyphens)
- AC2: punctuation is stripped: `slugify("Hello, World!") == "hello-world"`
- AC3: runs of spaces collapse, ends trimmed: `slugify("  many   spaces  here ")`
Interface: `from slug import slugify`. Test file: `{TEST_FILE}`.
## Expected Response
Failing tests committed on feature/{feature}, reported in 003-tests-complete.md.
## Metrics
- Acceptance criteria: 3
- Planned tests: 3
## Git Commit
none
"""
    name = "001-discovery-trigger.md"
    return [write(checkpoints / name, checkpoint(name, feature, run, body))]


def _tests_report(worktree: Path, checkpoints: Path, feature: str, run: str) -> list[Action]:
    body = f"""\
## Work Completed
- {TEST_FILE}: hyphen-joined lowercase words, punctuation, repeated spaces
- Edge cases: leading and trailing spaces
- How the tests fail now: `ModuleNotFoundError: No module named 'slug'`
## Metrics
- Tests written: 3
- Passing: 0/3
## Git Commit
{_rev(worktree, "HEAD")}
"""
    name = "003-tests-complete.md"
    return [write(checkpoints / name, checkpoint(name, feature, run, body))]


def _impl_report(worktree: Path, checkpoints: Path, feature: str, run: str) -> list[Action]:
    body = f"""\
## Work Completed
- {CODE_FILE}: `slugify` keeps runs of lowercase letters and digits, joined by hyphens
## Metrics
- Files changed: 1
- Passing: 3/3
## Git Commit
{_rev(worktree, "HEAD")}
"""
    name = "005-impl-complete.md"
    return [write(checkpoints / name, checkpoint(name, feature, run, body))]


def _verdict(worktree: Path, checkpoints: Path, feature: str, run: str) -> list[Action]:
    test_commit, code_commit = _rev(worktree, "HEAD~1"), _rev(worktree, "HEAD")
    body = f"""\
## Work Completed
- Test-first order: confirmed (test {test_commit} before code {code_commit})
- Acceptance criteria: AC1 met, AC2 met, AC3 met
- Findings: none serious; low, {CODE_FILE}:7, non-ASCII letters are dropped (document it)
## Metrics
- Tests: 3
- Passing: 3/3
## Git Commit
{code_commit}
## Quality Score
Quality score: 8/10
Feature ready for merge: YES
"""
    name = "007-verify-complete.md"
    return [write(checkpoints / name, checkpoint(name, feature, run, body))]


def _in_worktree(relative: str, content: str) -> Step:
    """A step writing ``content`` to ``relative`` inside the worktree of the prompt."""
    return lambda worktree, _checkpoints, _feature, _run: [write(worktree / relative, content)]


def tdd_script(faults: Sequence[Fault] = (), test_command: str = TEST_COMMAND) -> Script:
    """The four roles of one test-first run that adds ``slugify`` to a project with no code.

    The worktree needs only to be a git repository with a committer configured; tests run with
    ``test_command`` from its root. Each role ends by writing its checkpoint, with the real
    feature and run names and the real commit ids.
    """
    return Script(
        steps={
            "orchestrator": [_plan, [say("Plan written to 001-discovery-trigger.md.")]],
            "tester": [
                _in_worktree(TEST_FILE, TEST_SOURCE),
                [bash(test_command, "Run the new tests; they must fail")],
                [
                    bash(
                        f"git add {TEST_FILE} && git commit -m "
                        '"test(slug): slugify lowercases, strips punctuation, collapses spaces"',
                        "Commit the failing tests",
                    )
                ],
                _tests_report,
                [say("Tests committed; all 3 fail. Checkpoint 003 written.")],
            ],
            "implementer": [
                _in_worktree(CODE_FILE, CODE_SOURCE),
                [bash(test_command, "Run the whole suite")],
                [
                    bash(
                        f'git add {CODE_FILE} && git commit -m "feat(slug): add slugify"',
                        "Commit the code",
                    )
                ],
                _impl_report,
                [say("All 3 tests pass. Checkpoint 005 written.")],
            ],
            "verifier": [
                [bash("git log --oneline", "Check the commit order")],
                [bash(test_command, "Run the whole suite")],
                _verdict,
                [say("Review done: 8/10, ready for merge.")],
            ],
        },
        faults=faults,
    )
