"""The frozen records that cross tmops hooks, and the protocols plugins implement.

Records are immutable (``attrs.frozen``, sequences as tuples, mappings as read-only proxies) and
check their own fields on construction, so a plugin that builds a bad record fails inside its own
hook, where the plugin manager can name it. This module holds data only: no I/O, no imports of
tmops_core or tmops_plugins.
"""

from __future__ import annotations

import enum
import re
import types
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = [
    "CHECKPOINT_NAME_PATTERN",
    "NAME_PATTERN",
    "AgentEvent",
    "AgentRequest",
    "AgentResult",
    "Artifact",
    "Checkpoint",
    "CheckpointFormat",
    "CheckpointRequirement",
    "Event",
    "EventMetadata",
    "FeatureContext",
    "Gate",
    "Invocation",
    "Outcome",
    "PhaseSpec",
    "Problem",
    "Provider",
    "ProviderSpec",
    "RollbackPolicy",
    "Severity",
    "Sink",
    "SinkSpec",
    "Validate",
    "ValidatorSpec",
]

#: Names of providers, phases, validators and sinks: lowercase words joined by ``-`` or ``_``.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
#: Checkpoint file names of the upstream protocol: ``NNN-<phase>-<status>.md`` or ``SUMMARY.md``.
CHECKPOINT_NAME_PATTERN = re.compile(r"(?:[0-9]{3}-[a-z0-9]+(?:-[a-z0-9]+)*\.md|SUMMARY\.md)")
_EVENT_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
#: Keys of :attr:`Checkpoint.fields` and :attr:`Checkpoint.sections`: ``## Action Required``
#: and ``**Action required:**`` are both ``action_required``.
_KEY_PATTERN = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return types.MappingProxyType(dict(value))


# Typed converters: with a bare ``tuple`` converter, type checkers cannot see the item type.
def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _paths(value: Iterable[Path]) -> tuple[Path, ...]:
    return tuple(value)


def _gates(value: Iterable[Gate]) -> tuple[Gate, ...]:
    return tuple(value)


def _artifacts(value: Iterable[Artifact]) -> frozenset[Artifact]:
    return frozenset(value)


def _requirements(value: Iterable[CheckpointRequirement]) -> tuple[CheckpointRequirement, ...]:
    return tuple(value)


def _check_requirements(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]
) -> None:
    for item in value:
        if not isinstance(item, CheckpointRequirement):
            raise TypeError(
                f"{type(instance).__name__}.{attribute.name} holds CheckpointRequirement "
                f"records, got {type(item).__name__}"
            )


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be lowercase letters and digits "
            f"joined by '-' or '_' (like 'security-review'), got {value!r}"
        )


def _check_checkpoint_name(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None and attribute.default is None:
        return
    if not isinstance(value, str) or not CHECKPOINT_NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be a checkpoint file name like "
            f"'003-tests-complete.md' or 'SUMMARY.md', got {value!r}"
        )


