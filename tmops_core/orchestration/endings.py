"""What the phase loop decides about an attempt and a run: how a run stopped, whether accepted
work handed off or went back for rework, and an attempt the executor ran. Data only."""

from __future__ import annotations

import enum
from typing import NamedTuple

import attrs

from tmops_core.lifecycle import PauseReason, RunState
from tmops_hookspecs import AttemptOutcome

__all__ = ["Accepted", "Ending", "LiveAttempt"]


class Ending(NamedTuple):
    """How a run stopped: its state, why, for a pause its reason, and for a usage limit when it
    lifts (ISO, UTC)."""

    state: RunState
    reason: str | None = None
    pause: PauseReason | None = None
    resume_at: str | None = None


class Accepted(enum.Enum):
    HANDED_OFF = "handed_off"
    REWORK = "rework"


@attrs.frozen
class LiveAttempt:
    """An attempt the executor ran: its store row, number, outcome and start."""

    id: int
    number: int
    outcome: AttemptOutcome
    started: float
