"""Which provider runs each phase of a run, and the provider objects a run drives.

Resolution, per phase, the most specific first:

1. ``tmops start --phase-provider PHASE=NAME`` (kept with the run, ``runs.phase_providers``);
2. ``tmops start --provider NAME`` (the whole run, ``runs.provider``);
3. ``features.phase_providers[PHASE]`` in the config;
4. ``features.default_provider``;
5. the installed provider that says it is the default (``ProviderSpec.is_default``).

A resumed run keeps what its ``start`` named; the config's choices are read again each time
the engine takes the run up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tmops_core.config import Config, provider_settings
from tmops_core.plugins import Plugins
from tmops_core.store.records import RunRecord
from tmops_hookspecs import Provider, ProviderSpec, TmopsError

__all__ = [
    "PhaseProviders",
    "default_provider",
    "phase_provider",
    "providers_label",
    "workflow_providers",
]


def default_provider(config: Config, plugins: Plugins) -> str:
    """``features.default_provider``, else the installed provider that says it is the default
    (:class:`~tmops_hookspecs.ConfigError` when none or more than one does)."""
    return config.features.default_provider or plugins.default_provider()


def phase_provider(
    config: Config, plugins: Plugins, phase: str, *, run_provider: str | None = None,
    run_phases: Mapping[str, str] | None = None,
) -> str:  # fmt: skip
    """The provider ``phase`` runs with (see the module's resolution order)."""
    return (
        (run_phases or {}).get(phase)
        or run_provider
        or config.features.phase_providers.get(phase)
        or default_provider(config, plugins)
    )


def workflow_providers(
    config: Config, plugins: Plugins, run: RunRecord | None = None, *,
    run_provider: str | None = None, run_phases: Mapping[str, str] | None = None,
    phases: Iterable[str] | None = None,
) -> dict[str, str]:  # fmt: skip
    """Phase -> provider for every phase of the workflow (or ``phases``); the overrides of
    ``run`` unless given."""
    if run is not None:
        run_provider = run_provider or run.provider
        run_phases = run_phases if run_phases is not None else run.phase_overrides
    return {
        phase: phase_provider(
            config, plugins, phase, run_provider=run_provider, run_phases=run_phases
        )
        for phase in (config.features.default_phases if phases is None else phases)
    }


def providers_label(by_phase: Mapping[str, str]) -> str:
    """The run's provider as one word where all its phases share one, else each distinct
    provider in workflow order (``codex, claude-code``)."""
    return ", ".join(dict.fromkeys(by_phase.values()))


class PhaseProviders:
    """The providers one run drives, by phase: each made once from its config section."""

    def __init__(self, config: Config, plugins: Plugins, run: RunRecord) -> None:
        self.config = config
        self.plugins = plugins
        self.run = run
        self._made: dict[str, Provider] = {}

    def name(self, phase: str) -> str:
        return phase_provider(
            self.config, self.plugins, phase, run_provider=self.run.provider,
            run_phases=self.run.phase_overrides,
        )  # fmt: skip

    def spec(self, phase: str) -> ProviderSpec:
        name = self.name(phase)
        registered = self.plugins.providers().get(name)
        if registered is None:
            known = ", ".join(sorted(self.plugins.providers())) or "none"
            raise TmopsError(f"no provider named {name!r} for {phase} (installed: {known})")
        return registered.spec

    def settings(self, phase: str) -> dict[str, Any]:
        return provider_settings(self.config, self.name(phase))

    def provider(self, phase: str) -> Provider:
        """The provider object of ``phase``'s provider (one per provider name per run)."""
        name = self.name(phase)
        if name not in self._made:
            self._made[name] = self.spec(phase).factory(provider_settings(self.config, name))
        return self._made[name]
