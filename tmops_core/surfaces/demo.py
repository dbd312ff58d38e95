"""``tmops demo``: the whole workflow on a scratch project with a tiny real task.

By default the four roles are played by the scripted local agent shipped in tmops-plugins
(``python -m tmops_plugins.scripted_agent``, run through the ``command`` provider): it speaks
the same stream-json as ``claude -p`` but has no model behind it, so the demo needs no key and
no network. ``--provider claude-code`` runs the real Claude Code CLI instead.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tmops_core.config import LoadedConfig, parse_config
from tmops_core.events import configure_logging
from tmops_core.git import Git
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.demo_project import DEMO_FEATURE, DEMO_TASK_SPEC, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.surfaces.follow import INTERRUPTED_EXIT, follow_run, interrupted_message
from tmops_core.workspace.features import InitRequest
from tmops_core.workspace.layout import Layout, atomic_write, ensure_private_dir
from tmops_hookspecs import WorkspaceError

__all__ = ["run_demo", "scripted_agent_config"]

SCRIPTED_AGENT = (sys.executable, "-m", "tmops_plugins.scripted_agent")


def scripted_agent_config(**features: object) -> dict[str, object]:
    """Config data that runs every role with the scripted local agent (demo and tests)."""
    return {
        "providers": {
            "command": {
                "command": SCRIPTED_AGENT[0],
                "args": [
                    *SCRIPTED_AGENT[1:],
                    "-p", "{prompt}",
                    "--output-format", "stream-json",
                    "--verbose",
                    "--append-system-prompt", "{role_instructions}",
                    "--add-dir", "{checkpoint_dir}",
                ],
                "timeout_s": 300,
                "idle_timeout_s": 120,
            }
        },
        "features": {
            "default_provider": "command",
            "test_command": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            "checkpoint_timeout": 30,
            **features,
        },
    }  # fmt: skip


def _demo_config(provider: str) -> dict[str, object]:
    if provider == "scripted":
        return scripted_agent_config()
    if shutil.which("claude") is None:
        raise WorkspaceError(
            "Claude Code is not installed (no `claude` on PATH)",
            hint="install it (npm install -g @anthropic-ai/claude-code) and log in, or run "
            "`tmops demo` without --provider to use the scripted agent",
        )
    return {
        "features": {
            "default_provider": "claude-code",
            "test_command": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        }
    }


def run_demo(*, provider: str, directory: Path | None, echo: Callable[[str], None] = print) -> int:
    """Create the scratch project, run the workflow with a live view, show the commits."""
    configure_logging("warning")
    data = _demo_config(provider)
    config = parse_config(data, source="the demo's built-in config")
    root = directory or Path(tempfile.mkdtemp(prefix="tmops-demo-"))
    if directory is not None and directory.exists() and any(directory.iterdir()):
        raise WorkspaceError(f"{directory} is not empty", hint="give --dir a new or empty folder")
    label = (
        "the scripted local agent (no model, no API key: a script plays each role)"
        if provider == "scripted"
        else "Claude Code (real model calls)"
    )
    echo(f"tmops demo: feature '{DEMO_FEATURE}' in {root}, played by {label}")
    create_demo_project(root)
    # The run is driven by a background engine, as for `tmops start`, so that it goes on after
    # a Ctrl-C; the engine reads the demo's config from the project's own config file, which
    # `tmops watch` and `tmops cancel` run in the project find too.
    layout = Layout(root)
    ensure_private_dir(layout.tmops_dir)
    config_file = layout.tmops_dir / "config.yaml"
    atomic_write(config_file, yaml.safe_dump(data, sort_keys=False))
    service = Service(LoadedConfig(config, config_file), create_plugin_manager())
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
