"""The ``notify`` plugin: tell someone when a run completes, fails, or needs a person.

Configured under ``plugins.settings.notify`` (see docs/notifications.md): a ``command`` (an
argv that gets the event as JSON on stdin), a ``webhook`` (POST JSON, with retries) and the
``desktop`` (``notify-send``); ``command`` and ``webhook`` may be lists. Each takes ``events``,
the kinds it is told of (default: all). It listens to the lifecycle hooks
``tmops_workflow_finished`` and ``tmops_run_needs_person`` and hands each notification to a
background outbox, so delivery never holds a run up; ``tmops_unconfigure`` flushes them
against ``flush_timeout_s``.

One configuration per process: tmops loads its plugins once per command, and the last
``tmops_configure`` wins (the outboxes it replaces are still flushed).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tmops_hookspecs import FeatureContext, hookimpl

from .notify_delivery import Outbox, flush_all
from .notify_settings import DEFAULT_FLUSH_TIMEOUT_S, KINDS, parse_settings


class _Active:
    """What the last ``tmops_configure`` set up, and the outboxes it replaced (to flush)."""

    def __init__(self) -> None:
        self.outboxes: list[Outbox] = []
        self.retired: list[Outbox] = []
        self.flush_timeout_s = DEFAULT_FLUSH_TIMEOUT_S


_active = _Active()


# -- the hooks -----------------------------------------------------------------------------------


@hookimpl
def tmops_configure(settings: Mapping[str, Any]) -> None:
    outboxes, flush_timeout_s = parse_settings(settings)
    _active.retired.extend(outbox for outbox in _active.outboxes if outbox.delivering)
    _active.outboxes = outboxes
    _active.flush_timeout_s = flush_timeout_s


@hookimpl
def tmops_workflow_finished(
    context: FeatureContext, outcome: str, duration_s: float, message: str | None
) -> None:
    if outcome in KINDS:  # needs_review comes through tmops_run_needs_person
        post(notification(outcome, context, outcome, None, message, duration_s))


@hookimpl
def tmops_run_needs_person(context: FeatureContext, state: str, reason: str, message: str) -> None:
    post(notification("needs_person", context, state, reason, message))


@hookimpl
def tmops_unconfigure() -> None:
    retired, _active.retired = _active.retired, []
    flush_all([*retired, *_active.outboxes], _active.flush_timeout_s)


def post(event: Mapping[str, Any]) -> None:
    """Hand ``event`` to every configured notifier that takes its kind."""
    for outbox in _active.outboxes:
        outbox.post(event)


# -- the event -----------------------------------------------------------------------------------


def notification(
    kind: str, context: FeatureContext, state: str, reason: str | None, message: str | None,
    duration_s: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The event every notifier gets, as JSON-ready data."""
    project = str(context.project_root)
    return {
        "event": kind,
        "feature": context.feature,
        "run": context.run,
        "state": state,
        "reason": reason,
        "message": message,
        "workspace": context.workspace,
        "project": project,
        "branch": context.branch,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": None if duration_s is None else round(duration_s, 3),
        "status_command": shlex.join(["tmops", "status", context.feature, "--workspace", project]),
    }
