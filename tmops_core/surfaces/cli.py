"""The ``tmops`` command line: a thin click adapter over :mod:`tmops_core.service.operations`.

User errors (:class:`~tmops_hookspecs.TmopsError`) print one clear message and no traceback
(``--debug`` shows it) and exit with the error's code: 2 for config errors, 1 otherwise.

Imports are lazy: this module imports click and little else, and each command imports what it
needs inside its body (a new command does the same), so a read command such as ``tmops status``
never pays for the engine, YAML, or the package metadata it does not use.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from tmops_core.orchestration.liveness import HEARTBEAT_S, LEASE_S
from tmops_core.surfaces.cli_audit import events_command
from tmops_core.surfaces.cli_control import CONTROL_COMMANDS
from tmops_core.surfaces.cli_live import (
    echo_table,
    list_table,
    logs_command,
    status_text,
    watch_list,
)
from tmops_core.surfaces.cli_metrics import metrics_command
from tmops_core.surfaces.cli_ops import OPS_COMMANDS
from tmops_core.surfaces.cli_state import AppState
from tmops_core.surfaces.cli_worker import worker_command
from tmops_core.surfaces.cli_worktrees import cleanup_command

__all__ = ["cli", "main"]


class TmopsGroup(click.Group):
    """Shows user errors without a traceback and adds plugin commands when they are asked for."""

    _plugin_commands_loaded = False

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from tmops_hookspecs import TmopsError  # loaded already if one was raised

            if not isinstance(exc, TmopsError):
                raise
            state = ctx.obj if isinstance(ctx.obj, AppState) else None
            if state is not None and state.debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and self._load_plugin_commands(ctx, strict=True):
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands(ctx, strict=False)
        return super().list_commands(ctx)

    def _load_plugin_commands(self, ctx: click.Context, *, strict: bool) -> bool:
        # Built-in commands never pay for plugin discovery; plugin ones load on first need.
        if self._plugin_commands_loaded:
            return False
        state = ctx.find_object(AppState) or AppState(config_path=None, debug=False)
        from tmops_hookspecs import TmopsError

        try:
            service = state.service
        except TmopsError:
            if strict:
                raise
            return False
        self._plugin_commands_loaded = True
        service.plugins.register_commands(self)
        return True


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    from tmops_core import __version__

    parts = []
    for dist in ("tmops-hookspecs", "tmops-plugins"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:  # pragma: no cover - both ship with tmops
            parts.append(f"{dist} missing")
    click.echo(f"tmops {__version__} ({', '.join(parts)})")
    ctx.exit(0)


@click.group(cls=TmopsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: $TMOPS_CONFIG, ./tmops.yaml, ./.tmops/config.yaml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the versions of tmops and its contract and exit.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool) -> None:
    """tmops runs AI coding agents through the TeamOps test-first workflow."""
    state = AppState(config_path=config_path, debug=debug)
    ctx.obj = state
    ctx.call_on_close(state.close)


# -- tmops plugins -----------------------------------------------------------------------------


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def plugins_command(state: AppState, as_json: bool) -> None:
    """List the loaded plugins and what each registers."""
    loaded, failures = state.service.plugin_report()
    if as_json:
        payload = {
            "plugins": [
                {
                    "name": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "module": info.module,
                    "registers": {kind: list(names) for kind, names in info.registers.items()},
                }
                for info in loaded
            ],
            "skipped": [{"name": f.name, "reason": f.reason} for f in failures],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    rows = [("NAME", "DISTRIBUTION", "VERSION", "REGISTERS")]
    for info in loaded:
        registers = "; ".join(
            f"{kind}: {', '.join(names)}" for kind, names in info.registers.items()
        )
        rows.append((info.name, info.distribution or "-", info.version or "-", registers or "-"))
    echo_table(rows)
    if not loaded:
        click.echo("(no plugins loaded)")
    if failures:
        click.echo("\nskipped:")
        for failure in failures:
            click.echo(f"  {failure.name}: {failure.reason}")


# -- tmops config ------------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Check or show the configuration."""


