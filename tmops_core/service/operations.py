"""The operations of tmops, used by both the CLI and the MCP server.

A :class:`Service` holds the loaded config and plugins and offers every operation the surfaces
expose; the CLI and the MCP server only translate arguments and results.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tmops_core.config import LoadedConfig, load_config, redacted, to_data
from tmops_core.events import EventBus, build_event_bus, configure_logging, select_sinks
from tmops_core.orchestration.daemon import Engine, spawn_engine
from tmops_core.orchestration.run import provider_settings
from tmops_core.plugins import PluginFailure, PluginInfo, Plugins, create_plugin_manager
from tmops_core.service.status import feature_status, find_project_root, list_features
from tmops_core.store.sqlite import STORE_NAME, RunRecord, Store
from tmops_core.workspace.features import InitRequest, InitResult, init_feature
from tmops_core.workspace.layout import Layout, iso, utc_now, validate_feature_name
from tmops_hookspecs import ConfigError, FeatureContext, FeatureError

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

    # -- orchestration -----------------------------------------------------------------------

    def start(
        self,
        feature: str,
        *,
        provider: str | None = None,
        resume: bool = False,
        workspace: Path | None = None,
        spawn: bool = True,
    ) -> dict[str, Any]:
        """Queue the feature's current run and make sure an engine serves it; returns at once."""
        validate_feature_name(feature)
        layout = self._layout(workspace)
        store = self._store(layout, create=False)
        record = store.feature(feature) if store else None
        if store is None or record is None:
            raise FeatureError(
                f"feature '{feature}' was not initialised by tmops in {layout.project_root}",
                hint=f"run `tmops init {feature}` first (it adopts folders made by hand)",
            )
        run = store.run(feature, record.current_run)
        if run is None:
            raise FeatureError(f"feature '{feature}' has no run '{record.current_run}'")
        installed = self.plugins.providers()
        name = provider or run.provider or self.config.features.default_provider
        if name not in installed:
            raise FeatureError(
                f"no provider named {name!r}",
                hint=f"installed providers: {', '.join(sorted(installed)) or 'none'}",
            )
        section = provider_settings(self.config, name)
        if not section.get("enabled", True):
            raise FeatureError(
                f"the provider {name!r} is disabled in the config (providers.{name}.enabled)",
                hint="enable it, or start with another --provider",
            )
        if run.active:
            # Already queued or running; make sure an engine serves it (it may have died).
            if spawn:
                spawn_engine(layout, config_path=self.loaded.source)
            return self._start_answer(run, run.provider or name, "already " + run.status)
        ended = f"run '{run.run}' of '{feature}' has {run.status}"
        if run.status == "completed":
            raise FeatureError(ended, hint=f"start a new run: tmops init {feature} --retry")
        if run.status in {"failed", "paused", "cancelled"} and not resume:
            raise FeatureError(
                f"{ended}: {run.last_error or 'no reason recorded'}",
                hint="continue it from where it stopped with --resume (MCP: resume: true)",
            )
        run_id = uuid.uuid4().hex[:12]
        store.queue_run(feature, run.run, run_id=run_id, provider=name, now=iso(utc_now()))
        self.events.emit(
            "orchestration.run.queued", {"run": run.run, "provider": name}, feature=feature,
            correlation_id=run_id,
        )  # fmt: skip
        if spawn:
            spawn_engine(layout, config_path=self.loaded.source)
        queued = store.run(feature, run.run)
        assert queued is not None  # noqa: S101 - it was just updated
        return self._start_answer(queued, name, "queued")

    @staticmethod
    def _start_answer(run: RunRecord, provider: str, state: str) -> dict[str, Any]:
        return {
            "run_id": run.run_id,
            "feature": run.feature,
            "run": run.run,
            "status": run.status,
            "provider": provider,
            "queued_at": run.queued_at,
            "message": f"{run.feature} run {run.run}: {state} (run id {run.run_id})",
        }

    def serve_engine(
        self,
        *,
        workspace: Path | None = None,
        idle_exit_s: float = 2.0,
        retry_backoff_s: tuple[float, ...] | None = None,
    ) -> bool:
        """Drive this project's queue in this process until idle (``tmops engine``)."""
        layout = self._layout(workspace)
        engine = Engine(
            config=self.config, plugins=self.plugins, events=self.events,
            store=self._create_store(layout), layout=layout, retry_backoff_s=retry_backoff_s,
        )  # fmt: skip
        return engine.serve(idle_exit_s=idle_exit_s)

    def events_since(
        self, feature: str, *, after_id: int = 0, workspace: Path | None = None
    ) -> list[dict[str, Any]]:
        """The events recorded for a feature after ``after_id`` (for ``tmops watch``)."""
        store = self._store(self._layout(workspace), create=False)
        if store is None:
            return []
        return [
            {
                "id": row["id"],
                "event_type": row["event_type"],
                "timestamp": row["timestamp"],
                "run": row["run"],
                "data": json.loads(row["data"]),
            }
            for row in store.events_for(feature, after_id=after_id)
        ]

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
