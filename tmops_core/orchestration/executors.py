"""Which executor runs a run's attempts: the config's ``executor.name``, ``local`` (the
engine's own process tree) unless an executor plugin is named."""

from __future__ import annotations

from typing import Any

from tmops_core.config import Config
from tmops_core.orchestration.executor import LocalExecutor
from tmops_core.orchestration.remote import RemoteAttempts
from tmops_core.plugins import Plugins
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import (
    AttemptHooks,
    AttemptOutcome,
    AttemptSpec,
    ConfigError,
    Executor,
    ExecutorSpec,
    Provider,
)

__all__ = ["LOCAL", "executor_settings", "executor_spec", "make_executor"]

LOCAL = "local"


def executor_settings(config: Config) -> dict[str, Any]:
    """The executor's own keys of the ``executor`` section (its plugin checks them)."""
    return dict(config.executor.options)


def executor_spec(config: Config, plugins: Plugins) -> ExecutorSpec | None:
    """The registered executor the config names; None for the built-in ``local``."""
    name = config.executor.name
    if name == LOCAL:
        if config.executor.options:
            keys = ", ".join(sorted(config.executor.options))
            raise _section_error(
                f"the local executor has no settings of its own (got {keys}); name the "
                f"executor plugin they are for @ $.executor.name"
            )
        return None
    registered = plugins.executors().get(name)
    if registered is None:
        known = ", ".join(sorted([LOCAL, *plugins.executors()]))
        raise _section_error(
            f"no installed executor is named {name!r} (installed: {known}); install its "
            f"plugin (temporal: pip install 'tmops[temporal]') @ $.executor.name"
        )
    return registered.spec


def _section_error(problem: str) -> ConfigError:
    return ConfigError("the executor section has 1 error:", [problem])


def make_executor(config: Config, plugins: Plugins, layout: Layout) -> Executor:
    """The executor of the config, ready to run attempts of this project; one the config
    gets wrong fails each attempt with the config's error (``tmops config check`` says it
    before)."""
    try:
        spec = executor_spec(config, plugins)
        if spec is None:
            return LocalExecutor()
        return spec.factory(executor_settings(config), RemoteAttempts(config, plugins, layout))
    except ConfigError as exc:
        return _Refusing(exc)


class _Refusing:
    """An executor the config names wrongly: every attempt fails with why."""

    def __init__(self, error: ConfigError) -> None:
        self.error = error

    def execute(self, spec: AttemptSpec, provider: Provider, hooks: AttemptHooks) -> AttemptOutcome:
        raise self.error
