"""Which lifecycle hooks hear of a run's ending (``endings.announce_ending``): every stop a
person must act on reaches ``tmops_run_needs_person``, a pause a person asked for does not,
and the message is redacted before any plugin sees it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tmops_core.lifecycle import PauseReason, RunState
from tmops_core.orchestration.endings import Ending, announce_ending
from tmops_core.plugins import create_plugin_manager
from tmops_hookspecs import FeatureContext, hookimpl

#: a made-up token of GitHub's shape, built here so no scanner takes the file for a leak
SECRET = "".join(("ghp", "_", "0123456789abcdefghij", "ABCDEFGHIJ012345"))


class _Listener:
    def __init__(self) -> None:
        self.heard: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def tmops_workflow_finished(self, outcome: str, message: str | None) -> None:
        self.heard.append(("finished", {"outcome": outcome, "message": message}))

    @hookimpl
    def tmops_run_needs_person(self, state: str, reason: str, message: str) -> None:
        self.heard.append(("needs_person", {"state": state, "reason": reason, "message": message}))


def _announce(ending: Ending, tmp_path: Path) -> list[tuple[str, dict[str, Any]]]:
    listener = _Listener()
    plugins = create_plugin_manager(autoload=False, extra=[("listener", listener)])
    context = FeatureContext(
        feature="auth", run="initial", workspace="default", project_root=tmp_path,
        worktree=tmp_path, branch="feature/auth", run_dir=tmp_path, checkpoint_dir=tmp_path,
    )  # fmt: skip
    announce_ending(plugins, context, ending, 1.0)
    return listener.heard


@pytest.mark.parametrize(
    "reason",
    [PauseReason.AWAITING_APPROVAL, PauseReason.BRANCH_MOVED, PauseReason.USAGE_LIMITED,
     PauseReason.BUDGET_EXHAUSTED],
)  # fmt: skip
def test_a_run_that_paused_on_its_own_needs_a_person(reason: PauseReason, tmp_path: Path) -> None:
    heard = _announce(Ending(RunState.PAUSED, "why", reason), tmp_path)
    assert heard == [
        ("needs_person", {"state": "paused", "reason": reason.value, "message": "why"})
    ]


@pytest.mark.parametrize("reason", [PauseReason.REQUESTED, PauseReason.ROLLED_BACK])
def test_a_pause_a_person_asked_for_is_not_announced(reason: PauseReason, tmp_path: Path) -> None:
    assert _announce(Ending(RunState.PAUSED, "asked", reason), tmp_path) == []


def test_needs_review_ends_the_run_and_needs_a_person(tmp_path: Path) -> None:
    heard = _announce(Ending(RunState.NEEDS_REVIEW, "the verifier said NO"), tmp_path)
    assert heard == [
        ("finished", {"outcome": "needs_review", "message": "the verifier said NO"}),
        ("needs_person", {"state": "needs_review", "reason": "needs_review",
                          "message": "the verifier said NO"}),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("ending", "outcome", "message"),
    [
        (Ending(RunState.COMPLETED), "completed", None),
        (Ending(RunState.CANCELLED, "cancelled"), "cancelled", "cancelled"),
    ],
)
def test_an_ended_run_is_finished_only(
    ending: Ending, outcome: str, message: str | None, tmp_path: Path
) -> None:
    assert _announce(ending, tmp_path) == [("finished", {"outcome": outcome, "message": message})]


def test_the_message_is_redacted_before_plugins_see_it(tmp_path: Path) -> None:
    heard = _announce(Ending(RunState.FAILED, f"git push failed: token {SECRET}"), tmp_path)
    [(hook, args)] = heard
    assert hook == "finished"
    assert SECRET not in args["message"]
    assert "redacted" in args["message"]
