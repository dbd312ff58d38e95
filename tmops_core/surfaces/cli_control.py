"""The commands a person takes control with: do a phase by hand, pause, resume, retry, approve,
roll back, cancel. Each prints one line saying what happened (``--json``: the whole answer)
and exits 0 when it did what was asked; a refusal is an error saying what to do (exit 1)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tmops_core.surfaces.cli_state import AppState
from tmops_core.surfaces.follow import ctrl_c_stops_waiting, follow_run, last_event_id
from tmops_core.surfaces.manual import prompt_text

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
    click.echo(prompt_text(answer), nl=False)


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


_WORKSPACE = click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


_WAIT = click.option(
    "--wait", is_flag=True, help="Follow the run to its end; the exit code says how."
)


def _echo(answer: dict[str, Any], as_json: bool) -> None:
    click.echo(json.dumps(answer, indent=2) if as_json else answer["message"])


def _queue_and_follow(
    state: AppState, feature: str, workspace: Path | None, wait: bool, as_json: bool,
    verb: Callable[[], dict[str, Any]],
) -> None:  # fmt: skip
    """Run a verb that queues the run again; with ``wait``, follow this run to its end (its
    own events only) and exit with how it ended."""
    since = last_event_id(state.service, feature, workspace=workspace) if wait else 0
    with ctrl_c_stops_waiting(feature, workspace, waiting=wait):
        answer = verb()
    _echo(answer, as_json)
    if wait and answer.get("status") in {"queued", "running"}:
        sys.exit(follow_run(state.service, feature, workspace=workspace, after_id=since))


@click.command("pause")
@click.argument("feature")
@click.option("--now", is_flag=True, help="Stop the agent at once; its attempt is interrupted.")
@_WORKSPACE
@_JSON
@click.pass_obj
def pause_command(
    state: AppState, feature: str, now: bool, workspace: Path | None, as_json: bool
) -> None:
    """Pause FEATURE's run before its next phase (--now: at once); `tmops resume` goes on."""
    _echo(state.service.pause(feature, now=now, workspace=workspace), as_json)


@click.command("resume")
@click.argument("feature")
@click.option(
    "--accept-branch",
    is_flag=True,
    help="For a run paused because its branch moved: continue from the branch's new head.",
)
@click.option("--provider", help="Agent provider (default: the run's).")
@_WAIT
@_WORKSPACE
@_JSON
@click.pass_obj
def resume_command(
    state: AppState, feature: str, accept_branch: bool, provider: str | None, wait: bool,
    workspace: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """Queue FEATURE's paused, failed or cancelled run again where it stopped."""
    _queue_and_follow(
        state, feature, workspace, wait, as_json,
        lambda: state.service.resume(
            feature, accept_branch=accept_branch, provider=provider, workspace=workspace
        ),
    )  # fmt: skip


@click.command("retry")
@click.argument("feature")
@click.option("--phase", help="Run again from this phase (default: where the run stopped).")
@_WAIT
@_WORKSPACE
@_JSON
@click.pass_obj
def retry_command(
    state: AppState, feature: str, phase: str | None, wait: bool, workspace: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Run FEATURE's failed or needs_review run again from --phase (the branch stays)."""
    _queue_and_follow(
        state, feature, workspace, wait, as_json,
        lambda: state.service.retry(feature, phase=phase, workspace=workspace),
    )  # fmt: skip


@click.command("approve")
@click.argument("feature")
@click.option("--phase", help="Approve this gated phase ahead of time.")
@_WAIT
@_WORKSPACE
@_JSON
@click.pass_obj
def approve_command(
    state: AppState, feature: str, phase: str | None, wait: bool, workspace: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Let FEATURE's run go on past the approval gate it waits at (features.approve_before)."""
    _queue_and_follow(
        state, feature, workspace, wait, as_json,
        lambda: state.service.approve(feature, phase=phase, workspace=workspace),
    )  # fmt: skip


@click.command("rollback")
@click.argument("feature")
@click.option("--phase", required=True, help="Roll back to before this phase.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@_WORKSPACE
@_JSON
@click.pass_obj
def rollback_command(
    state: AppState, feature: str, phase: str, dry_run: bool, workspace: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Send PHASE and the phases after it back, by its preserve rules, after a backup ref."""
    answer = state.service.rollback(feature, phase=phase, dry_run=dry_run, workspace=workspace)
    if as_json:
        _echo(answer, as_json)
        return
    click.echo(answer["message"])
    for sha, subject in ((u["commit"], u["subject"]) for u in answer["undone"]):
        click.echo(f"  undo    {sha[:12]} {subject}")
    for path in answer["reverted"]:
        click.echo(f"  revert  {path}")
    for path in answer["kept"]:
        click.echo(f"  keep    {path}")
    for path in answer["set_aside"]:
        click.echo(f"  set aside {path}")


CONTROL_COMMANDS = (
    prompt_command,
    pause_command,
    resume_command,
    retry_command,
    approve_command,
    rollback_command,
    cancel_command,
)
