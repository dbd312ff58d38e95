"""The commands that look after a project rather than a run: ``backup``, ``restore`` and
``doctor``. Each imports its service module only when it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tmops_core.surfaces.cli_state import AppState

if TYPE_CHECKING:
    from tmops_core.workspace.layout import Layout

__all__ = ["OPS_COMMANDS"]

_WORKSPACE = click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    help="The project (default: the one the current folder is in).",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _layout(workspace: Path | None) -> Layout:
    from tmops_core.service.status import find_project_root
    from tmops_core.workspace.layout import Layout

    return Layout(find_project_root(workspace or Path.cwd()))


@click.command("backup")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@_WORKSPACE
@_JSON
@click.pass_obj
def backup_command(
    state: AppState, dest: Path | None, workspace: Path | None, as_json: bool
) -> None:
    """Write one archive (tar.gz, 0600) of the project's store, .tmops files, branches and
    uncommitted work, consistent while runs go on. DEST: a folder, or the archive's path
    (default: .tmops/archives/)."""
    from tmops_core.service.backup import create_backup

    config = state.service.config
    answer = create_backup(
        _layout(workspace), dest, store_url=config.store.url,
        workspace=config.server.workspace_id,
    )  # fmt: skip
    click.echo(json.dumps(answer, indent=2) if as_json else answer["message"])


@click.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace existing state, keeping it aside.")
@_WORKSPACE
@_JSON
@click.pass_obj
def restore_command(
    state: AppState, archive: Path, force: bool, workspace: Path | None, as_json: bool
) -> None:
    """Restore a backup ARCHIVE into the project (a fresh clone, typically): its store,
    files, branches, worktrees and uncommitted work; runs go on from where they were."""
    from tmops_core.service.restore import restore_backup

    root = state.service.config.features.worktree_root
    answer = restore_backup(
        _layout(workspace),
        archive,
        worktree_root=root,
        force=force,
        actor=state.service.actor,
        store_url=state.service.config.store.url,
        workspace=state.service.config.server.workspace_id,
    )
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(answer["message"])
    for feature, run in answer["features"].items():
        click.echo(f"  {feature}  {run['run']}  {run['status']}  {run['phase'] or ''}".rstrip())
    for path in answer["kept_aside"]:
        click.echo(f"  kept aside  {path}")
    for path in answer["worktrees_skipped"]:
        click.echo(f"  no worktree made at {path}: something else is there")
    for path in answer["worktrees_skipped"]:
        click.echo(f"  no worktree made at {path}: something else is there")


@click.command("doctor")
@_WORKSPACE
@_JSON
@click.pass_obj
def doctor_command(state: AppState, workspace: Path | None, as_json: bool) -> None:
    """Check git, the providers' programs, permissions, disk, the store and engines, and an
    executor plugin's server and workers, each with its fix; exit 1 when a check fails."""
    from tmops_core.service.doctor import run_doctor, summary

    answer = summary(run_doctor(_layout(workspace), state.service.config, state.service.plugins))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        for check in answer["checks"]:
            click.echo(f"{check['status']:<4}  {check['name']}: {check['found']}")
            if check["fix"] and check["status"] != "ok":
                click.echo(f"      fix: {check['fix']}")
    if not answer["ok"]:
        raise click.exceptions.Exit(1)


OPS_COMMANDS = (backup_command, restore_command, doctor_command)
