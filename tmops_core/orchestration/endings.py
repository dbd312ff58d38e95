"""What the phase loop decides about an attempt and a run: how a run stopped, whether accepted
work handed off or went back for rework, an attempt the executor ran, and which lifecycle hooks
hear of a run's ending."""

from __future__ import annotations

import enum
from typing import NamedTuple

import attrs

from tmops_core.lifecycle import ENDED_RUN_STATES, PauseReason, RunState
from tmops_core.plugins import Plugins
from tmops_core.secrets import redact_text
from tmops_hookspecs import AttemptOutcome, FeatureContext

__all__ = ["PERSON_CAUSED_PAUSES", "Accepted", "Ending", "LiveAttempt", "announce_ending"]

#: Pauses a person asked for: nobody needs to be told of them.
PERSON_CAUSED_PAUSES = frozenset({PauseReason.REQUESTED, PauseReason.ROLLED_BACK})


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


def announce_ending(
    plugins: Plugins, context: FeatureContext, ending: Ending, duration_s: float
) -> None:
    """Tell the plugins how the run stopped: ``workflow_finished`` for an ended run (and one
    that needs review), ``run_needs_person`` when a person must act (not for a pause a person
    asked for). The message is redacted: a notifier may send it off the machine."""
    state, pause = ending.state, ending.pause
    message = redact_text(ending.reason) if ending.reason else None
    if state in ENDED_RUN_STATES or state is RunState.NEEDS_REVIEW:
        plugins.workflow_finished(context, state.value, duration_s, message)
    if state is RunState.NEEDS_REVIEW:
        reason = RunState.NEEDS_REVIEW.value
    elif state is RunState.PAUSED and pause is not None and pause not in PERSON_CAUSED_PAUSES:
        reason = pause.value
    else:
        return
    plugins.run_needs_person(context, state.value, reason, message or reason)
