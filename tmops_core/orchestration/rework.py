"""A rework round's bookkeeping: which phases a round runs again, setting their checkpoints
aside before it is recorded, and the reviewer's findings the rework phase is told.

Files and the attempts the run loop hands in only: it never writes the store, never starts an
agent and never commits (that is :mod:`tmops_core.orchestration.run`'s).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tmops_core.config import Config
from tmops_core.lifecycle import AttemptState
from tmops_core.orchestration import prompts
from tmops_core.store import AttemptRecord
from tmops_core.workspace.layout import rename_checked
from tmops_hookspecs import PhaseSpec

__all__ = ["REVIEW", "rework_note", "reworks", "set_aside_for_rework"]

#: in a rework's (or a retry's) message, what precedes the path of the refused review
REVIEW = "; review: "


def reworks(config: Config, workflow: Sequence[str], phase: str) -> bool:
    """Whether a rework round reruns ``phase`` (the rework phase and the ones after it)."""
    target = config.features.rework_phase
    if target not in workflow:
        return False
    return workflow.index(phase) >= workflow.index(target)


def set_aside_for_rework(
    *, refused: Path, earlier: Sequence[Path], round_: int, root: Path,
    forget: Callable[[str], None],
) -> Path:  # fmt: skip
    """Set the refused review and the completion checkpoints of the phases the round reruns
    aside (``.<name>.rework-<round>``); return where the review went.

    Done before the rework is recorded: a crash in between must not let the next engine adopt
    them as they were."""
    review = refused.with_name(f".{refused.name}.rework-{round_}")
    rename_checked(refused, review, root=root)
    for done in earlier:
        if os.path.lexists(done):
            rename_checked(done, done.with_name(f".{done.name}.rework-{round_}"), root=root)
        forget(done.name)
    forget(refused.name)
    return review


def rework_note(
    config: Config, spec: PhaseSpec, attempts: list[AttemptRecord], checkpoint_dir: Path
) -> str | None:
    """The reviewer's findings, when ``spec`` runs again because of a rework round or of a
    person's retry of work the reviewer refused."""
    if spec.name != config.features.rework_phase:
        return None
    sent_back = [
        a for a in attempts
        if a.state == AttemptState.REWORK
        or (a.state == AttemptState.RESET and REVIEW in (a.message or ""))
    ]  # fmt: skip
    if not sent_back:
        return None
    mine = [a for a in attempts if a.phase == spec.name and a.state == AttemptState.COMPLETED]
    if mine and mine[-1].id > sent_back[-1].id:
        return None
    reason, _, review = (sent_back[-1].message or "").partition(REVIEW)
    return prompts.rework_note(spec, Path(review or checkpoint_dir), reason, checkpoint_dir)
