"""The records the store hands out, whatever the backend: features, runs, attempts, and the
exception that tells a runner it lost its run; data, and pure helpers over it."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs

from tmops_core.lifecycle import ACTIVE_RUN_STATES, AttemptState

__all__ = [
    "ACTIVE_STATES",
    "STORE_NAME",
    "AttemptRecord",
    "FeatureRecord",
    "LostOwnership",
    "RunRecord",
    "StoreUnreachable",
    "from_row",
    "since_reset",
]

_Record = TypeVar("_Record")

#: the SQLite database under ``.tmops/``
STORE_NAME = "tmops.db"
#: run states in which an engine owns (or will own) the run
ACTIVE_STATES = ACTIVE_RUN_STATES


@attrs.frozen
class FeatureRecord:
    name: str
    branch: str
    worktree: str
    isolation: str
    current_run: str
    status: str
    created_at: str
    updated_at: str


@attrs.frozen
class RunRecord:
    feature: str
    run: str
    status: str
    created_at: str
    updated_at: str
    run_id: str | None = None
    provider: str | None = None
    queued_at: str | None = None
    queue_seq: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    current_phase: str | None = None
    cost_usd: float = 0.0
    last_error: str | None = None
    engine_pid: int | None = None
    fencing: int = 0
    pause_reason: str | None = None
    branch_head: str | None = None
    #: the engine (:class:`EngineRecord`) that owns the run while it is running
    engine_id: int | None = None
    #: a person asked the run to pause before its next phase
    pause_requested: bool = attrs.field(default=False, converter=bool)
    #: a run paused by a usage limit: when the limit lifts (ISO, UTC)
    resume_at: str | None = None
    #: the per-phase providers `start` named (a JSON object phase -> provider)
    phase_providers: str | None = None
    #: a run paused by a usage limit: the provider that hit it (of the phase then running)
    limited_provider: str | None = None

    @property
    def phase_overrides(self) -> dict[str, str]:
        """The per-phase providers `start` named, phase -> provider (empty: none)."""
        found = json.loads(self.phase_providers) if self.phase_providers else {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATES


@attrs.frozen
class AttemptRecord:
    id: int
    feature: str
    run: str
    phase: str
    attempt: int
    state: str
    provider: str
    fencing: int
    started_at: str
    pid: int | None = None
    start_time: int | None = None
    mark: str | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    turns: int | None = None
    start_commit: str | None = None
    outcome: str | None = None
    message: str | None = None
    duration_s: float | None = None
    finished_at: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


def from_row(record: type[_Record], row: Any) -> _Record:
    """The record of a row of the store: every column but ``workspace_id``, which is the same
    in every row of a store (the store's own workspace, checked when it was opened)."""
    columns = dict(row)
    columns.pop("workspace_id", None)
    return record(**columns)


def since_reset(attempts: list[AttemptRecord], phase: str) -> list[AttemptRecord]:
    """The attempts at ``phase`` after a person last sent it back (retry, rollback)."""
    mine = [a for a in attempts if a.phase == phase]
    resets = [i for i, a in enumerate(mine) if a.state == AttemptState.RESET]
    return mine[resets[-1] + 1 :] if resets else mine


class LostOwnership(Exception):
    """A run's fencing token changed: another engine owns it now, so this one must stop."""


class StoreUnreachable(Exception):
    """The database that worked a moment ago does not answer (a restart, a failover, the
    network): a transaction now fails whole, and the next one tries to connect again."""
