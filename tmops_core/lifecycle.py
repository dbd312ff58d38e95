"""The lifecycle of a run, its phases and their attempts, as data: states, verdicts and the
transition table.

Pure: no I/O, no clock, no store. The store, the engine, status and every surface read and
write states only through this module, so a state that is not here cannot exist, and a
transition that is not in the table is a bug that raises :class:`IllegalTransition`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = [
    "ACTIVE_RUN_STATES",
    "ENDED_RUN_STATES",
    "EXIT_CODES",
    "LIVE_ATTEMPT_STATES",
    "RUN_TRANSITIONS",
    "AttemptState",
    "EngineState",
    "IllegalTransition",
    "PauseReason",
    "PhaseState",
    "RunState",
    "Verdict",
    "check_run_transition",
    "exit_code",
    "phase_state",
]


class RunState(enum.StrEnum):
    """Where a run stands."""

    INITIALIZED = "initialized"  # created by ``init``; never started
    QUEUED = "queued"  # waiting for an engine slot
    RUNNING = "running"  # an engine owns it and runs its phases
    PAUSED = "paused"  # stopped on purpose, with a :class:`PauseReason`; resumable
    NEEDS_REVIEW = "needs_review"  # the verifier said NO after the rework rounds: a person decides
    COMPLETED = "completed"  # every phase accepted, SUMMARY.md and metrics.json written
    FAILED = "failed"  # stopped by an error, with its reason; resumable
    CANCELLED = "cancelled"  # stopped by a person; branch, worktree and files stay


class PauseReason(enum.StrEnum):
    """Why a run is paused."""

    REQUESTED = "requested"
    AWAITING_APPROVAL = "awaiting_approval"
    BRANCH_MOVED = "branch_moved"
    USAGE_LIMITED = "usage_limited"
    BUDGET_EXHAUSTED = "budget_exhausted"
    ROLLED_BACK = "rolled_back"  # a person rolled phases back; resuming runs them again


class PhaseState(enum.StrEnum):
    """A phase of a run, as projected from its attempts."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    NEEDS_REVIEW = "needs_review"  # its reviewer refused the work; a person decides
    #: a completion checkpoint written by hand for a run tmops has not started: a fact from the
    #: files, not a state of the store; ``tmops start`` checks it before it counts
    WRITTEN = "written"


class AttemptState(enum.StrEnum):
    """One try at a phase: an agent session, or the adoption of a checkpoint found on disk."""

    STARTING = "starting"  # recorded, the agent not yet spawned
    RUNNING = "running"  # the agent process is alive (its pid and start time are recorded)
    COMPLETED = "completed"  # accepted: validators and gates passed, work committed
    REJECTED = "rejected"  # the checkpoint or a gate refused the work; the phase goes again
    FAILED = "failed"  # the last try of the phase failed; the run failed with it
    REWORK = "rework"  # the verifier said NO; the implementer goes again with its findings
    REFUSED = "refused"  # the verifier said NO and no rework round was left: a person decides
    PAUSED = "paused"  # the run paused at this attempt (usage limit, branch moved, ...)
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the engine stopped in order (SIGTERM) while it ran
    ABANDONED = "abandoned"  # the engine died while it ran; a new engine took over
    #: a person sent the phase back (retry, rollback): the attempts before this one no longer
    #: count, and the phase runs again
    RESET = "reset"


class EngineState(enum.StrEnum):
    """An engine process as the store knows it (at most one is ``serving`` a project)."""

    SERVING = "serving"  # holds the project's lease, renewed by its heartbeat
    STOPPED = "stopped"  # gave the lease back: it went idle, or stopped in order on a signal
    TAKEN_OVER = "taken_over"  # found dead (or its lease expired): another engine took over


class Verdict(enum.StrEnum):
    """The judge's decision on one attempt."""

    ACCEPT = "accept"  # hand off to the next phase
    RETRY = "retry"  # the same phase again, told why
    REWORK = "rework"  # back to the implementer with the verifier's findings
    NEEDS_REVIEW = "needs_review"  # the verifier said NO and no rework round is left
    FAIL = "fail"  # the run fails (auth error, no retries left, a broken config)
    PAUSE = "pause"  # the run pauses (usage limit)
    CANCEL = "cancel"


ACTIVE_RUN_STATES = frozenset({RunState.QUEUED, RunState.RUNNING})
ENDED_RUN_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})
LIVE_ATTEMPT_STATES = frozenset({AttemptState.STARTING, AttemptState.RUNNING})

# A stopped run may be queued again, cancelled, or rolled back (which leaves it paused).
_RESUMABLE = frozenset({RunState.QUEUED, RunState.CANCELLED, RunState.PAUSED})
RUN_TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    RunState.INITIALIZED: frozenset({RunState.QUEUED, RunState.CANCELLED}),
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.PAUSED, RunState.CANCELLED,
                                RunState.FAILED}),
    RunState.RUNNING: frozenset(
        {RunState.QUEUED, RunState.PAUSED, RunState.NEEDS_REVIEW, RunState.COMPLETED,
         RunState.FAILED, RunState.CANCELLED}
    ),
    RunState.PAUSED: _RESUMABLE,
    RunState.NEEDS_REVIEW: _RESUMABLE,
    RunState.FAILED: _RESUMABLE,
    RunState.CANCELLED: frozenset({RunState.QUEUED, RunState.PAUSED}),
    # only a rollback reopens a completed run: it pauses, to be resumed by a person
    RunState.COMPLETED: frozenset({RunState.PAUSED}),
}  # fmt: skip

#: The exit code of ``start --wait`` and ``watch`` for a run that stopped in this state.
EXIT_CODES: Mapping[RunState, int] = {
    RunState.COMPLETED: 0,
    RunState.FAILED: 1,
    RunState.PAUSED: 3,
    RunState.CANCELLED: 4,
    RunState.NEEDS_REVIEW: 5,
}


class IllegalTransition(Exception):
    """A change of state the lifecycle does not allow: a bug, never a user error."""


def check_run_transition(old: RunState | str, new: RunState | str) -> RunState:
    """Return ``new`` as a :class:`RunState` if a run may go from ``old`` to it, else raise."""
    source, target = RunState(old), RunState(new)
    if target not in RUN_TRANSITIONS[source]:
        raise IllegalTransition(f"a run cannot go from {source} to {target}")
    return target


def exit_code(state: RunState | str) -> int | None:
    """The exit code for a run that stopped in ``state``; ``None`` while it is still going."""
    return EXIT_CODES.get(RunState(state))


def phase_state(attempts: list[AttemptState | str], *, run: RunState | str) -> PhaseState:
    """Project a phase's state from its attempts (oldest first) and the run's state."""
    states = [AttemptState(a) for a in attempts]
    if not states or states[-1] is AttemptState.RESET:
        return PhaseState.PENDING
    if AttemptState.COMPLETED in states and states[-1] is AttemptState.COMPLETED:
        return PhaseState.COMPLETED
    if states[-1] in LIVE_ATTEMPT_STATES:
        return PhaseState.IN_PROGRESS
    if states[-1] is AttemptState.REFUSED:
        return PhaseState.NEEDS_REVIEW
    if RunState(run) in {RunState.FAILED, RunState.NEEDS_REVIEW} and states[-1] in {
        AttemptState.FAILED,
        AttemptState.REJECTED,
        AttemptState.REWORK,
    }:
        return PhaseState.FAILED
    return PhaseState.IN_PROGRESS if RunState(run) in ACTIVE_RUN_STATES else PhaseState.PENDING
