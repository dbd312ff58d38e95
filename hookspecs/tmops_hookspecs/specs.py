"""The tmops hook specifications.

``tmops_configure`` comes first: each plugin gets its own config section
(``plugins.settings.<name>``). Then two kinds of hooks:

* **Registration hooks** (``tmops_register_*``) return iterables of frozen records. The core calls
  each plugin's implementation on its own, checks what comes back, refuses a name registered by
  two plugins (naming both) and skips a plugin that fails (naming it and the reason).
* **Lifecycle hooks** are broadcasts: every implementation is called, a failing one is logged once
  with its plugin's name and the workflow goes on. Their return values are ignored.

Implementations are called with keyword arguments only and may accept any subset of them.
Every hook here must be documented in ``docs/plugins.md``; a test enforces it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from .executor import ExecutorSpec
from .records import FeatureContext, PhaseSpec, ProviderSpec, SinkSpec, ValidatorSpec

if TYPE_CHECKING:
    import click

__all__ = ["PROJECT_NAME", "hookimpl"]

PROJECT_NAME = "tmops"

_hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a plugin's hook implementations: ``@hookimpl def tmops_register_sinks(): ...``.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------------------------
# Configuration: called first
# --------------------------------------------------------------------------------------------


@_hookspec
def tmops_configure(settings: Mapping[str, Any]) -> None:
    """Receive the plugin's own section of the config, before any other hook of the plugin.

    Called once on each loaded plugin that implements it, each time tmops loads its plugins
    (every ``tmops`` command, MCP server and engine process).

    :param settings: ``plugins.settings.<plugin name>`` (the entry-point name), read-only; an
        empty mapping when the config has no such section. Raise
        :class:`~tmops_hookspecs.ConfigError` for settings the plugin cannot use: the plugin is
        then skipped, and ``tmops config check`` reports the message at
        ``$.plugins.settings.<plugin name>``.
    """


# --------------------------------------------------------------------------------------------
# Registration hooks: what a plugin adds
# --------------------------------------------------------------------------------------------


@_hookspec
def tmops_register_providers() -> Iterable[ProviderSpec]:  # type: ignore[empty-body]
    """Register agent providers (Claude Code, other agent CLIs, scripts).

    :return: :class:`~tmops_hookspecs.ProviderSpec` records. A provider is pure: it builds an
        :class:`~tmops_hookspecs.Invocation` and parses output; the core runs the process.
    """


@_hookspec
def tmops_register_phases() -> Iterable[PhaseSpec]:  # type: ignore[empty-body]
    """Register workflow phases.

    A phase runs when its name is listed in the workflow (config ``features.default_phases``).

    :return: :class:`~tmops_hookspecs.PhaseSpec` records.
    """


@_hookspec
def tmops_register_validators() -> Iterable[ValidatorSpec]:  # type: ignore[empty-body]
    """Register checkpoint validators.

    Every checkpoint goes through every validator before a handoff; an error-severity
    :class:`~tmops_hookspecs.Problem` blocks the handoff.

    :return: :class:`~tmops_hookspecs.ValidatorSpec` records.
    """


@_hookspec
def tmops_register_executors() -> Iterable[ExecutorSpec]:  # type: ignore[empty-body]
    """Register attempt executors (where and how one phase attempt runs).

    The built-in executor runs agents in the engine's process tree; an executor plugin runs
    them elsewhere (on the workers of a distributed engine) behind the same
    :class:`~tmops_hookspecs.Executor` protocol.

    :return: :class:`~tmops_hookspecs.ExecutorSpec` records.
    """


@_hookspec
def tmops_register_sinks() -> Iterable[SinkSpec]:  # type: ignore[empty-body]
    """Register telemetry sinks.

    A sink is used when its name is listed under ``telemetry.outputs`` in the config.

    :return: :class:`~tmops_hookspecs.SinkSpec` records.
    """


@_hookspec
def tmops_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``tmops`` command line.

    :param cli: the root ``tmops`` click group; call ``cli.add_command(...)`` or decorate
        functions with ``@cli.command()``.
    """


# --------------------------------------------------------------------------------------------
# Lifecycle hooks: broadcasts, failures contained
# --------------------------------------------------------------------------------------------


@_hookspec
def tmops_feature_initialized(context: FeatureContext) -> None:
    """Called after a feature's branch, folders and TASK_SPEC.md exist.

    :param context: where the feature and its run live.
    """


@_hookspec
def tmops_phase_started(context: FeatureContext, phase: str, attempt: int) -> None:
    """Called when an attempt of a phase starts, before its agent process is spawned.

    :param context: the feature run, with ``context.phase`` set.
    :param phase: the phase name.
    :param attempt: 1 for the first attempt, 2 for the first retry, and so on.
    """


@_hookspec
def tmops_phase_finished(
    context: FeatureContext, phase: str, attempt: int, outcome: str, duration_s: float
) -> None:
    """Called when an attempt of a phase has ended.

    :param context: the feature run, with ``context.phase`` set.
    :param phase: the phase name.
    :param attempt: the attempt number.
    :param outcome: ``completed`` (handed off), or an :class:`~tmops_hookspecs.Outcome` value.
    :param duration_s: wall-clock seconds the attempt took.
    """


@_hookspec
def tmops_workflow_finished(
    context: FeatureContext, outcome: str, duration_s: float, message: str | None
) -> None:
    """Called once when a run ends.

    :param context: the feature run.
    :param outcome: ``completed``, ``failed``, ``cancelled`` or ``needs_review``.
    :param duration_s: wall-clock seconds from start to end.
    :param message: why it ended (the error of a failed run), ``None`` for a completed one.
    """


@_hookspec
def tmops_run_needs_person(context: FeatureContext, state: str, reason: str, message: str) -> None:
    """Called once when a run stops for a person to act on: it paused on its own (awaiting
    approval, the branch moved, a usage limit, the budget) or ends ``needs_review``. Not for a
    pause or rollback a person asked for.

    :param context: the feature run.
    :param state: the run's state: ``paused`` or ``needs_review``.
    :param reason: the pause reason (``awaiting_approval``, ``branch_moved``,
        ``usage_limited``, ``budget_exhausted``), or ``needs_review``.
    :param message: what happened and what to do, as ``tmops status`` shows it.
    """


@_hookspec
def tmops_unconfigure() -> None:
    """Called once when tmops is done with its plugins (the end of every ``tmops`` command, and
    of the engine process when it stops): flush and release what the plugin holds, quickly.
    """
