"""The role work of the scripted agent: the fixed demo task, done for real, step by step.

The contract (what each role does, what its checkpoint says) is in the docstring of
:mod:`tmops_plugins.scripted_agent`, which owns the command line and the stream and calls
:data:`ROLE_WORK`. This module owns:

- the demo task's file contents: the plan's cases, the tests (:data:`TEST_SOURCE`), the code
  (:data:`CODE_SOURCE`) and what the ``passing-tests`` and ``broken-code`` faults write instead;
- the four roles' actions (orchestrator, tester, implementer, verifier), each done through
  the :class:`Tools` the session gives it (Read, Write, Bash, each shown in the stream), and
  the checkpoint each writes;
- the faults that change the work (``passing-tests``, ``broken-code``, ``no-checkpoint``,
  ``wrong-feature``, ``refuse``); the others are the session's (:mod:`tmops_plugins.scripted_agent`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import attrs

from .scripted_session import Context, Fault

__all__ = [
    "BROKEN_CODE_SOURCE",
    "CODE_FILE",
    "CODE_SOURCE",
    "LABEL",
    "PASSING_TEST_SOURCE",
    "ROLE_WORK",
    "TEST_FILE",
    "TEST_SOURCE",
    "Ran",
    "Tools",
    "Work",
]

#: How the agent names itself in its output.
LABEL = "tmops scripted agent, no AI model"
_TESTS_REPORT = "003-tests-complete.md"
_IMPL_REPORT = "005-impl-complete.md"


# --------------------------------------------------------------------------------------------
# The demo task
# --------------------------------------------------------------------------------------------

TEST_FILE = "tests/test_slug.py"
CODE_FILE = "slug.py"

#: (test name, acceptance criterion, input, expected slug): the plan and the tests.
_CASES = (
    (
        "test_words_are_lowercased_and_joined_by_one_dash",
        "lower case, words joined by one dash",
        "Hello World",
        "hello-world",
    ),
    ("test_punctuation_is_dropped", "punctuation is dropped", "Hello, World!", "hello-world"),
    (
        "test_runs_of_spaces_underscores_and_dashes_become_one_dash",
        "runs of spaces, underscores or dashes become one dash",
        "a  b__c--d",
        "a-b-c-d",
    ),
    (
        "test_leading_and_trailing_separators_are_trimmed",
        "no leading or trailing dash",
        "  -Hello World_ ",
        "hello-world",
    ),
    ("test_empty_string_gives_empty_string", "edge case: empty input", "", ""),
    (
        "test_accented_letters_become_ascii",
        "accented letters become plain ASCII",
        "Crème Brûlée",
        "creme-brulee",
    ),
)

TEST_SOURCE = (
    '"""Tests of slugify (the tmops demo feature), written before the code."""\n\n'
    "from slug import slugify\n"
    + "".join(
        f"\n\ndef {name}() -> None:\n    assert slugify({given!r}) == {expected!r}\n"
        for name, _, given, expected in _CASES
    )
)

#: What the ``passing-tests`` fault commits: a test that passes with no code at all.
PASSING_TEST_SOURCE = '''\
"""Tests of slugify (scripted fault `passing-tests`: they pass without any code)."""


def test_slug_words_are_joined_by_dashes() -> None:
    assert "hello world".replace(" ", "-") == "hello-world"
'''

CODE_SOURCE = '''\
"""Turn titles into URL-safe slugs."""

import re
import unicodedata

_OTHER_CHARACTERS = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """The lower-case ASCII words of ``text``, joined by single dashes."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _OTHER_CHARACTERS.sub("-", ascii_text.lower()).strip("-")
'''

#: What the ``broken-code`` fault commits: it only gets the simplest case right.
BROKEN_CODE_SOURCE = '''\
"""Turn titles into URL-safe slugs."""


def slugify(text: str) -> str:
    """Lower-case ``text`` with dashes for spaces."""
    return text.lower().replace(" ", "-")
