"""``tmops worker``: serve a distributed executor's attempts from this machine's clone of the
project, until SIGTERM or SIGINT. The executor plugin runs the worker (its queue, its
heartbeats); the core lends it the attempt's machinery (:mod:`tmops_core.orchestration.remote`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tmops_core.orchestration.executors import LOCAL, executor_settings, executor_spec
from tmops_core.orchestration.remote import RemoteAttempts
from tmops_hookspecs import WORKER_CONCURRENCY_KEY, ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from tmops_core.service.operations import Service

__all__ = ["serve_worker"]


def serve_worker(
    service: Service, executor: str, workspace: Path | None, *, concurrency: int | None = None
) -> None:
    """Run a worker of ``executor`` (the config's ``executor.name`` must name it) for the
    project at ``workspace`` (its own clone) until stopped; ``concurrency``, if given, is how
    many attempts this machine runs at once, over the config's setting."""
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
    settings = executor_settings(config)
    if concurrency is not None:
        settings[WORKER_CONCURRENCY_KEY] = concurrency  # this machine's, not the project's
    spec.serve(settings, RemoteAttempts(config, service.plugins, layout))
