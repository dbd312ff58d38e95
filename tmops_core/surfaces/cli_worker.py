"""``tmops worker``: serve a distributed executor's attempts from this machine."""

from __future__ import annotations

from pathlib import Path

import click

from tmops_core.surfaces.cli_state import AppState

__all__ = ["worker_command"]


@click.command("worker")
@click.option(
    "--executor", "executor", required=True,
    help="The executor whose attempts to serve (the config's executor.name, e.g. temporal).",
)  # fmt: skip
@click.option(
    "--workspace", type=click.Path(file_okay=False, path_type=Path),
    help="This machine's clone of the project (default: the current folder).",
)  # fmt: skip
@click.option(
    "--concurrency", type=click.IntRange(min=1), metavar="N",
    help="Attempts (each one agent process) this machine runs side by side, over the config's "
    "executor.max_concurrent_attempts.",
)  # fmt: skip
@click.pass_obj
def worker_command(
    state: AppState, executor: str, workspace: Path | None, concurrency: int | None
) -> None:
    """Run the agents of a distributed executor's attempts here until SIGTERM or SIGINT."""
    from tmops_core.service.worker import serve_worker

    serve_worker(state.service, executor, workspace, concurrency=concurrency)
