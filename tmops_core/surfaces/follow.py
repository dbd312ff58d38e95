"""Following a run live (``tmops watch``, ``tmops start --wait``, ``tmops demo``).

Reads the store's event log and the run's status; the exit code says how the run ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tmops_core.lifecycle import ACTIVE_RUN_STATES
from tmops_core.lifecycle import EXIT_CODES as RUN_EXIT_CODES

if TYPE_CHECKING:
    from tmops_core.service.operations import Service

__all__ = [
    "EXIT_CODES",
    "INTERRUPTED_EXIT",
    "follow_run",
    "format_event",
    "interrupted_message",
    "last_event_id",
]

#: how a run ended -> exit code of watch / start --wait / demo
EXIT_CODES = {state.value: code for state, code in RUN_EXIT_CODES.items()}
_ACTIVE = {state.value for state in ACTIVE_RUN_STATES}
#: a feature whose run tmops never started has nothing to follow
_NOT_STARTED_EXIT = 1
#: Ctrl-C stopped the following (128 + SIGINT, as shells report it)
INTERRUPTED_EXIT = 130


def format_event(event: dict[str, Any]) -> str:
    data = dict(event["data"])
    data.pop("run", None)
    kind = event["event_type"].removeprefix("orchestration.")
    clock = event["timestamp"][11:19]
    if kind == "phase.transition":
        target = data.get("to") or "end"
        return f"{clock} {data.get('from')} -> {target} ({data.get('duration_s')} s)"
    details = " ".join(f"{key}={value}" for key, value in data.items() if value is not None)
    return f"{clock} {kind} {details}".rstrip()


def last_event_id(service: Service, feature: str, *, workspace: Path | None = None) -> int:
    """The id of the feature's latest recorded event (0 if none): following from it shows only
    what happens next, not the events of an earlier run."""
    return max((e["id"] for e in service.events_since(feature, workspace=workspace)), default=0)


def follow_run(
    service: Service,
    feature: str,
    *,
    workspace: Path | None = None,
    echo: Callable[[str], None] = click.echo,
    poll_s: float = 0.1,
    after_id: int = 0,
) -> int:
    """Print the run's events (those after ``after_id``) as they happen until it is no longer
    queued or running, nor paused by a usage limit it resumes from by itself. Ctrl-C stops the
    following only, at once (exit 130): the run is the background engine's, which goes on
    with it."""
    last = after_id
    waiting_told: str | None = None
    try:
        while True:
            for event in service.events_since(feature, after_id=last, workspace=workspace):
                last = event["id"]
                echo(format_event(event))
            status = service.status(
                feature, workspace=workspace, include_sessions=False, include_checkpoints=False
            )
            if _resumes_by_itself(service, status):
                if waiting_told != status["resume_at"]:
                    waiting_told = status["resume_at"]
                    echo(f"{feature}: {status['next_action']}; following on (Ctrl-C stops it)")
            elif status["status"] not in _ACTIVE:
                for event in service.events_since(feature, after_id=last, workspace=workspace):
                    last = event["id"]
                    echo(format_event(event))
                echo(f"{feature}: {status['status']}; next: {status['next_action']}")
                return EXIT_CODES.get(status["status"], _NOT_STARTED_EXIT)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        echo(interrupted_message(feature, workspace))
        return INTERRUPTED_EXIT


def _resumes_by_itself(service: Service, status: dict[str, Any]) -> bool:
    """A run paused by a usage limit that the engine queues again when the limit lifts."""
    return bool(
        status["status"] == "paused"
        and status.get("pause_reason") == "usage_limited"
        and status.get("resume_at")
        and service.config.features.resume_after_usage_limit
    )


def interrupted_message(feature: str, workspace: Path | None = None) -> str:
    """What goes on after Ctrl-C stopped the following of a run, and what the person can do."""
    where = f" --workspace {workspace}" if workspace is not None else ""
    return (
        f"stopped following {feature}; its run goes on in the background engine: "
        f"`tmops watch {feature}{where}` follows it again, `tmops cancel {feature}{where}` "
        "stops it"
    )
