"""The commands a person takes control with: do a phase by hand, stop a run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tmops_core.surfaces.cli_state import AppState

__all__ = ["CONTROL_COMMANDS"]


@click.command("prompt")
@click.argument("feature")
@click.argument("phase")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def prompt_command(
    state: AppState, feature: str, phase: str, workspace: Path | None, as_json: bool
) -> None:
    """Print what to paste into a manual agent session to do PHASE of FEATURE by hand."""
    answer = state.service.prompt(feature, phase, workspace=workspace)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"# {answer['role']} of {feature} (run {answer['run']}): role instructions\n")
    click.echo(answer["instructions"].rstrip() + "\n")
    click.echo("# the prompt\n")
    click.echo(answer["prompt"].rstrip() + "\n")
    click.echo(f"# work in {answer['worktree']}; when done, write {answer['checkpoint']}")
    click.echo(f"# then `tmops start {feature} --resume` checks it and goes on")


@click.command("cancel")
@click.argument("feature")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def cancel_command(state: AppState, feature: str, workspace: Path | None, as_json: bool) -> None:
    """Stop FEATURE's run for good: its agents are stopped, the run ends cancelled; the
    branch, the worktree and the files stay."""
    answer = state.service.cancel(feature, workspace=workspace)
    click.echo(json.dumps(answer, indent=2) if as_json else answer["message"])


CONTROL_COMMANDS = (prompt_command, cancel_command)
