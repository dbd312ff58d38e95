"""tmops_core.lifecycle: the states and the transition table, as data."""

from __future__ import annotations

import pytest

from tmops_core.lifecycle import (
    ACTIVE_RUN_STATES,
    ENDED_RUN_STATES,
    RUN_TRANSITIONS,
    AttemptState,
    IllegalTransition,
    PhaseState,
    RunState,
    check_run_transition,
    exit_code,
    phase_state,
)


def test_every_run_state_has_a_row_in_the_table() -> None:
    assert set(RUN_TRANSITIONS) == set(RunState)


def test_a_completed_run_is_reopened_only_by_a_rollback_which_pauses_it() -> None:
    assert RUN_TRANSITIONS[RunState.COMPLETED] == frozenset({RunState.PAUSED})
    for target in set(RunState) - {RunState.PAUSED}:
        with pytest.raises(IllegalTransition, match="from completed"):
            check_run_transition(RunState.COMPLETED, target)


def test_every_run_but_a_new_one_can_pause() -> None:
    # active runs by a person's pause (or a usage limit...), stopped ones by a rollback
    for state in RunState:
        assert (RunState.PAUSED in RUN_TRANSITIONS[state]) is (state is not RunState.INITIALIZED)


@pytest.mark.parametrize(
    ("old", "new"),
    [("initialized", "running"), ("queued", "completed"), ("failed", "running"),
     ("paused", "completed")],
)  # fmt: skip
def test_transitions_outside_the_table_raise(old: str, new: str) -> None:
    with pytest.raises(IllegalTransition):
        check_run_transition(old, new)


def test_every_stopped_run_can_be_resumed_except_a_completed_one() -> None:
    for state in (RunState.PAUSED, RunState.FAILED, RunState.NEEDS_REVIEW, RunState.CANCELLED):
        assert check_run_transition(state, "queued") is RunState.QUEUED


def test_an_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="done"):
        check_run_transition("done", "queued")


def test_exit_codes_are_distinct_and_only_for_stopped_runs() -> None:
    codes = {state: exit_code(state) for state in RunState}
    stopped = {s: c for s, c in codes.items() if c is not None}
    assert stopped[RunState.COMPLETED] == 0
    assert len(set(stopped.values())) == len(stopped)
    assert all(codes[state] is None for state in ACTIVE_RUN_STATES)
    assert all(codes[state] is not None for state in ENDED_RUN_STATES)


def test_phase_state_is_projected_from_attempts() -> None:
    assert phase_state([], run="running") is PhaseState.PENDING
    assert phase_state(["running"], run="running") is PhaseState.IN_PROGRESS
    assert phase_state(["rejected", "completed"], run="running") is PhaseState.COMPLETED
    assert phase_state(["rejected", "failed"], run="failed") is PhaseState.FAILED
    assert phase_state(["abandoned"], run="queued") is PhaseState.IN_PROGRESS
    assert phase_state([AttemptState.INTERRUPTED], run="paused") is PhaseState.PENDING
    # sent back by a person: pending again, also while the run is queued to redo it
    assert phase_state(["completed", "reset"], run="queued") is PhaseState.PENDING
    assert phase_state(["completed", "reset", "running"], run="running") is PhaseState.IN_PROGRESS