@config_group.command("check")
@click.pass_obj
def config_check(state: AppState) -> None:
    """Validate the config; exit 2 listing every error with its path."""
    service = state.service
    warnings = service.check_config()
    source = service.loaded.source
    if source is None:
        click.echo("config OK: no config file found, using the built-in defaults")
    else:
        click.echo(f"config OK: {source}")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@click.pass_obj
def config_show(state: AppState, as_json: bool) -> None:
    """Print the effective config, secrets redacted."""
    service = state.service
    data = service.effective_config()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    source = service.loaded.source or "built-in defaults"
    import yaml

    click.echo(f"# tmops config from {source}")
    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


# -- features ----------------------------------------------------------------------------------


@cli.command("init")
@click.argument("feature")
@click.option("--run", "run", help="Run name (default: 'initial'; with --retry the next 'retry').")
@click.option("--retry", is_flag=True, help="Start a new run of an existing feature.")
@click.option("--branch", help="Use this branch instead of feature/<feature>.")
@click.option(
    "--use-current-branch", is_flag=True, help="Work on the branch checked out now, in place."
)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    help="The project (default: the current directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def init_command(
    state: AppState,
    feature: str,
    run: str | None,
    retry: bool,
    branch: str | None,
    use_current_branch: bool,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """Create FEATURE: its branch, worktree, .tmops folders and TASK_SPEC.md."""
    from tmops_core.workspace.features import InitRequest

    result = state.service.init(
        InitRequest(
            feature=feature,
            run_type="retry" if retry else "initial",
            run=run,
            branch=branch,
            use_current_branch=use_current_branch,
            workspace=workspace,
        )
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(result.message)
    for change in result.changes:
        click.echo(f"  + {change}")
    click.echo("next:")
    for step in result.next_steps:
        click.echo(f"  - {step}")


@cli.command("list")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--watch", is_flag=True, help="Show the list again every --interval until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="With --watch: seconds between two readings.",
)
@click.pass_obj
def list_command(
    state: AppState, workspace: Path | None, as_json: bool, watch: bool, interval: float
) -> None:
    """List the features with their branch, run, status, phase, elapsed time, cost and last
    update (a queued run's status says its place in the queue), and what the project cost."""
    if watch:
        if as_json:
            raise click.UsageError("--watch and --json do not go together")
        watch_list(lambda: state.service.list_features(workspace=workspace), interval=interval)
        return
    rows = state.service.list_features(workspace=workspace)
    disk = state.service.worktree_disk(workspace=workspace)
    total = state.service.project_cost(workspace=workspace)
    if as_json:
        answer = {"features": rows, "total_cost_usd": total, "worktree_disk": disk}
        click.echo(json.dumps(answer, indent=2))
        return
    _warn_disk(disk)
    if not rows:
        click.echo("no features yet; create one with `tmops init <feature>`")
        return
    echo_table(list_table(rows))
    if total:  # once the project has spent something
        click.echo(f"total cost of the project: ${total:.4f}")


def _warn_disk(disk: dict[str, Any] | None) -> None:
    """The worktrees over features.worktree_disk_budget_gb: a warning on stderr."""
    if disk and disk["warning"]:
        click.echo(f"warning: {disk['warning']}", err=True)


def _echo_attempts(attempts: list[dict[str, Any]]) -> None:
    """Each attempt with what it cost (and its tokens, when the agent reported them)."""
    if not attempts:
        return
    click.echo("attempts:")
    for a in attempts:
        cost = "-" if a["cost_usd"] is None else f"${a['cost_usd']:.4f}"
        tokens = ""
        if a["input_tokens"] is not None or a["output_tokens"] is not None:
            tokens = f", tokens {a['input_tokens'] or 0} in / {a['output_tokens'] or 0} out"
        click.echo(f"  {a['phase']:<14} #{a['attempt']:<3} {a['state']:<12} {cost}{tokens}")


