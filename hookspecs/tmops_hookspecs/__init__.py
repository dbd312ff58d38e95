"""tmops_hookspecs: the plugin contract of tmops.

A plugin is a module (or object) with functions marked ``@hookimpl``, published as an entry
point in the group ``tmops``::

    [project.entry-points.tmops]
    my-plugin = "my_package.plugin"

This package depends on pluggy and attrs only and never imports tmops_core or tmops_plugins.
"""

from __future__ import annotations

from . import specs
from .errors import (
    CheckpointError,
    ConfigError,
    FeatureError,
    PluginError,
    ProviderError,
    TmopsError,
    WorkspaceError,
)
from .executor import (
    CHECK_STATUSES,
    WORKER_CONCURRENCY_KEY,
    AttemptHooks,
    AttemptOutcome,
    AttemptSpec,
    Executor,
    ExecutorCheck,
    ExecutorHost,
    ExecutorSpec,
)
from .records import (
    CHECKPOINT_NAME_PATTERN,
    NAME_PATTERN,
    AgentEvent,
    AgentRequest,
    AgentResult,
    Artifact,
    Checkpoint,
    CheckpointFormat,
    CheckpointRequirement,
    Event,
    EventMetadata,
    FeatureContext,
    Gate,
    Invocation,
    Outcome,
    PhaseSpec,
    Problem,
    Provider,
    ProviderSpec,
    RollbackPolicy,
    Severity,
    Sink,
    SinkSpec,
    Validate,
    ValidatorSpec,
)
from .specs import PROJECT_NAME, hookimpl

__all__ = [
    "CHECKPOINT_NAME_PATTERN",
    "CHECK_STATUSES",
    "NAME_PATTERN",
    "PROJECT_NAME",
    "WORKER_CONCURRENCY_KEY",
    "AgentEvent",
    "AgentRequest",
    "AgentResult",
    "Artifact",
    "AttemptHooks",
    "AttemptOutcome",
    "AttemptSpec",
    "Checkpoint",
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointRequirement",
    "ConfigError",
    "Event",
    "EventMetadata",
    "Executor",
    "ExecutorCheck",
    "ExecutorHost",
    "ExecutorSpec",
    "FeatureContext",
    "FeatureError",
    "Gate",
    "Invocation",
    "Outcome",
    "PhaseSpec",
    "PluginError",
    "Problem",
    "Provider",
    "ProviderError",
    "ProviderSpec",
    "RollbackPolicy",
    "Severity",
    "Sink",
    "SinkSpec",
    "TmopsError",
    "Validate",
    "ValidatorSpec",
    "WorkspaceError",
    "hookimpl",
    "specs",
]


def __getattr__(name: str) -> str:
    # The default provider is chosen by the plugins now (ProviderSpec.is_default); the old
    # constant stays readable, with a warning, for plugins written against it.
    if name == "DEFAULT_PROVIDER":
        import warnings

        warnings.warn(
            "tmops_hookspecs.DEFAULT_PROVIDER is deprecated: the default provider is the "
            "installed one whose ProviderSpec says is_default=True",
            DeprecationWarning,
            stacklevel=2,
        )
        return "claude-code"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
