"""The CLI's live reading: ``tmops logs`` (an agent's log, followed with ``-f``) and the table
of ``tmops list`` (refreshed by ``list --watch``).

An agent's log is its raw output: every line is made safe to print (escape sequences and
control characters out) before it reaches the terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tmops_core.lifecycle import ACTIVE_RUN_STATES
from tmops_core.orchestration.progress import terminal_safe
from tmops_core.surfaces.cli_state import AppState
from tmops_core.surfaces.follow import INTERRUPTED_EXIT
from tmops_core.surfaces.live import seconds
from tmops_hookspecs import FeatureError

__all__ = ["echo_table", "list_table", "logs_command", "watch_list"]

_ACTIVE = {state.value for state in ACTIVE_RUN_STATES}
#: how often ``logs -f`` looks for more
_FOLLOW_POLL_S = 0.2


# -- tmops logs --------------------------------------------------------------------------------


@click.command("logs")
@click.argument("feature")
@click.option("--role", help="Whose log (default: the current phase's role, else the last one).")
@click.option("--run", "run", help="Which run (default: the feature's current run).")
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing what the agent adds until the run ends."
)
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def logs_command(
    state: AppState,
    feature: str,
    role: str | None,
    run: str | None,
    follow: bool,
    workspace: Path | None,
) -> None:
    """Print the log of FEATURE's agent (its whole output, secrets redacted)."""
    service = state.service
    log = service.agent_log(feature, role=role, run=run, workspace=workspace)
    pending = b""
    offset = 0
    try:
        while True:
            chunk = log.read(offset)
            if chunk is None and not follow:
                raise FeatureError(
                    f"the {log.role} of {feature} (run {log.run}) has written no log yet",
                    hint=f"`tmops logs {feature} --role {log.role} -f` waits for it",
                )
            if chunk:
                offset += len(chunk)
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    click.echo(_printable(line))
                continue
            if not follow:
                break
            if not _run_active(service, feature, workspace):
                follow = False  # once more to the end: it may have written since
                continue
            time.sleep(_FOLLOW_POLL_S)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED_EXIT)
    if pending:
        click.echo(_printable(pending))


def _printable(line: bytes) -> str:
    return terminal_safe(line.decode("utf-8", errors="replace"), None)


def _run_active(service: Any, feature: str, workspace: Path | None) -> bool:
    status = service.status(
        feature, workspace=workspace, include_sessions=False, include_checkpoints=False,
        take_over=False,
    )  # fmt: skip
    return status["status"] in _ACTIVE


# -- tmops list --------------------------------------------------------------------------------

_HEADER = ("FEATURE", "BRANCH", "RUN", "STATUS", "PHASE", "ELAPSED", "COST", "UPDATED")


def list_table(rows: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The rows of ``tmops list``, header first: a queued run's status says its place in the
    queue (``queued #2``)."""
    table: list[tuple[str, ...]] = [_HEADER]
    for row in rows:
        status = status_text(row)
        cost = "-" if row.get("elapsed_s") is None else f"${row.get('cost_usd') or 0.0:.4f}"
        table.append(
            (
                row["feature"], row["branch"], row["run"] or "-", status,
                row.get("current_phase") or "-", seconds(row.get("elapsed_s")),
                cost, row["updated"] or "-",
            )
        )  # fmt: skip
    return table


def status_text(status: dict[str, Any]) -> str:
    """The status, with its place in the queue for a queued run (``queued #2``), and when a
    usage limit lifts for a run it stopped."""
    place = status.get("queue_position")
    text = f"{status['status']} #{place}" if place else str(status["status"])
    if status.get("held_until"):
        return f"{text} (held: usage limit until {status['held_until']})"
    if status.get("resume_at"):
        return f"{text} (usage limit, resumes at {status['resume_at']})"
    return text


def echo_table(rows: Sequence[tuple[str, ...]], echo: Callable[[str], None] = click.echo) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        echo("  ".join([*cells, row[-1]]))


def watch_list(
    fetch: Callable[[], list[dict[str, Any]]], *, interval: float, live: bool | None = None
) -> None:
    """Show the listing again every ``interval`` seconds until Ctrl-C: in place with rich on a
    terminal, else reprinted under the time of each reading."""
    if live is None:
        live = sys.stdout.isatty()
    try:
        if live:
            _watch_live(fetch, interval)
            return
        while True:
            click.echo(f"-- {datetime.now(UTC).strftime('%H:%M:%S')} --")
            echo_table(list_table(fetch()))
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _watch_live(fetch: Callable[[], list[dict[str, Any]]], interval: float) -> None:
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    def draw() -> Table:
        header, *rows = list_table(fetch())
        table = Table(
            box=None, header_style="bold", caption=datetime.now(UTC).strftime("%H:%M:%S UTC")
        )
        for name in header:
            table.add_column(name)
        for row in rows:
            table.add_row(*(Text(terminal_safe(cell, None)) for cell in row))
        return table

    with Live(draw(), auto_refresh=False) as view:
        while True:
            time.sleep(interval)
            view.update(draw(), refresh=True)
