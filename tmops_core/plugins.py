"""The plugin manager factory and the typed facade over it.

Load order: hook specifications, then entry points of the group ``tmops`` (built-in and
third-party alike, minus the disabled ones), then ``check_pending()``. A plugin that fails to
import, implements an unknown hook, or returns bad records is reported by name with the reason
and dropped; the others still load. :class:`Plugins` is the only code that touches ``pm.hook``.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import pluggy

from tmops_core.entry_points import EntryPoint, entry_points
from tmops_core.log import logger
from tmops_hookspecs import (
    PROJECT_NAME,
    ConfigError,
    ExecutorSpec,
    FeatureContext,
    PhaseSpec,
    PluginError,
    ProviderSpec,
    SinkSpec,
    TmopsError,
    ValidatorSpec,
    specs,
)

if TYPE_CHECKING:
    import click

__all__ = [
    "AUTOLOAD_ENV",
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "PluginFailure",
    "PluginInfo",
    "Plugins",
    "Registered",
    "create_plugin_manager",
    "disabled_from_env",
]

ENTRY_POINT_GROUP = PROJECT_NAME
DISABLE_ENV = "TMOPS_DISABLE_PLUGINS"
AUTOLOAD_ENV = "TMOPS_DISABLE_PLUGIN_AUTOLOAD"

# registration hook -> (kind shown to users, record type it must return)
_REGISTRATIONS: dict[str, tuple[str, type[Any]]] = {
    "tmops_register_providers": ("provider", ProviderSpec),
    "tmops_register_phases": ("phase", PhaseSpec),
    "tmops_register_validators": ("validator", ValidatorSpec),
    "tmops_register_sinks": ("sink", SinkSpec),
    "tmops_register_executors": ("executor", ExecutorSpec),
}

SpecT = TypeVar("SpecT", ProviderSpec, PhaseSpec, ValidatorSpec, SinkSpec, ExecutorSpec)


@attrs.frozen
class PluginInfo:
    """A loaded plugin: its name, where it came from, and what it registers."""

    name: str
    distribution: str | None
    version: str | None
    module: str
    registers: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


@attrs.frozen
class PluginFailure:
    """A plugin (or a pair of clashing plugins) that was skipped, and why."""

    name: str
    reason: str
    #: where in the config the cause is (``$.plugins.settings.<name>`` for settings the plugin
    #: refused): a config error then, not a warning
    config_path: str | None = None


@attrs.frozen
class Registered(Generic[SpecT]):
    """A record and the plugin that registered it."""

    spec: SpecT
    plugin: str


def disabled_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Plugin names listed in ``$TMOPS_DISABLE_PLUGINS`` (comma or space separated)."""
    raw = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return tuple(name for name in raw.replace(",", " ").split() if name)


