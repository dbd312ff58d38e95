"""The executor seam: one phase attempt as a self-contained unit, ``AttemptSpec`` -> outcome.

The run loop hands each attempt to an executor. The built-in one runs the agent in the engine's
own process tree through the core's supervisor; a plugin may run it elsewhere (on workers of a
distributed engine). Whatever runs it reports back through :class:`AttemptHooks`, and the core
checks every change an attempt causes against the attempt's fencing token where it records it,
so a late or duplicate runner can never move a run on. This module holds data and protocols
only: no I/O, no imports of tmops_core or tmops_plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

from .records import (
    AgentEvent,
    AgentRequest,
    AgentResult,
    Provider,
    _check_callable,
    _check_name,
    _strs,
)

__all__ = [
    "CHECK_STATUSES",
    "WORKER_CONCURRENCY_KEY",
    "AttemptHooks",
    "AttemptOutcome",
    "AttemptSpec",
    "Executor",
    "ExecutorCheck",
    "ExecutorHost",
    "ExecutorSpec",
]


#: how an executor's check ended: only a ``fail`` makes ``tmops doctor`` fail
CHECK_STATUSES = ("ok", "warn", "fail")
#: the key ``tmops worker --concurrency N`` sets among the settings ``serve`` gets: how many
#: attempts (each one agent process) the worker runs side by side
WORKER_CONCURRENCY_KEY = "max_concurrent_attempts"


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"AttemptSpec.{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class AttemptSpec:
    """Everything one attempt needs, so it can run wherever its executor puts it.

    ``fencing`` is the run's fencing token when the attempt was issued: the core refuses every
    change reported under an older token. ``request`` carries the prompt, the role
    instructions, the working directory and the session to resume. ``env`` is added to the
    agent's environment, which otherwise holds only the allowlisted variables of the
    executor's own (``env_allow`` names more, ``NAME_*`` a prefix). ``checkpoint`` is the
    completion checkpoint the agent must write; once it exists, the agent has
    ``checkpoint_grace_s`` to exit. ``attempt_id`` is the store's id of the attempt's record:
    unique for the project's life and growing, where ``attempt`` (the phase's count) starts
    again after a rollback or a takeover; 0 for an attempt no store recorded.
    """

    feature: str
    run: str
    phase: str
    attempt: int
    fencing: int
    provider: str
    request: AgentRequest
    checkpoint: Path
    log_path: Path
    env: Mapping[str, str] = attrs.field(factory=dict)
    env_allow: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    wall_clock_s: float = attrs.field(default=3600.0, validator=_positive)
    idle_s: float = attrs.field(default=600.0, validator=_positive)
    checkpoint_grace_s: float = attrs.field(default=30.0, validator=_positive)
    attempt_id: int = 0


@attrs.frozen(kw_only=True)
class AttemptOutcome:
    """How one attempt ended, before the judge looks at the checkpoint.

    ``stop_reason`` is why the executor stopped the agent (``wall_clock``, ``idle``,
    ``cancelled``, ``stopped`` after the checkpoint grace), ``None`` if it exited by itself.
    """

    result: AgentResult
    checkpoint_present: bool
    session_id: str | None = None
    stop_reason: str | None = None
    returncode: int | None = None


@runtime_checkable
class AttemptHooks(Protocol):
    """The run's side of the seam. Each call may raise if the attempt lost its run (fencing)."""

    def started(self, pid: int, start_time: int, mark: str | None) -> None:
        """The agent process runs: record it so a later engine can find and stop it."""

    def session(self, session_id: str) -> None:
        """The agent's session id is known (it is resumed from it on a retry)."""

    def event(self, event: AgentEvent) -> None:
        """One thing the provider understood from the agent's output."""

    def cancelled(self) -> bool:
        """Whether the attempt must stop now (a cancel, pause or engine stop)."""

    def checkpoint_seen(self) -> bool:
        """Whether the completion checkpoint has been seen (the grace period starts)."""

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` (on any thread) whenever :meth:`cancelled` or :meth:`checkpoint_seen`
        may have become true, so an executor waits on events rather than polling them; returns
        the call that stops it."""


@runtime_checkable
class Executor(Protocol):
    """Runs one attempt to its end and reports how it ended."""

    def execute(self, spec: AttemptSpec, provider: Provider, hooks: AttemptHooks) -> AttemptOutcome:
        """Run the agent ``provider`` describes for ``spec``; return when it has ended."""


@runtime_checkable
class ExecutorHost(Protocol):
    """What the core lends an executor that runs attempts away from the engine.

    An attempt travels as a *job*: JSON data (paths relative to the project root, the
    checkpoints the agent reads, the fencing token), so it can cross a queue to a worker on
    another machine. The worker runs it with the core's own supervisor in its clone of the
    project and answers with a *result* (JSON data, its work pushed to a ref of its attempt's
    own on the shared remote); the engine settles it: only the ref the accepted result names
    reaches its branch, every store write stays the engine's, under the run's token.
    """

    @property
    def workspace_id(self) -> str:
        """The workspace this engine or worker serves (``server.workspace_id``)."""

    @property
    def max_retries(self) -> int:
        """``features.max_retries``: how often an attempt lost with its worker is run again."""

    def job(self, spec: AttemptSpec) -> dict[str, Any]:
        """Engine side: ``spec`` as a job, the feature branch published to the shared remote."""

    def settle(
        self, spec: AttemptSpec, result: Mapping[str, Any], hooks: AttemptHooks
    ) -> AttemptOutcome:
        """Engine side: the worker's commits onto the engine's branch, its checkpoints into the
        run's folder, its events and session through ``hooks``; how the attempt ended."""

    def run_job(self, job: Mapping[str, Any], hooks: AttemptHooks) -> dict[str, Any]:
        """Worker side: run ``job``'s agent here (the core's supervisor, ``hooks`` for its
        cancel), push the work to the attempt's ref; the result."""


@attrs.frozen(kw_only=True)
class ExecutorCheck:
    """One finding of an executor's check, shown by ``tmops doctor`` as its own checks are:
    what was looked at (``name``), how it went (``ok``, ``warn`` or ``fail``), what was found,
    and, unless it is ok, the fix."""

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    status: str = attrs.field(validator=attrs.validators.in_(CHECK_STATUSES))
    found: str
    fix: str = ""


@attrs.frozen(kw_only=True)
class ExecutorSpec:
    """Registers an executor selected by the config's ``executor.name``.

    ``factory(settings, host)`` gets the executor's own keys of the ``executor`` section (its
    ``name`` and the core's ``remote`` left out) and raises ``ConfigError`` naming
    ``$.executor.<key>`` for a bad one; it must not connect to anything (``tmops config
    check`` calls it too). ``serve(settings, host)``, if given, runs a worker of this executor
    on this machine until SIGTERM or SIGINT (``tmops worker``); ``tmops worker --concurrency N``
    sets :data:`WORKER_CONCURRENCY_KEY` to ``N`` among its settings. ``check(settings, host)``,
    if given, is ``tmops doctor``'s look at what the executor needs (its server, its workers):
    it raises ``ConfigError`` for bad settings as ``factory`` does, bounds every call it makes
    by a timeout of a few seconds (a doctor never hangs), and reports what it found as
    :class:`ExecutorCheck` values rather than raising.
    """

    name: str = attrs.field(validator=_check_name)
    factory: Callable[[Mapping[str, Any], ExecutorHost], Executor] = attrs.field(
        validator=_check_callable
    )
    serve: Callable[[Mapping[str, Any], ExecutorHost], None] | None = None
    check: Callable[[Mapping[str, Any], ExecutorHost], Sequence[ExecutorCheck]] | None = None
    description: str = ""
