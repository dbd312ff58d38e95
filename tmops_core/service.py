"""The operations of tmops, used by both the CLI and the MCP server.

A :class:`Service` holds the loaded config and plugins and offers every operation the surfaces
expose; the CLI and the MCP server only translate arguments and results.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tmops_hookspecs import ConfigError, FeatureContext

from .config import LoadedConfig, load_config, redacted, to_data
from .events import EventBus, build_event_bus, configure_logging, select_sinks
from .features import InitRequest, InitResult, init_feature
from .plugins import PluginFailure, PluginInfo, Plugins, create_plugin_manager
from .status import feature_status, find_project_root, list_features
from .store import STORE_NAME, Store
from .workspace import Layout

__all__ = ["Service"]


class Service:
    """The loaded config and plugins of one tmops process, and the operations over them."""

    def __init__(self, loaded: LoadedConfig, plugins: Plugins) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.plugins = plugins
        self._bus: EventBus | None = None
        self._stores: dict[Path, Store] = {}

    @classmethod
    def load(
        cls,
        config_path: str | os.PathLike[str] | None = None,
        *,
        cwd: Path | None = None,
        debug: bool = False,
    ) -> Service:
        """Read the config (every error at once) and load the plugins it does not disable."""
        loaded = load_config(config_path, cwd=cwd)
        configure_logging(loaded.config.telemetry.level, debug=debug)
        plugins = create_plugin_manager(disabled=loaded.config.plugins.disabled)
        return cls(loaded, plugins)

    # -- telemetry ---------------------------------------------------------------------------

    @property
    def events(self) -> EventBus:
        """The event bus over the configured sinks, created on first use."""
        if self._bus is None:
            self._bus = build_event_bus(self.config, self.plugins)
        return self._bus

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    # -- features ----------------------------------------------------------------------------

    def _store(self, layout: Layout, *, create: bool) -> Store | None:
        path = layout.tmops_dir / STORE_NAME
        store = self._stores.get(path)
        if store is None:
            store = Store(path) if create else Store.open_existing(path)
            if store is not None:
                self._stores[path] = store
        return store

    def _create_store(self, layout: Layout) -> Store:
        store = self._store(layout, create=True)
        assert store is not None  # noqa: S101 - create=True always returns a store
        return store

    def init(self, request: InitRequest) -> InitResult:
        """Create a feature (or confirm it exists); emit ``orchestration.feature.initialized``."""
        result = init_feature(request, self.config, store_for=self._create_store)
        self.events.emit(
            "orchestration.feature.initialized",
            {
                "run": result.run,
                "branch": result.branch,
                "created": result.created,
                "execution_time_ms": result.execution_time_ms,
            },
            feature=result.feature,
        )
        if result.created:
            self.plugins.feature_initialized(self._context(result))
        return result

    def _context(self, result: InitResult) -> FeatureContext:
        return FeatureContext(
            feature=result.feature,
            run=result.run,
            workspace=self.config.server.workspace_id,
            project_root=result.workspace,
            worktree=result.worktree,
            branch=result.branch,
            run_dir=result.run_dir,
            checkpoint_dir=result.checkpoint_dir,
        )

    def _layout(self, workspace: Path | None) -> Layout:
        return Layout(find_project_root(workspace or Path.cwd()))

    def status(
        self,
        feature: str,
        *,
        workspace: Path | None = None,
        include_sessions: bool = True,
        include_checkpoints: bool = True,
    ) -> dict[str, Any]:
        """The state of one feature, from the store and the files: no git, no subprocess."""
        layout = self._layout(workspace)
        return feature_status(
            layout,
            self._store(layout, create=False),
            feature,
            workflow=self.config.features.default_phases,
            phases={name: r.spec for name, r in self.plugins.phases().items()},
            include_sessions=include_sessions,
            include_checkpoints=include_checkpoints,
        )

    def list_features(self, *, workspace: Path | None = None) -> list[dict[str, Any]]:
        """Every feature of the project with its branch, run, status and last update."""
        layout = self._layout(workspace)
        return list_features(
            layout,
            self._store(layout, create=False),
            workflow=self.config.features.default_phases,
            phases={name: r.spec for name, r in self.plugins.phases().items()},
        )

    # -- plugins -----------------------------------------------------------------------------

    def plugin_settings(self, plugin: str) -> Mapping[str, Any]:
        """The config section of one plugin (``plugins.settings.<name>``), empty if none."""
        return self.config.plugins.settings.get(plugin, {})

    def plugin_report(self) -> tuple[list[PluginInfo], list[PluginFailure]]:
        return self.plugins.info(), list(self.plugins.failures)

    # -- config ------------------------------------------------------------------------------

    def check_config(self) -> list[str]:
        """Checks that need the plugins; raise :class:`ConfigError` with every problem.

        :return: warnings that do not make the config invalid.
        """
        _, problems = select_sinks(self.config, self.plugins)
        loaded = set(self.plugins.names())
        disabled = set(self.config.plugins.disabled)
        for name in self.config.plugins.settings:
            if name not in loaded and name not in disabled:
                installed = ", ".join(sorted(loaded)) or "none"
                problems.append(
                    f"settings for {name!r}, which is not an installed plugin "
                    f"(installed: {installed}) @ $.plugins.settings.{name}"
                )
        if problems:
            source = self.loaded.source or "built-in defaults"
            raise ConfigError(f"config {source} has {len(problems)} error(s):", problems)
        return [f"plugin {f.name} was skipped: {f.reason}" for f in self.plugins.failures]

    def effective_config(self) -> dict[str, Any]:
        """The config in force, as data, with secrets redacted."""
        data: dict[str, Any] = redacted(to_data(self.config))
        return data