'''


# --------------------------------------------------------------------------------------------
# What a role works with
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Ran:
    """A finished command: its exit code and its output (stdout then stderr)."""

    returncode: int
    output: str


class Tools(Protocol):
    """The actions of a session; each but :meth:`run` is one turn shown in the stream."""

    @property
    def context(self) -> Context:
        """What the prompt (or the resumed session) says: role, feature, folders."""

    def read(self, path: Path) -> str | None:
        """The text of ``path``, or None when it cannot be read."""

    def write(self, path: Path, text: str, *, checkpoint: bool = False) -> None:
        """Write ``text`` to ``path`` (a checkpoint atomically, mode 0600); raises OSError."""

    def bash(self, argv: Sequence[str], description: str, *, test_run: bool = False) -> Ran:
        """Run a command in the worktree, shown in the stream."""

    def run(self, argv: Sequence[str], *, test_run: bool = False) -> Ran:
        """Run a command in the worktree, not shown in the stream (for probes)."""


@attrs.frozen
class Work:
    """What a role did, in one line for the final text."""

    summary: str


def _timestamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------------------------
# The roles
# --------------------------------------------------------------------------------------------


def _header(agent: Tools, sender: str, feature: str, status: str = "complete") -> str:
    ctx = agent.context
    return (
        f"# Checkpoint: {ctx.completion}\n"
        f"**From:** {sender}\n"
        f"**To:** {'Tester' if sender == 'Orchestrator' else 'Orchestrator'}\n"
        f"**Timestamp:** {_timestamp()}\n"
        f"**Feature:** {feature}\n"
        f"**Run:** {ctx.run}\n"
        f"**Status:** {status}\n"
    )


def _checkpoint(agent: Tools, faults: Sequence[Fault], sender: str, body: str, status: str) -> str:
    """Write the completion checkpoint (unless the no-checkpoint fault hits); a summary line."""
    ctx = agent.context
    feature = ctx.feature or "unknown"
    if any(f.kind == "wrong-feature" for f in faults):
        feature = f"{feature}-other"
    if any(f.kind == "no-checkpoint" for f in faults):
        return f"no checkpoint written (fault no-checkpoint); {ctx.completion} is missing"
    agent.write(
        ctx.checkpoint_dir / ctx.completion,
        _header(agent, sender, feature, status) + body,
        checkpoint=True,
    )
    return f"checkpoint {ctx.completion} written"


def _read_trigger(agent: Tools, *extra: str) -> dict[str, str]:
    """Read the trigger and the given checkpoints that exist: {name: text}."""
    ctx = agent.context
    texts: dict[str, str] = {}
    names = [ctx.trigger] if ctx.trigger else []
    for name in [*names, *extra]:
        path = ctx.checkpoint_dir / name
        if name in texts or not path.is_file():
            continue
        text = agent.read(path)
        if text is not None:
            texts[name] = text
    return texts


_COUNT = re.compile(r"(\d+) (passed|failed|errors?)\b")


@attrs.frozen
class _TestRun:
    returncode: int
    passed: int
    failed: int
    errors: int
    first_error: str

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors


def _run_tests(agent: Tools, description: str) -> _TestRun:
    ran = agent.bash([sys.executable, "-m", "pytest", "-q"], description, test_run=True)
    counts = {"passed": 0, "failed": 0, "error": 0}
    summary = [line for line in ran.output.splitlines() if _COUNT.search(line) and " in " in line]
    if summary:
        for number, word in _COUNT.findall(summary[-1]):
            counts[word.rstrip("s") if word.startswith("error") else word] += int(number)
    first_error = next(
        (line.strip() for line in ran.output.splitlines() if line.startswith("E ")),
        summary[-1].strip(" =") if summary else f"exit code {ran.returncode}",
    )
    return _TestRun(
        ran.returncode, counts["passed"], counts["failed"], counts["error"], first_error
    )


def _identity(agent: Tools) -> list[str]:
    """``-c user.name=... -c user.email=...`` when the repository has no committer identity."""
    missing = any(
        agent.run(["git", "config", "--get", key]).returncode != 0
        for key in ("user.name", "user.email")
    )
    if not missing:
        return []
    return ["-c", "user.name=tmops scripted agent", "-c", "user.email=scripted-agent@tmops.invalid"]


def _commit(agent: Tools, path: str, message: str) -> tuple[str | None, str]:
    """Stage ``path``, commit it if it changed: (the id of its last commit or None, an error)."""
    added = agent.bash(["git", "add", path], f"Stage {path}")
    if added.returncode != 0:
        return None, added.output
    if agent.run(["git", "diff", "--cached", "--quiet", "--", path]).returncode != 0:
        committed = agent.bash(["git", *_identity(agent), "commit", "-m", message], "Commit")
        if committed.returncode != 0:
            return None, committed.output
    logged = agent.bash(["git", "log", "-1", "--format=%H", "--", path], "The commit id")
    commit = logged.output.strip() if logged.returncode == 0 else ""
    if not re.fullmatch(r"[0-9a-f]{40,64}", commit):
        return None, f"no commit holds {path}: {logged.output}"
    return commit, ""


def _blocked(error: str) -> str:
    lines = error.strip().splitlines()
    return f"## Blockers\n- the commit failed: {lines[-1] if lines else 'no message'}\n"


def _orchestrator(agent: Tools, faults: Sequence[Fault]) -> Work:
    ctx = agent.context
    if ctx.spec is not None:
        agent.read(ctx.spec)
    plan = "".join(
        f"- AC{i} {criterion}: `{name}` asserts slugify({given!r}) == {expected!r}\n"
        for i, (name, criterion, given, expected) in enumerate(_CASES, 1)
    )
    body = f"""\
## Work Completed
Planned `slugify`: a function that turns a title into a URL-safe slug. Written by the {LABEL}: \
this is the fixed plan of the tmops demo task, whatever the spec says.
## Action Required
Test `from slug import slugify` (`slugify(text: str) -> str` in `slug.py` at the repository \
root) in `{TEST_FILE}`, one test per acceptance criterion, edge cases included:
{plan}Run them with `python -m pytest -q`; every one must fail while `slug.py` does not exist.
## Expected Response
Failing tests committed on feature/{ctx.feature}, reported in {_TESTS_REPORT}.
## Metrics
- Acceptance criteria: {len(_CASES)}
- Planned tests: {len(_CASES)}
## Git Commit
none
"""
    done = _checkpoint(agent, faults, "Orchestrator", body, "complete")
    return Work(f"orchestrator: planned {len(_CASES)} tests; {done}.")


def _tester(agent: Tools, faults: Sequence[Fault]) -> Work:
    ctx = agent.context
    _read_trigger(agent)
    passing = any(f.kind == "passing-tests" for f in faults)
    source = PASSING_TEST_SOURCE if passing else TEST_SOURCE
    written = source.count("\ndef test_")
    agent.write(ctx.worktree / TEST_FILE, source)
    tests = _run_tests(agent, "Run the tests; the new ones must fail")
    message = (
        "test(slug): add slugify tests"
        if passing
        else "test(slug): slugify lowercases, drops punctuation, joins words, folds accents"
    )
    commit, error = _commit(agent, TEST_FILE, message)
    passed = min(tests.passed, written)
    body = f"""\
## Work Completed
- {TEST_FILE}: {written} test(s) of slugify, one per acceptance criterion of the plan
- Edge cases: empty string, leading and trailing separators, mixed runs of separators, accents
- How the tests fail now: `{tests.first_error}`
## Metrics
- Tests written: {written}
- Passing: {passed}/{written}
## Git Commit
{commit or "none"}
"""
    if commit is None:
        body += _blocked(error)
    done = _checkpoint(agent, faults, "Tester", body, "complete" if commit else "blocked")
    return Work(
        f"tester: wrote {TEST_FILE} ({written} tests, {passed} passing), "
        f"commit {commit[:12] if commit else 'failed'}; {done}."
    )


def _implementer(agent: Tools, faults: Sequence[Fault]) -> Work:
    ctx = agent.context
    _read_trigger(agent, _TESTS_REPORT)
    broken = any(f.kind == "broken-code" for f in faults)
    agent.write(ctx.worktree / CODE_FILE, BROKEN_CODE_SOURCE if broken else CODE_SOURCE)
    tests = _run_tests(agent, "Run the whole test suite")
    commit, error = _commit(agent, CODE_FILE, "feat(slug): add slugify")
    body = f"""\
## Work Completed
- {CODE_FILE}: slugify(text) NFKD-normalises the text, drops what is not ASCII, lower-cases it, \
turns every run of other characters into one dash and trims the dashes (standard library only)
- Written by the {LABEL}
## Metrics
- Files changed: 1
- Passing: {tests.passed}/{tests.total}
## Git Commit
{commit or "none"}
"""
    if commit is None:
        body += _blocked(error)
    done = _checkpoint(agent, faults, "Implementer", body, "complete" if commit else "blocked")
    return Work(
        f"implementer: wrote {CODE_FILE} ({tests.passed}/{tests.total} tests passing), "
        f"commit {commit[:12] if commit else 'failed'}; {done}."
    )


_GIT_COMMIT = re.compile(r"^## Git Commit[ \t]*\n\s*([0-9a-f]{7,64})\b", re.M)


def _named_commit(
    texts: Mapping[str, str], report: str, log: Sequence[tuple[str, str]], prefix: str
) -> str | None:
    """The commit a report names, else the newest commit whose subject starts with prefix."""
    match = _GIT_COMMIT.search(texts.get(report, ""))
    if match:
        return next((sha for sha, _ in log if sha.startswith(match.group(1))), match.group(1))
    return next((sha for sha, subject in log if subject.startswith(prefix)), None)


def _verifier(agent: Tools, faults: Sequence[Fault]) -> Work:
    texts = _read_trigger(agent, _TESTS_REPORT, _IMPL_REPORT)
    logged = agent.bash(["git", "log", "--format=%H %s"], "Check that the tests came first")
    log = [
        (sha, subject)
        for sha, _, subject in (line.partition(" ") for line in logged.output.splitlines())
        if re.fullmatch(r"[0-9a-f]{40,64}", sha)
    ]
    order = [sha for sha, _ in log]
    test_commit = _named_commit(texts, _TESTS_REPORT, log, "test(")
    code_commit = _named_commit(texts, _IMPL_REPORT, log, "feat(")
    reasons: list[str] = []
    if test_commit is None or test_commit not in order:
        reasons.append("no test commit found in the history")
    if code_commit is None or code_commit not in order:
        reasons.append("no code commit found in the history")
    if not reasons and order.index(str(test_commit)) <= order.index(str(code_commit)):
        reasons.append(f"the test commit {test_commit} is not older than the code commit")
    first = (
        f"confirmed (test {test_commit} before code {code_commit})"
        if not reasons
        else "violated or unknown: " + "; ".join(reasons)
    )
    tests = _run_tests(agent, "Run the whole test suite")
    if tests.returncode != 0 or tests.passed == 0 or tests.passed != tests.total:
        reasons.append(
            f"the tests do not all pass ({tests.passed}/{tests.total}: {tests.first_error})"
        )
    if _refuses(agent, faults):
        reasons.append("the review refuses the work (scripted fault refuse)")
    ready = not reasons
    criteria = "".join(
        f"- AC{i} {criterion}: {'met' if ready else 'not shown'} (`{name}`)\n"
        for i, (name, criterion, _, _) in enumerate(_CASES, 1)
    )
    findings = (
        "- Findings: none serious; low: slugify drops non-Latin scripts entirely "
        f"({CODE_FILE}:12), document it or transliterate\n"
        if ready
        else "".join(f"- Finding (high): {reason}\n" for reason in reasons)
    )
    body = f"""\
## Work Completed
- Test-first order: {first}
{criteria}{findings}- Review by the {LABEL}: the verdict follows fixed rules, not judgement
## Metrics
- Tests: {tests.total}
- Passing: {tests.passed}/{tests.total}
## Git Commit
{order[0] if order else "none"}
## Quality Score
Quality score: {9 if ready else 4}/10
Feature ready for merge: {"YES" if ready else "NO"}
"""
    done = _checkpoint(agent, faults, "Verifier", body, "complete")
    verdict = "ready for merge" if ready else "NOT ready: " + "; ".join(reasons)
    return Work(f"verifier: {verdict}; {done}.")


def _refuses(agent: Tools, faults: Sequence[Fault]) -> bool:
    """The ``refuse`` fault: the verifier says NO, once per run (a marker file in the
    checkpoint folder remembers it) unless ``:always``."""
    fault = next((f for f in faults if f.kind == "refuse"), None)
    if fault is None:
        return False
    marker = agent.context.checkpoint_dir / ".scripted-refused"
    if marker.exists() and not fault.always:
        return False
    marker.touch()
    return True


#: The work of each role.
ROLE_WORK: Mapping[str, Callable[[Tools, Sequence[Fault]], Work]] = {
    "orchestrator": _orchestrator,
    "tester": _tester,
    "implementer": _implementer,
    "verifier": _verifier,
}
