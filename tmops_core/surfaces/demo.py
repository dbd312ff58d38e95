"""``tmops demo``: the whole workflow on a scratch project with a tiny real task.

By default the four roles are played by the ``scripted`` provider shipped in tmops-plugins: a
local agent with no model behind it, so the demo needs no key and no network. ``--provider
NAME`` runs any other installed provider instead (a real agent CLI, with real model calls);
the core knows none of them by name.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tmops_core.config import Config, LoadedConfig, parse_config
from tmops_core.events import configure_logging
from tmops_core.git import Git
from tmops_core.plugins import Plugins, create_plugin_manager
from tmops_core.service.demo_project import DEMO_FEATURE, DEMO_TASK_SPEC, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.service.preflight import provider_program, resolve_program
from tmops_core.surfaces.follow import INTERRUPTED_EXIT, follow_run, interrupted_message
from tmops_core.workspace.features import InitRequest
from tmops_core.workspace.layout import Layout, atomic_write, ensure_private_dir
from tmops_hookspecs import WorkspaceError

__all__ = ["DEMO_PROVIDER", "run_demo", "scripted_agent_config"]

#: The provider the demo runs unless told another: the scripted local agent, no model, no key.
DEMO_PROVIDER = "scripted"
_TEST_COMMAND = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def scripted_agent_config(**features: object) -> dict[str, object]:
    """Config data that runs every role with the scripted local agent (demo and tests)."""
    return {
        "providers": {DEMO_PROVIDER: {"timeout_s": 300, "idle_timeout_s": 120}},
        "features": {
            "default_provider": DEMO_PROVIDER,
            "test_command": _TEST_COMMAND,
            "checkpoint_timeout": 30,
            **features,
        },
    }


def _demo_config(provider: str) -> dict[str, object]:
    if provider == DEMO_PROVIDER:
        return scripted_agent_config()
    # a real agent: its program must be installed, which the start's preflight checks
    return {"features": {"default_provider": provider, "test_command": _TEST_COMMAND}}


def _check_installed(config: Config, plugins: Plugins, provider: str, where: Path) -> None:
    """Refuse a provider whose program is not installed before making anything."""
    program, path = provider_program(
        config, plugins, Layout(where), provider, feature=DEMO_FEATURE, run="001", worktree=where
    )
    if resolve_program(program, path) is None:
        raise WorkspaceError(
            f"provider {provider!r} runs {program!r}, which is not installed (not on PATH)",
            hint=f"install it (and log in), or run `tmops demo` without --provider to use the "
            f"{DEMO_PROVIDER} agent",
        )


def run_demo(*, provider: str, directory: Path | None, echo: Callable[[str], None] = print) -> int:
    """Create the scratch project, run the workflow with a live view, show the commits."""
    configure_logging("warning")
    plugins = create_plugin_manager()
    registered = plugins.providers().get(provider)
    if registered is None:
        raise WorkspaceError(
            f"no provider named {provider!r}",
            hint=f"installed: {', '.join(sorted(plugins.providers())) or 'none'}; run `tmops "
            f"demo` without --provider to use the {DEMO_PROVIDER} agent",
        )
    data = _demo_config(provider)
    config = parse_config(data, source="the demo's built-in config")
    _check_installed(config, plugins, provider, directory or Path.cwd())
    root = directory or Path(tempfile.mkdtemp(prefix="tmops-demo-"))
    if directory is not None and directory.exists() and any(directory.iterdir()):
        raise WorkspaceError(f"{directory} is not empty", hint="give --dir a new or empty folder")
    label = registered.spec.description or "its agent"
    echo(f"tmops demo: feature '{DEMO_FEATURE}' in {root}, played by {provider} ({label})")
    create_demo_project(root)
    # The run is driven by a background engine, as for `tmops start`, so that it goes on after
    # a Ctrl-C; the engine reads the demo's config from the project's own config file, which
    # `tmops watch` and `tmops cancel` run in the project find too.
    layout = Layout(root)
    ensure_private_dir(layout.tmops_dir)
    config_file = layout.tmops_dir / "config.yaml"
    atomic_write(config_file, yaml.safe_dump(data, sort_keys=False))
    service = Service(LoadedConfig(config, config_file), plugins)
    try:
        result = service.init(InitRequest(feature=DEMO_FEATURE, workspace=root))
        atomic_write(result.task_spec, DEMO_TASK_SPEC)
        echo(f"initialised: branch {result.branch}, worktree {result.worktree}")
        started = time.monotonic()
        try:  # it may wait for the engine to come up: Ctrl-C there stops the waiting only
            service.start(DEMO_FEATURE, workspace=root)
        except KeyboardInterrupt:
            echo(interrupted_message(DEMO_FEATURE, root))
            return INTERRUPTED_EXIT
        code = follow_run(service, DEMO_FEATURE, workspace=root, echo=echo, poll_s=0.05)
        if code == INTERRUPTED_EXIT:
            return code
        echo(f"\nfinished in {time.monotonic() - started:.1f} s. Commits on {result.branch}:")
        for sha, subject in Git(root).log("main", until=result.branch):
            echo(f"  {sha[:10]} {subject}")
        echo(f"summary: {result.checkpoint_dir / 'SUMMARY.md'}")
        echo(f"the project stays in {root}")
        return code
    finally:
        service.close()