@cli.command("status")
@click.argument("feature")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def status_command(state: AppState, feature: str, workspace: Path | None, as_json: bool) -> None:
    """Show the phase, checkpoints and next action of FEATURE."""
    status = state.service.status(feature, workspace=workspace)
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    _warn_disk(status.get("worktree_disk"))
    progress = status["phase_progress"]
    click.echo(f"{status['feature']}: {status_text(status)} (run {status['run']}, "
               f"{status['branch']})")  # fmt: skip
    if status.get("queue_position"):
        click.echo(f"queue position: {status['queue_position']}")
    click.echo(f"phases: {progress['completed']}/{progress['total']} completed")
    sessions = status.get("sessions") or {}
    for phase in progress["phases"]:
        session = sessions.get(phase["role"]) or {}
        detail = ""
        if session.get("attempts"):
            detail = f"  attempts {session['attempts']}, session {session['session_id'] or '-'}"
        if phase.get("cost_usd"):
            detail += f", ${phase['cost_usd']:.4f}"
        if phase.get("provider"):
            detail += f"{',' if detail else ' '} {phase['provider']}"
        click.echo(f"  {phase['phase']:<14} {phase['status']:<12}{detail}".rstrip())
    _echo_attempts(status.get("attempts") or [])
    if status["run_id"]:
        click.echo(f"run id {status['run_id']}, provider {status['provider']}, "
                   f"cost so far ${status['cost_usd']:.4f}")  # fmt: skip
    if status["last_error"]:
        click.echo(f"last error: {status['last_error']}")
    if status["checkpoints"]:
        click.echo("checkpoints:")
        for checkpoint in status["checkpoints"]:
            click.echo(f"  {checkpoint['name']:<28} {checkpoint['timestamp']}")
    click.echo(f"next: {status['next_action']}")


