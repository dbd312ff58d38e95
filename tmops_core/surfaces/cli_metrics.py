"""``tmops metrics``: the project's Prometheus metrics, printed once in the text format (what
``GET /metrics`` of ``tmops mcp --http`` answers), for a look by hand, a cron job writing a
node-exporter textfile, or a test."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tmops_core.surfaces.cli_state import AppState

__all__ = ["metrics_command"]


@click.command("metrics")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def metrics_command(state: AppState, workspace: Path | None) -> None:
    """Print the project's metrics in the Prometheus text format (read from its store)."""
    sys.stdout.buffer.write(state.service.metrics_text(workspace))
    sys.stdout.flush()