def _check_callable(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(value):
        raise TypeError(f"{type(instance).__name__}.{attribute.name} must be callable")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------------------------
# Agent providers
# --------------------------------------------------------------------------------------------


class Outcome(enum.Enum):
    """How one agent attempt ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    AUTH_ERROR = "auth_error"
    TRANSIENT_ERROR = "transient_error"
    USAGE_LIMITED = "usage_limited"
    #: the agent stopped at the spending limit it was given (``AgentRequest.max_budget_usd``)
    BUDGET_EXHAUSTED = "budget_exhausted"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    CANCELLED = "cancelled"

    @property
    def retryable(self) -> bool:
        """Whether trying the same attempt again can help (auth errors and cancels cannot)."""
        return self in {Outcome.FAILED, Outcome.TRANSIENT_ERROR, Outcome.TIMED_OUT, Outcome.CRASHED}


@attrs.frozen(kw_only=True)
class AgentRequest:
    """What the engine asks of one agent session; paths are absolute and resolved."""

    feature: str
    run: str
    phase: str
    role_instructions: str
    prompt: str
    working_dir: Path
    extra_dirs: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    resume_session_id: str | None = None
    max_turns: int | None = None
    allowed_tools: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    #: what is left of the run's (or the phase's) budget in USD, for a provider whose agent
    #: can stop itself there (Claude Code's ``--max-budget-usd``); None: no limit. tmops
    #: enforces the budget after each attempt either way.
    max_budget_usd: float | None = None


@attrs.frozen(kw_only=True)
class Invocation:
    """The process a provider wants run: an argv list (never a shell line), added env, stdin."""

    argv: tuple[str, ...] = attrs.field(converter=_strs)
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    stdin: str | None = None

    @argv.validator
    def _check_argv(
        self, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
    ) -> None:
        if not value:
            raise ValueError("Invocation.argv must name a program")
        for arg in value:
            if not isinstance(arg, str) or "\0" in arg:
                raise ValueError(f"Invocation.argv items must be strings without NUL, got {arg!r}")


@attrs.frozen(kw_only=True)
class AgentEvent:
    """One thing a provider understood from its agent's output.

    ``kind`` is ``session`` (the session id is known), ``progress`` (a tool call or text),
    ``cost`` (cumulative cost so far), ``result`` (the agent's final report) or ``error``.
    """

    kind: str
    session_id: str | None = None
    message: str = ""
    cost_usd: float | None = None
    turns: int | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.frozen(kw_only=True)
class AgentResult:
    """The provider's verdict on a finished agent process."""

    outcome: Outcome
    session_id: str | None = None
    cost_usd: float | None = None
    turns: int | None = None
    message: str = ""
    retry_after_s: float | None = None
    #: tokens the agent reported (input: every prompt token, cache reads and writes included);
    #: tmops prices them from ``providers.<name>.prices`` when ``cost_usd`` is None
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: the model the agent reported, to find its price
    model: str | None = None
    #: the session asked for (``AgentRequest.resume_session_id``) could not be continued: the
    #: core forgets it and runs the next attempt afresh with the whole prompt
    resume_failed: bool = False


@runtime_checkable
class Provider(Protocol):
    """A PURE agent provider: it never starts a process itself; the core runs what it asks for.

    A provider that can continue a session (``resume_session_id``) says so with an attribute
    ``can_resume = True``; without it, a retry runs the role afresh with the whole prompt.
    """

    def build_invocation(self, request: AgentRequest) -> Invocation:
        """Turn a request into the argv, extra environment and stdin of the agent process."""

    def parse_line(self, line: str) -> Iterable[AgentEvent]:
        """Read one line of the agent's stdout; yield what it means (often nothing)."""

    def finish(self, returncode: int, events: Sequence[AgentEvent], stderr: str) -> AgentResult:
        """Judge a finished process from its exit code (negative: killed by that signal),
        the events parsed from its output, and the tail of its stderr."""


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return tuple(value)


_ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_names(instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for name in value:
        if not _ENV_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"{type(instance).__name__}.{attribute.name} holds environment variable names "
                f"(letters, digits and '_', like 'MY_AGENT_'), got {name!r}"
            )


@attrs.frozen(kw_only=True)
class ProviderSpec:
    """Registers a provider: ``factory(settings)`` gets the provider's config section."""

    name: str = attrs.field(validator=_check_name)
    factory: Callable[[Mapping[str, Any]], Provider] = attrs.field(validator=_check_callable)
    description: str = ""
    #: the arguments that make the provider's program print its version (``("--version",)``),
    #: for ``tmops doctor``; empty: the program has no such argument, its version is not asked
    version_args: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    #: variables the agent may take from tmops' environment besides the core's allowlist (HOME,
    #: PATH, locale...): exact names (``MY_AGENT_CONFIG_DIR``), and prefixes (``MY_AGENT_``)
    #: for a family of settings; anything else stays behind unless the config allows it
    env_names: tuple[str, ...] = attrs.field(default=(), converter=_strings, validator=_env_names)
    env_prefixes: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, validator=_env_names
    )
    #: the provider agents run with when the config names none (``features.default_provider``
    #: unset): the core names no provider, so exactly one installed provider should say so
    is_default: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


class Gate(enum.Enum):
    """A check the engine runs before a phase may hand off."""

    TESTS_FAIL = "tests-fail"
    TESTS_PASS = "tests-pass"  # noqa: S105 - a gate name, not a password  # nosec B105


class Artifact(enum.Enum):
    """What a rollback of a phase may keep."""

    TASK_SPEC = "task-spec"
    TESTS = "tests"
    CODE = "code"


@attrs.frozen(kw_only=True)
class RollbackPolicy:
    """What survives when a phase is rolled back to its start commit (a backup is taken first)."""

    preserve: frozenset[Artifact] = attrs.field(default=frozenset(), converter=_artifacts)


def _check_keys(instance: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    for key in value:
        if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
            raise ValueError(
                f"{type(instance).__name__}.{attribute.name} are keys as tmops normalises them: "
                f"lowercase words joined by '_' (like 'action_required' for '## Action "
                f"Required'), got {key!r}"
            )


def _check_pattern(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{type(instance).__name__}.{attribute.name} must be a string or None")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} is not a regular expression: {exc}"
        ) from exc


def _check_text(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be a non-empty string")


@attrs.frozen(kw_only=True)
class CheckpointRequirement:
    """One part a phase's completion checkpoint must hold, present and not blank.

    The part is looked for in ``fields`` (keys of :attr:`Checkpoint.fields`, such as
    ``passing`` for ``- Passing: 0/3``) and ``sections`` (keys of :attr:`Checkpoint.sections`,
    such as ``action_required`` for ``## Action Required``); any one of them that holds text
    other than white space, and in which ``pattern`` (when given) is found, meets it.
    ``pattern`` is searched with :func:`re.search` in the stripped value, multiline (anchor it
    with ``\\A`` and ``\\Z`` to match a whole value; ``(?i)`` ignores case). With neither fields
    nor sections, ``pattern`` must be found in the checkpoint's whole text. ``what`` names the
    part in problems, without an article ("test plan"); ``hint`` tells the agent how to write
    it.
    """

    what: str = attrs.field(validator=_check_text)
    fields: tuple[str, ...] = attrs.field(default=(), converter=_strs, validator=_check_keys)
    sections: tuple[str, ...] = attrs.field(default=(), converter=_strs, validator=_check_keys)
    pattern: str | None = attrs.field(default=None, validator=_check_pattern)
    hint: str = ""

    def __attrs_post_init__(self) -> None:
        if not (self.fields or self.sections or self.pattern):
            raise ValueError(
                f"CheckpointRequirement {self.what!r} names no field, no section and no "
                "pattern: give at least one, so that it can be looked for"
            )


@attrs.frozen(kw_only=True)
class PhaseSpec:
    """One step of the workflow, run as one agent session.

    ``prompt`` may use ``{feature}``, ``{run}``, ``{branch}``, ``{task_spec}``,
    ``{checkpoint_dir}``, ``{trigger_checkpoint}``, ``{completion_checkpoint}`` and
    ``{worktree}``; the engine fills paths in absolute and resolved, and the two checkpoint
    placeholders with bare file names (join them to ``{checkpoint_dir}``).

    ``requires`` says what the completion checkpoint must hold (each part present and not
    blank); the engine hands it to the validators in :attr:`FeatureContext.requires`, and the
    built-in ``phase-content`` validator rejects a checkpoint that misses a part. A checkpoint
    that reports itself blocked need not hold them.
    """

    name: str = attrs.field(validator=_check_name)
    role: str = attrs.field(validator=_check_name)
    instructions: str
    prompt: str
    completion_checkpoint: str = attrs.field(validator=_check_checkpoint_name)
    trigger_checkpoint: str | None = attrs.field(default=None, validator=_check_checkpoint_name)
    gates: tuple[Gate, ...] = attrs.field(default=(), converter=_gates)
    rollback: RollbackPolicy = attrs.field(factory=RollbackPolicy)
    allowed_tools: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    description: str = ""
    requires: tuple[CheckpointRequirement, ...] = attrs.field(
        default=(), converter=_requirements, validator=_check_requirements
    )


# --------------------------------------------------------------------------------------------
# Checkpoints and validators
# --------------------------------------------------------------------------------------------


class CheckpointFormat(enum.Enum):
    """The body formats a checkpoint can be written in."""

    FRONT_MATTER = "front-matter"
    HEADER_BLOCK = "header-block"
    KEY_VALUE = "key-value"
    PLAIN = "plain"


@attrs.frozen(kw_only=True)
class Checkpoint:
    """A parsed checkpoint file.

    ``fields`` keys are lowercase words joined by ``_`` (``feature``, ``run``, ``passing``...);
    ``sections`` maps each Markdown heading (``#`` or ``##``, the ``# Checkpoint:`` title aside),
    keyed the same way (``action_required``), to the stripped text under it. ``parse_error``
    says why the body could not be read as the format it claims (front matter that is not a
    YAML mapping), else it is None; what could be read is still in ``fields``.
    """

    name: str
    path: Path
    format: CheckpointFormat
    fields: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    body: str = ""
    size: int = 0
    sections: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    parse_error: str | None = None


class Severity(enum.Enum):
    """An error blocks a handoff; a warning is reported and the handoff goes on."""

    ERROR = "error"
    WARNING = "warning"


@attrs.frozen(kw_only=True)
class Problem:
    """Something a validator found wrong with a checkpoint."""

    message: str
    severity: Severity = Severity.ERROR
    validator: str = ""
    path: Path | None = None


@attrs.frozen(kw_only=True)
class FeatureContext:
    """Where one run of one feature lives; every path absolute and resolved."""

    feature: str
    run: str
    workspace: str
    project_root: Path
    worktree: Path
    branch: str
    run_dir: Path
    checkpoint_dir: Path
    phase: str | None = None
    #: While validators run on a phase's completion checkpoint: that phase's ``requires``.
    requires: tuple[CheckpointRequirement, ...] = attrs.field(
        default=(), converter=_requirements, validator=_check_requirements
    )


Validate = Callable[[Checkpoint, FeatureContext], Iterable[Problem]]


@attrs.frozen(kw_only=True)
class ValidatorSpec:
    """Registers a checkpoint validator: ``validate(checkpoint, context)`` yields problems."""

    name: str = attrs.field(validator=_check_name)
    validate: Validate = attrs.field(validator=_check_callable)
    description: str = ""


# --------------------------------------------------------------------------------------------
# Telemetry
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class EventMetadata:
    """Who emitted an event."""

    service: str = "tmops"
    version: str = "0"
    environment: str = "development"


@attrs.frozen(kw_only=True)
class Event:
    """One telemetry event, with the fields of the tmops event schema."""

    event_type: str = attrs.field()
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    feature: str | None = None
    workspace: str = "default"
    correlation_id: str = attrs.field(factory=_new_id)
    event_id: str = attrs.field(factory=_new_id)
    timestamp: datetime = attrs.field(factory=_utc_now)
    metadata: EventMetadata = attrs.field(factory=EventMetadata)

    @event_type.validator
    def _check_event_type(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not _EVENT_TYPE_PATTERN.fullmatch(value):
            raise ValueError(
                f"Event.event_type must be dotted lowercase words like "
                f"'orchestration.phase.transition', got {value!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON-ready data (timestamp in ISO 8601, UTC)."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp.isoformat(),
            "feature": self.feature,
            "workspace": self.workspace,
            "correlation_id": self.correlation_id,
            "data": dict(self.data),
            "metadata": attrs.asdict(self.metadata),
        }


@runtime_checkable
class Sink(Protocol):
    """Receives every telemetry event. ``emit`` must be quick: it runs on the caller's thread."""

    def emit(self, event: Event) -> None:
        """Record one event."""

    def close(self) -> None:
        """Flush and release what the sink holds."""


@attrs.frozen(kw_only=True)
class SinkSpec:
    """Registers a sink: ``factory(options)`` gets the sink's options from the config."""

    name: str = attrs.field(validator=_check_name)
    factory: Callable[[Mapping[str, Any]], Sink] = attrs.field(validator=_check_callable)
    description: str = ""