@cli.command("start")
@click.argument("feature")
@click.option(
    "--provider",
    help="Agent provider of every phase (default: features.phase_providers, then "
    "features.default_provider).",
)
@click.option(
    "--phase-provider",
    "phase_providers",
    multiple=True,
    callback=lambda _ctx, _param, value: _phase_providers(value),
    metavar="PHASE=PROVIDER",
    help="The provider of one phase (repeatable); wins over --provider for that phase.",
)
@click.option("--resume", is_flag=True, help="Continue a failed, paused or cancelled run.")
@click.option(
    "--accept-branch",
    is_flag=True,
    help="With --resume: continue a run paused because its branch moved, from the new head.",
)
@click.option("--wait", is_flag=True, help="Follow the run to its end; the exit code says how.")
@click.option(
    "--force", is_flag=True, help="Start even though TASK_SPEC.md is still the untouched template."
)
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def start_command(
    state: AppState,
    feature: str,
    provider: str | None,
    phase_providers: dict[str, str],
    resume: bool,
    accept_branch: bool,
    wait: bool,
    force: bool,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """Queue FEATURE's run through the workflow; returns at once unless --wait."""
    from tmops_core.surfaces.follow import ctrl_c_stops_waiting, follow_run, last_event_id

    # --wait follows this run only: a resumed run keeps its name, and the events of its
    # earlier attempts are already in the log.
    since = last_event_id(state.service, feature, workspace=workspace) if wait else 0
    with ctrl_c_stops_waiting(feature, workspace, waiting=wait):
        answer = state.service.start(
            feature, provider=provider, resume=resume, accept_branch=accept_branch,
            workspace=workspace, force=force, phase_providers=phase_providers,
        )  # fmt: skip
    click.echo(json.dumps(answer, indent=2) if as_json else answer["message"])
    if wait:
        sys.exit(follow_run(state.service, feature, workspace=workspace, after_id=since))


def _phase_providers(values: tuple[str, ...]) -> dict[str, str]:
    """``--phase-provider PHASE=PROVIDER`` options as phase -> provider."""
    chosen: dict[str, str] = {}
    for value in values:
        phase, _, provider = value.partition("=")
        if not phase.strip() or not provider.strip():
            raise click.BadParameter(
                f"{value!r} is not PHASE=PROVIDER (e.g. implementer=NAME)",
                param_hint="--phase-provider",
            )
        chosen[phase.strip()] = provider.strip()
    return chosen


@cli.command("watch")
@click.argument("feature")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def watch_command(state: AppState, feature: str, workspace: Path | None) -> None:
    """Follow FEATURE's run live until it ends; the exit code says how it ended."""
    from tmops_core.surfaces.follow import follow_run

    sys.exit(follow_run(state.service, feature, workspace=workspace))


@cli.command("engine", hidden=True)
@click.option("--workspace", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--idle-exit", type=float, default=2.0, show_default=True)
@click.option(
    "--heartbeat",
    type=float,
    default=HEARTBEAT_S,
    show_default=True,
    help="Seconds between two renewals of the engine's lease.",
)
@click.option(
    "--lease",
    type=float,
    default=LEASE_S,
    show_default=True,
    help="Seconds a lease lasts unless renewed; then the engine counts as dead.",
)
@click.option("--lock-fd", type=int, hidden=True, help="The engine lock, handed over by start.")
@click.option("--ready-fd", type=int, hidden=True, help="A pipe told once this engine serves.")
@click.pass_obj
def engine_command(
    state: AppState,
    workspace: Path | None,
    idle_exit: float,
    heartbeat: float,
    lease: float,
    lock_fd: int | None,
    ready_fd: int | None,
) -> None:
    """Drive the project's queued runs until idle (started in the background by `start`).

    SIGTERM or SIGINT stops it in order: its runs go back to the queue, its agents are stopped
    with everything they started, and it exits 0.
    """
    if not 0 < heartbeat < lease:
        raise click.BadParameter(
            f"the heartbeat ({heartbeat} s) must be more than 0 and less than the lease "
            f"({lease} s)",
            param_hint="--heartbeat",
        )
    served = state.service.serve_engine(
        workspace=workspace, idle_exit_s=idle_exit, handle_signals=True, lock_fd=lock_fd,
        ready_fd=ready_fd, heartbeat_s=heartbeat, lease_s=lease,
    )  # fmt: skip
    if not served:
        click.echo("another engine serves this project", err=True)


@cli.command("demo")
@click.option(
    "--provider",
    default="scripted",
    show_default=True,
    help="The provider playing the roles: scripted, a local script (no model or key needed), "
    "or the name of any installed provider to run its real agent.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to create the scratch project (default: a new temporary folder).",
)
def demo_command(provider: str, directory: Path | None) -> None:
    """Run the whole workflow on a scratch project with a tiny real task."""
    from tmops_core.surfaces.demo import run_demo

    sys.exit(run_demo(provider=provider, directory=directory, echo=click.echo))


@cli.command("mcp")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The project tools act on by default (default: the current directory).",
)
@click.option(
    "--http",
    "over_http",
    is_flag=True,
    help="Serve over streamable HTTP at /mcp instead of stdio (bearer token required).",
)
@click.option("--host", help="With --http: the address to listen on (default 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="With --http: the port (default 8765; 0 picks a free one).",
)
@click.pass_obj
def mcp_command(
    state: AppState, workspace: Path | None, over_http: bool, host: str | None, port: int | None
) -> None:
    """Serve the tmops tools to an MCP client over stdio (stdout carries only protocol) or,
    with --http, over streamable HTTP."""
    if over_http:
        from tmops_core.surfaces.mcp_http import serve_http  # the SDK only when serving

        serve_http(state.service, workspace=workspace, host=host, port=port)
        return
    if host is not None or port is not None:
        raise click.UsageError("--host and --port go with --http")
    from tmops_core.surfaces.mcp_server import serve_stdio  # the SDK is imported only when serving

    serve_stdio(state.service, workspace=workspace)


for _command in (
    *CONTROL_COMMANDS,
    events_command,
    *OPS_COMMANDS,
    cleanup_command,
    logs_command,
    metrics_command,
    worker_command,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="tmops")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
