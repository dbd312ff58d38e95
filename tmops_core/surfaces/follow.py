"""Following a run live (``tmops watch``, ``tmops start --wait``, ``tmops demo``).

Reads the store's event log and the run's status; the exit code says how the run ended.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

from tmops_core.lifecycle import ACTIVE_RUN_STATES
from tmops_core.lifecycle import EXIT_CODES as RUN_EXIT_CODES
from tmops_core.orchestration.progress import terminal_safe

if TYPE_CHECKING:
    from tmops_core.service.operations import Service

__all__ = [
    "EXIT_CODES",
    "INTERRUPTED_EXIT",
    "RunView",
    "agent_action",
    "ctrl_c_stops_waiting",
    "follow_run",
    "format_event",
    "interrupted_message",
    "last_event_id",
    "open_view",
]

#: how a run ended -> exit code of watch / start --wait / demo
EXIT_CODES = {state.value: code for state, code in RUN_EXIT_CODES.items()}
_ACTIVE = {state.value for state in ACTIVE_RUN_STATES}
#: a feature whose run tmops never started has nothing to follow
_NOT_STARTED_EXIT = 1
#: Ctrl-C stopped the following (128 + SIGINT, as shells report it)
INTERRUPTED_EXIT = 130


def format_event(event: dict[str, Any]) -> str:
    """One line for one event of the trail; every value made safe to print (an agent's text
    may hold escape sequences a terminal would obey)."""
    data = dict(event["data"])
    data.pop("run", None)
    kind = event["event_type"].removeprefix("orchestration.")
    clock = terminal_safe(event["timestamp"][11:19])
    if kind.startswith("agent."):
        return f"{clock} {agent_action(event)}"
    if kind == "phase.transition":
        target = data.get("to") or "end"
        return terminal_safe(
            f"{clock} {data.get('from')} -> {target} ({data.get('duration_s')} s)", None
        )
    details = " ".join(f"{key}={value}" for key, value in data.items() if value is not None)
    return terminal_safe(f"{clock} {kind} {details}", None)


def agent_action(event: dict[str, Any]) -> str:
    """What an ``agent.*`` event says an agent did: ``tester: Write tests/test_slug.py``,
    ``tester: Bash python -m pytest -q``, ``tester: <first line of its text>``."""
    data = event["data"]
    role = data.get("role") or data.get("phase") or "agent"
    kind = event["event_type"]
    if kind == "agent.tool":
        action = f"{data.get('tool')} {data.get('target') or ''}".rstrip()
    elif kind == "agent.cost":
        action = f"cost so far ${float(data.get('cost_usd') or 0):.4f}"
    else:
        action = str(data.get("text", ""))
    skipped = data.get("skipped")
    more = f" (+{skipped} more)" if skipped else ""
    return terminal_safe(f"{role}: {action}{more}", None)


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
    live: bool | None = None,
) -> int:
    """Show the run's events (those after ``after_id``) as they happen until it is no longer
    queued or running, nor paused by a usage limit it resumes from by itself: a live view
    (phases, times, cost, the agent's last actions) when ``live`` (default: stdout is a
    terminal), else one line per event through ``echo``. Ctrl-C stops the following only, at
    once (exit 130): the run is the background engine's, which goes on with it."""
    if live is None:
        live = sys.stdout.isatty()
    last = after_id
    waiting_told: str | None = None
    try:
        with open_view(feature, live=live, echo=echo) as view:
            while True:
                for event in service.events_since(feature, after_id=last, workspace=workspace):
                    last = event["id"]
                    view.event(event)
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
                        view.event(event)
                    view.status(status)
                    break
                view.status(status)
                time.sleep(poll_s)
        echo(f"{feature}: {status['status']}; next: {status['next_action']}")
        return EXIT_CODES.get(status["status"], _NOT_STARTED_EXIT)
    except KeyboardInterrupt:
        echo(interrupted_message(feature, workspace))
        return INTERRUPTED_EXIT


class RunView(Protocol):
    """Where a followed run is shown: told every event and every status read."""

    def event(self, event: dict[str, Any]) -> None: ...

    def status(self, status: dict[str, Any]) -> None: ...


class _Lines:
    """The plain view (stdout is not a terminal): one line per event."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self._echo = echo

    def event(self, event: dict[str, Any]) -> None:
        self._echo(format_event(event))

    def status(self, status: dict[str, Any]) -> None:
        return None


@contextmanager
def open_view(feature: str, *, live: bool, echo: Callable[[str], None]) -> Iterator[RunView]:
    """The live view on a terminal (rich, imported only then), else the plain lines."""
    if not live:
        yield _Lines(echo)
        return
    from tmops_core.surfaces.live import live_run_view

    with live_run_view(feature) as view:
        yield view


@contextmanager
def ctrl_c_stops_waiting(feature: str, workspace: Path | None, *, waiting: bool) -> Iterator[None]:
    """Around a verb that queues a run to follow (it may wait for the engine to come up): Ctrl-C
    there stops the waiting only, with the message and exit 130, as it does while following."""
    try:
        yield
    except KeyboardInterrupt:
        if not waiting:
            raise
        click.echo(interrupted_message(feature, workspace))
        sys.exit(INTERRUPTED_EXIT)


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
