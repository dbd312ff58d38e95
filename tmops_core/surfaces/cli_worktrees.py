"""``tmops cleanup``: remove the worktrees of finished features, merged or pushed work only
unless ``--force`` (after a backup ref); ``--dry-run`` lists what would go and changes nothing.
Exit 0, or 1 when a worktree could not be removed (skipped ones are not failures).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tmops_core.surfaces.cli_state import AppState

__all__ = ["cleanup_command"]


@click.command("cleanup")
@click.option(
    "--dry-run", is_flag=True, help="List what would be removed and freed; change nothing."
)
@click.option(
    "--force",
    is_flag=True,
    help="Also remove unmerged, unpushed or uncommitted work of finished runs, after a backup ref.",
)
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def cleanup_command(
    state: AppState, dry_run: bool, force: bool, workspace: Path | None, as_json: bool
) -> None:
    """Remove the worktrees (and the caches in them) of finished features whose branch is
    merged or pushed; the branches stay. Reports the disk freed."""
    answer = state.service.cleanup(dry_run=dry_run, force=force, workspace=workspace)
    click.echo(json.dumps(answer, indent=2) if as_json else answer["message"])
    if any(item["action"] == "failed" for item in answer["worktrees"]):
        sys.exit(1)  # a worktree that could not go: its line says why