def _autoload_from_env(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get(AUTOLOAD_ENV, "") not in {"1", "true"}


def create_plugin_manager(
    *,
    disabled: Iterable[str] = (),
    autoload: bool | None = None,
    extra: Iterable[tuple[str, object]] = (),
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plugins:
    """Build a fresh plugin manager: specs, entry points, ``extra`` plugins, ``check_pending()``,
    then each plugin's ``tmops_configure`` with its section of ``settings``.

    :param disabled: plugin names not to load (config ``plugins.disabled``); names from
        ``$TMOPS_DISABLE_PLUGINS`` are added.
    :param autoload: load entry points; ``None`` means yes unless
        ``TMOPS_DISABLE_PLUGIN_AUTOLOAD=1``.
    :param extra: ``(name, plugin)`` pairs registered after the entry points (tests, embedding).
    :param settings: config ``plugins.settings``: plugin name -> that plugin's own section.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(specs)
    blocked = {*disabled, *disabled_from_env()}
    for name in blocked:
        pm.set_blocked(name)
    failures: list[PluginFailure] = []
    origins: dict[str, tuple[str | None, str | None]] = {}
    if _autoload_from_env() if autoload is None else autoload:
        for entry_point in _entry_points():
            if entry_point.name in blocked:
                continue
            _load_entry_point(pm, entry_point, failures, origins)
    for name, plugin in extra:
        if name not in blocked:
            _register(pm, plugin, name, failures, origins, origin=(None, None))
    _check_pending(pm, failures)
    return Plugins(pm, failures, origins, settings or {})


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _load_entry_point(
    pm: pluggy.PluginManager,
    entry_point: EntryPoint,
    failures: list[PluginFailure],
    origins: dict[str, tuple[str | None, str | None]],
) -> None:
    dist = entry_point.dist
    origin = (dist.name, dist.version) if dist is not None else (None, None)
    try:
        plugin = entry_point.load()
    except (Exception, SystemExit) as exc:  # a plugin must never take tmops down with it
        failures.append(
            PluginFailure(entry_point.name, f"failed to import {entry_point.value}: {_why(exc)}")
        )
        return
    _register(pm, plugin, entry_point.name, failures, origins, origin=origin)


def _register(
    pm: pluggy.PluginManager,
    plugin: object,
    name: str,
    failures: list[PluginFailure],
    origins: dict[str, tuple[str | None, str | None]],
    *,
    origin: tuple[str | None, str | None],
) -> None:
    existing = pm.get_plugin(name)
    if existing is not None:
        failures.append(
            PluginFailure(
                name,
                f"two plugins are named {name!r}: {_describe_origin(origins.get(name))} and "
                f"{_describe_origin(origin)}; the second was skipped",
            )
        )
        return
    try:
        pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        failures.append(PluginFailure(name, f"refused: {_why(exc)}"))
        return
    origins[name] = origin


def _check_pending(pm: pluggy.PluginManager, failures: list[PluginFailure]) -> None:
    # check_pending stops at the first bad plugin; drop it and look again until all are clean.
    while True:
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            failures.append(PluginFailure(name, f"refused: {_why(exc)}"))
            pm.unregister(exc.plugin)
        else:
            return


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _describe_origin(origin: tuple[str | None, str | None] | None) -> str:
    if not origin or origin[0] is None:
        return "a plugin registered directly"
    return f"distribution {origin[0]} {origin[1]}"


class Plugins:
    """The typed facade over a plugin manager: one method per hook, failures contained.

    Registration hooks are collected once, when the facade is built, so every problem is known
    up front: a plugin whose registration raises or returns something other than the expected
    records is dropped entirely; a name registered by two plugins is refused, naming both.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        failures: list[PluginFailure],
        origins: Mapping[str, tuple[str | None, str | None]],
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._pm = pm
        self._failures = failures
        self._origins = dict(origins)
        self._reported: set[tuple[str, str]] = set()
        self._registry: dict[str, dict[str, Registered[Any]]] = {
            kind: {} for kind, _ in _REGISTRATIONS.values()
        }
        self._configure(settings or {})
        self._collect_registrations()

    # -- configuration -----------------------------------------------------------------------

    def _configure(self, settings: Mapping[str, Mapping[str, Any]]) -> None:
        """Hand each plugin its own section before it registers anything, so what it
        registers can depend on it; a plugin that refuses its settings is skipped."""
        for impl in self._pm.hook.tmops_configure.get_hookimpls():
            name = impl.plugin_name
            section = settings.get(name, types.MappingProxyType({}))
            try:
                impl.function(**({"settings": section} if "settings" in impl.argnames else {}))
            except (Exception, SystemExit) as exc:
                message = exc.message if isinstance(exc, TmopsError) else _why(exc)
                self._drop(name, f"plugin {name!r} refused its settings: {message}",
                           config_path=f"$.plugins.settings.{name}")  # fmt: skip

    # -- registration ------------------------------------------------------------------------

    def _collect_registrations(self) -> None:
        collected: dict[str, list[tuple[str, Any]]] = {}
        for hook_name, (kind, record_type) in _REGISTRATIONS.items():
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                plugin_name = impl.plugin_name
                try:
                    records = _checked_records(impl.function(), record_type, kind)
                except (Exception, SystemExit) as exc:
                    self._drop(plugin_name, f"{hook_name} failed: {_why(exc)}")
                    continue
                collected.setdefault(plugin_name, []).extend((kind, r) for r in records)
        clashes: dict[tuple[str, str], set[str]] = {}
        for plugin_name, records in collected.items():
            if self._pm.get_plugin(plugin_name) is None:
                continue  # dropped by a failing hook after it registered other records
            for kind, record in records:
                registry = self._registry[kind]
                previous = registry.get(record.name)
                if previous is not None:
                    clashes.setdefault((kind, record.name), {previous.plugin}).add(plugin_name)
                    continue
                registry[record.name] = Registered(record, plugin_name)
        for (kind, name), plugins in sorted(clashes.items()):
            del self._registry[kind][name]
            owners = " and ".join(repr(p) for p in sorted(plugins))
            self._failures.append(
                PluginFailure(
                    ", ".join(sorted(plugins)),
                    f"{kind} {name!r} is registered by both {owners}; it is refused until one of "
                    f"them is disabled (config plugins.disabled or ${DISABLE_ENV})",
                )
            )

    def _drop(self, plugin_name: str, reason: str, *, config_path: str | None = None) -> None:
        self._failures.append(PluginFailure(plugin_name, reason, config_path))
        plugin = self._pm.get_plugin(plugin_name)
        if plugin is not None:
            self._pm.unregister(plugin)
        for registry in self._registry.values():
            for name in [n for n, r in registry.items() if r.plugin == plugin_name]:
                del registry[name]

    def providers(self) -> dict[str, Registered[ProviderSpec]]:
        """Registered providers by name."""
        return dict(self._registry["provider"])

    def default_provider(self) -> str:
        """The provider agents run with when the config names none: the one installed
        provider whose spec says ``is_default`` (the core itself names no provider)."""
        installed = self._registry["provider"]
        chosen = sorted(name for name, found in installed.items() if found.spec.is_default)
        if len(chosen) == 1:
            return chosen[0]
        known = ", ".join(sorted(installed)) or "none"
        problem = (
            f"more than one installed provider says it is the default ({', '.join(chosen)})"
            if chosen
            else f"no installed provider says it is the default (installed: {known})"
        )
        raise ConfigError(
            f"{problem} @ $.features.default_provider",
            hint="name the provider to run in features.default_provider",
        )

    def phases(self) -> dict[str, Registered[PhaseSpec]]:
        """Registered phases by name."""
        return dict(self._registry["phase"])

    def validators(self) -> dict[str, Registered[ValidatorSpec]]:
        """Registered checkpoint validators by name."""
        return dict(self._registry["validator"])

    def executors(self) -> dict[str, Registered[ExecutorSpec]]:
        """Registered attempt executors by name (the built-in one is not a plugin)."""
        return dict(self._registry["executor"])

    def sinks(self) -> dict[str, Registered[SinkSpec]]:
        """Registered telemetry sinks by name."""
        return dict(self._registry["sink"])

    # -- what is loaded ----------------------------------------------------------------------

    @property
    def failures(self) -> tuple[PluginFailure, ...]:
        """Every plugin skipped while loading, with the reason."""
        return tuple(self._failures)

    def names(self) -> list[str]:
        """Names of the loaded plugins, sorted."""
        # blocked names stay in pluggy's registry with no plugin behind them
        return sorted(name for name, plugin in self._pm.list_name_plugin() if plugin is not None)

    def info(self) -> list[PluginInfo]:
        """Each loaded plugin with its distribution, version and what it registers."""
        result = []
        for name in self.names():
            plugin = self._pm.get_plugin(name)
            registers: dict[str, list[str]] = {}
            for kind, registry in self._registry.items():
                for spec_name, registered in sorted(registry.items()):
                    if registered.plugin == name:
                        registers.setdefault(f"{kind}s", []).append(spec_name)
            hooks = sorted(
                caller.name
                for caller in self._pm.get_hookcallers(plugin) or []
                if caller.name not in _REGISTRATIONS
            )
            if hooks:
                registers["hooks"] = hooks
            distribution, version = self._origins.get(name, (None, None))
            result.append(
                PluginInfo(
                    name=name,
                    distribution=distribution,
                    version=version,
                    module=getattr(plugin, "__name__", type(plugin).__name__),
                    registers={kind: tuple(items) for kind, items in registers.items()},
                )
            )
        return result

    # -- hooks with side effects -------------------------------------------------------------

    def register_commands(self, cli: click.Group) -> None:
        """Let plugins add subcommands to ``cli``; a plugin that fails is reported and skipped."""
        self._broadcast("tmops_register_commands", cli=cli)

    def feature_initialized(self, context: FeatureContext) -> None:
        self._broadcast("tmops_feature_initialized", context=context)

    def phase_started(self, context: FeatureContext, phase: str, attempt: int) -> None:
        self._broadcast("tmops_phase_started", context=context, phase=phase, attempt=attempt)

    def phase_finished(
        self, context: FeatureContext, phase: str, attempt: int, outcome: str, duration_s: float
    ) -> None:
        self._broadcast(
            "tmops_phase_finished",
            context=context,
            phase=phase,
            attempt=attempt,
            outcome=outcome,
            duration_s=duration_s,
        )

    def workflow_finished(
        self, context: FeatureContext, outcome: str, duration_s: float, message: str | None = None
    ) -> None:
        self._broadcast(
            "tmops_workflow_finished", context=context, outcome=outcome, duration_s=duration_s,
            message=message,
        )  # fmt: skip

    def run_needs_person(
        self, context: FeatureContext, state: str, reason: str, message: str
    ) -> None:
        self._broadcast(
            "tmops_run_needs_person", context=context, state=state, reason=reason, message=message
        )

    def unconfigure(self) -> None:
        """Let every plugin flush and release what it holds (once, when tmops is done)."""
        self._broadcast("tmops_unconfigure")

    def _broadcast(self, hook_name: str, **kwargs: Any) -> None:
        # Each implementation is called on its own so one failing plugin cannot silence the rest.
        for impl in reversed(getattr(self._pm.hook, hook_name).get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue  # broadcasts are plain calls; wrappers are not part of this contract
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception as exc:
                key = (impl.plugin_name, hook_name)
                if key not in self._reported:
                    self._reported.add(key)
                    logger.opt(exception=exc).warning(
                        "plugin {} failed in {}: {} (further failures of it are not reported)",
                        impl.plugin_name,
                        hook_name,
                        _why(exc),
                    )


def _checked_records(returned: object, record_type: type[Any], kind: str) -> list[Any]:
    if returned is None:
        return []
    if isinstance(returned, str | bytes | Mapping) or not isinstance(returned, Iterable):
        raise PluginError(
            f"must return an iterable of {record_type.__name__}, got {type(returned).__name__}"
        )
    records = list(returned)
    for record in records:
        if not isinstance(record, record_type):
            raise PluginError(
                f"returned {type(record).__name__} where a {record_type.__name__} "
                f"({kind}) was expected"
            )
    return records
