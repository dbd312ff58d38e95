"""``tmops worker``: serve a distributed executor's attempts from this machine's clone of the
project, until SIGTERM or SIGINT. The executor plugin runs the worker (its queue, its
heartbeats); the core lends it the attempt's machinery (:mod:`tmops_core.orchestration.remote`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tmops_core.orchestration.executors import LOCAL, executor_settings, executor_spec
from tmops_core.orchestration.remote import RemoteAttempts
from tmops_hookspecs import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from tmops_core.service.operations import Service

__all__ = ["serve_worker"]


def serve_worker(service: Service, executor: str, workspace: Path | None) -> None:
    """Run a worker of ``executor`` (the config's ``executor.name`` must name it) for the
    project at ``workspace`` (its own clone) until stopped."""
    config = service.config
    if executor == LOCAL or executor != config.executor.name:
        raise ConfigError(
            f"tmops worker --executor {executor}: the config's executor is "
            f"{config.executor.name!r}",
            hint="a worker serves the executor the config names: set executor.name (and its "
            "settings) in this clone's config, the same as the engine's",
        )
    spec = executor_spec(config, service.plugins)
    if spec is None or spec.serve is None:
        raise ConfigError(f"the executor {executor!r} has no workers to run")
    layout = service._layout(workspace)
    spec.serve(executor_settings(config), RemoteAttempts(config, service.plugins, layout))
