"""The checks of ``tmops config check`` that need the plugins, and the config in force as
``tmops config show`` prints it.

A part of :class:`~tmops_core.service.operations.Service` (a mixin over its loaded config and
plugins): the config model checks each value on loading; this checks what only the installed
plugins can say (which sinks, phases and providers exist, and each one's own settings).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tmops_core.config import Config, ProviderConfig, provider_settings, redacted, to_data
from tmops_core.events import start_sinks
from tmops_hookspecs import ConfigError, TmopsError

if TYPE_CHECKING:
    from tmops_core.config import LoadedConfig
    from tmops_core.plugins import Plugins

__all__ = ["ConfigChecks"]


class ConfigChecks:
    """Checking the loaded config against the plugins, and showing it."""

    if TYPE_CHECKING:
        loaded: LoadedConfig
        config: Config
        plugins: Plugins

    def check_config(self) -> list[str]:
        """Checks that need the plugins; raise :class:`ConfigError` with every problem.

        :return: warnings that do not make the config invalid.
        """
        # Started and closed at once, so a sink's own checks of its options run too.
        sinks, problems = start_sinks(self.config, self.plugins)
        for _, sink in sinks:
            sink.close()
        loaded = set(self.plugins.names())
        disabled = set(self.config.plugins.disabled)
        failures = self.plugins.failures
        refused = {f.name for f in failures if f.config_path}  # reported below, with the reason
        for name in self.config.plugins.settings:
            if name not in loaded and name not in disabled and name not in refused:
                installed = ", ".join(sorted(loaded)) or "none"
                problems.append(
                    f"settings for {name!r}, which is not an installed plugin "
                    f"(installed: {installed}) @ $.plugins.settings.{name}"
                )
        problems += [f"{f.reason} @ {f.config_path}" for f in failures if f.config_path]
        warnings = [
            f"plugin {f.name} was skipped: {f.reason}" for f in failures if not f.config_path
        ]
        problems += self._check_workflow(warnings)
        problems += self._check_providers(warnings)
        problems += self._check_store(warnings)
        problems += self._check_executor()
        if problems:
            source = self.loaded.source or "built-in defaults"
            raise ConfigError(f"config {source} has {len(problems)} error(s):", problems)
        return warnings

    def _check_workflow(self, warnings: list[str]) -> list[str]:
        """The workflow's phases against the installed phase plugins."""
        features = self.config.features
        installed = self.plugins.phases()
        known = ", ".join(sorted(installed)) or "none"
        problems = [
            f"no installed plugin provides the phase {name!r} (installed: {known}) "
            f"@ $.features.default_phases[{index}]"
            for index, name in enumerate(features.default_phases)
            if name not in installed
        ]
        problems += [
            f"approve_before names {name!r}, which is not a phase of the workflow "
            f"({', '.join(features.default_phases)}) @ $.features.approve_before[{index}]"
            for index, name in enumerate(features.approve_before)
            if name not in features.default_phases
        ]
        problems += [
            f"phase_budget_usd names {name!r}, which is not a phase of the workflow "
            f"({', '.join(features.default_phases)}) @ $.features.phase_budget_usd.{name}"
            for name in features.phase_budget_usd
            if name not in features.default_phases
        ]
        if features.rework_phase not in features.default_phases:
            warnings.append(
                f"features.rework_phase {features.rework_phase!r} is not in the workflow: a "
                "verdict of NO ends the run needs_review without a rework round"
            )
        return problems

    def _check_providers(self, warnings: list[str]) -> list[str]:
        """The default provider, the phases' providers and every provider section against
        the installed providers, each section checked by its own provider (permission modes,
        argv templates...)."""
        installed = self.plugins.providers()
        known = ", ".join(sorted(installed)) or "none"
        problems = []
        named = {"default_provider": self.config.features.default_provider} | {
            f"phase_providers.{phase}": name
            for phase, name in self.config.features.phase_providers.items()
        }
        for key, name in named.items():
            if (
                name is not None
                and name not in installed
                and name.replace("_", "-") not in installed
            ):
                problems.append(
                    f"no installed provider is named {name!r} (installed: {known}) "
                    f"@ $.features.{key}"
                )
        if self.config.features.default_provider is None:
            try:  # none named: the plugins must agree on one
                self.plugins.default_provider()
            except ConfigError as exc:
                problems.append(exc.message)
        for name in self.config.providers:
            registered = installed.get(name) or installed.get(name.replace("_", "-"))
            if registered is None:
                warnings.append(
                    f"providers.{name} configures a provider that is not installed "
                    f"(installed: {known}); it is not used"
                )
                continue
            try:
                registered.spec.factory(provider_settings(self.config, registered.spec.name))
            except ConfigError as exc:  # the plugin's own problems say where they are
                spelled = (
                    p.replace(f"$.providers.{registered.spec.name}", f"$.providers.{name}")
                    for p in exc.problems
                )  # the section as the file spells it
                problems.extend(list(spelled) or [f"{exc.message} @ $.providers.{name}"])
            except TmopsError as exc:
                problems.append(f"{exc.message} @ $.providers.{name}")
        return problems

    def _check_store(self, warnings: list[str]) -> list[str]:
        """A PostgreSQL store.url needs psycopg; a password belongs outside the file."""
        url = self.config.store.url
        if url is None or not url.startswith(("postgresql://", "postgres://")):
            return []
        if urlsplit(url).password:
            warnings.append(
                "store.url holds a password: tmops hides it wherever it shows the URL, but it "
                "stays in the file; give it in PGPASSWORD or ~/.pgpass instead @ $.store.url"
            )
        if importlib.util.find_spec("psycopg") is None:
            return [
                "store.url names a PostgreSQL database, but psycopg is not installed: "
                "pip install 'tmops[postgres]' @ $.store.url"
            ]
        return []

    def _check_executor(self) -> list[str]:
        """The executor named against the installed ones, its own keys by its plugin."""
        from tmops_core.orchestration.executors import executor_settings, executor_spec
        from tmops_core.orchestration.remote import RemoteAttempts
        from tmops_core.workspace.layout import Layout

        try:
            spec = executor_spec(self.config, self.plugins)
            if spec is not None:  # checks its keys; connects to nothing
                host = RemoteAttempts(self.config, self.plugins, Layout(Path.cwd()))
                spec.factory(executor_settings(self.config), host)
        except ConfigError as exc:
            return list(exc.problems) or [f"{exc.message} @ $.executor"]
        except TmopsError as exc:
            return [f"{exc.message} @ $.executor"]
        return []

    def effective_config(self) -> dict[str, Any]:
        """The config in force, as data, with secrets redacted: every key with its value,
        defaults included (the default provider as the plugins chose it, when the file names
        none), and the section of every provider the workflow runs with even when the file has
        none (it runs with those built-in settings)."""
        data = to_data(self.config)
        features = self.config.features
        try:
            default = features.default_provider or self.plugins.default_provider()
        except ConfigError:  # `tmops config check` says why
            default = None
        data["features"]["default_provider"] = default
        used = {default, *features.phase_providers.values()} - {None}
        for name in sorted(n for n in used if n is not None):
            if not {name, name.replace("-", "_")} & set(self.config.providers):
                builtin = Config(providers={name: ProviderConfig()})
                data["providers"][name] = to_data(builtin)["providers"][name]
        shown: dict[str, Any] = redacted(data)
        return shown
