"""``tmops events``: the audit trail of the project, of one feature or all, optionally followed.

Each line names when, which feature and run, what happened and who did it (the actor: see
:mod:`tmops_core.service.actor`); ``--json`` prints one JSON object per line for scripts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from tmops_core.service.trail import parse_since
from tmops_core.surfaces.cli_state import AppState
from tmops_core.surfaces.follow import INTERRUPTED_EXIT

__all__ = ["events_command", "format_trail_event"]

_POLL_S = 0.5


def format_trail_event(event: dict[str, Any]) -> str:
    """One line: time, feature/run, event type, actor, then the rest of the data."""
    data = {k: v for k, v in event["data"].items() if k not in {"run", "actor"}}
    where = "/".join(part for part in (event["feature"], event["run"]) if part) or "-"
    details = " ".join(
        f"{key}={json.dumps(value) if isinstance(value, dict | list) else value}"
        for key, value in data.items()
        if value is not None
    )
    kind = event["event_type"].removeprefix("orchestration.")
    actor = event["actor"] or "tmops"  # the engine's own events have no person behind them
    return f"{event['timestamp']} {where} {kind} by {actor} {details}".rstrip()


@click.command("events")
@click.argument("feature", required=False)
@click.option("--since", help="Only events from this time on: an ISO time or an age (10m, 2h, 3d).")
@click.option("--follow", is_flag=True, help="Keep printing new events until Ctrl-C (exit 130).")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def events_command(
    state: AppState,
    feature: str | None,
    since: str | None,
    follow: bool,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """Show the audit trail (of FEATURE, else of every feature): who did what, when."""
    since = parse_since(since) if since is not None else None  # an age counts from now, once
    service = state.service
    last = 0
    try:
        while True:
            events = service.audit_trail(feature, since=since, after_id=last, workspace=workspace)
            for event in events:
                last = event["id"]
                click.echo(json.dumps(event) if as_json else format_trail_event(event))
            if not follow:
                return
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        click.echo("stopped following the audit trail", err=True)
        sys.exit(INTERRUPTED_EXIT)
