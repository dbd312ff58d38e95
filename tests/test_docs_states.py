"""Every state the docs list is a state the code has, and every state the code has is listed:
derived from ``tmops_core/lifecycle.py``, so a state added there fails here until documented."""

from __future__ import annotations

import re

import pytest

from tmops_core.lifecycle import EXIT_CODES, AttemptState, PauseReason, PhaseState, RunState

from .conftest import REPO

RUN_STATES = {state.value for state in RunState}
PAUSE_REASONS = {reason.value for reason in PauseReason}
#: how ``tmops start --wait``, ``watch`` and ``demo`` end, by exit code
ENDINGS = {code: state.value for state, code in EXIT_CODES.items()}
#: a phase no installed plugin provides (``service/status.py``): not a lifecycle state
UNAVAILABLE = "unavailable"


def _text(doc: str) -> str:
    """The doc with its lines joined: a list may wrap."""
    return " ".join((REPO / doc).read_text().split())


def _span(doc: str, pattern: str) -> str:
    found = re.search(pattern, _text(doc))
    assert found, f"{doc} no longer has the passage {pattern!r}: update it and this test"
    return found.group(1)


def _names(text: str, *, drop_asides: bool = False) -> set[str]:
    if drop_asides:
        text = re.sub(r"\([^)]*\)", "", text)
    return set(re.findall(r"`([a-z_]+)`", text))


def _endings(text: str) -> dict[int, str]:
    """``0 completed, 1 failed (or never started), ... 5 needs review`` as {0: "completed"...}."""
    pairs = re.findall(r"(\d+) ([a-z][a-z ]*[a-z])", re.sub(r"\([^)]*\)", "", text))
    return {int(code): words.replace(" ", "_") for code, words in pairs}


def test_the_lifecycle_lists_every_run_state_and_pause_reason() -> None:
    passage = _span("docs/architecture.md", r"A run is (.*?)\. `RUN_TRANSITIONS`")
    assert _names(passage, drop_asides=True) == RUN_STATES
    assert _names(_span("docs/architecture.md", r"with a reason: (.*?)\)")) == PAUSE_REASONS


def test_the_lifecycle_lists_every_attempt_state() -> None:
    passage = _span("docs/architecture.md", r"An attempt is (.*?)\. A phase's state")
    assert _names(passage) == {state.value for state in AttemptState}


def test_the_store_doc_lists_every_run_state() -> None:
    passage = _span("docs/layout.md", r"`runs` each run with its state \((.*?)\)")
    assert _names(passage) == RUN_STATES


def test_the_status_tool_lists_every_status_it_can_return() -> None:
    started = _span(
        "docs/mcp.md", r"`status` is the run's state once tmops has started it: (.*?)\. B"
    )
    before = _span("docs/mcp.md", r"Before that it is (.*?)\.")
    assert _names(started, drop_asides=True) | _names(before) == RUN_STATES | {
        PhaseState.IN_PROGRESS.value  # a run only a person has worked on
    }
    assert _names(_span("docs/mcp.md", r"why is in `pause_reason`: (.*?)\)")) == PAUSE_REASONS


def test_the_status_tool_lists_every_phase_state() -> None:
    passage = _span("docs/mcp.md", r"A phase's `status` in `phase_progress` is, (.*?)\. Once")
    assert _names(passage) == {state.value for state in PhaseState} | {UNAVAILABLE}


@pytest.mark.parametrize(
    ("doc", "pattern"),
    [
        ("docs/architecture.md", r"their exit codes: (.*?)\."),
        ("docs/workflow.md", r"exit with how it ended: (.*?)\."),
        ("README.md", r"to the end: exit (.*?);"),
    ],
)
def test_the_exit_codes_are_those_of_the_lifecycle(doc: str, pattern: str) -> None:
    assert _endings(_span(doc, pattern)) == ENDINGS
