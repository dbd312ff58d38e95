"""The tmops configuration: where it is found, how it is read, and its frozen model.

Owns discovery (``--config``, ``$TMOPS_CONFIG``, ``./tmops.yaml``, ``./.tmops/config.yaml``, else
built-in defaults), the hostile-file checks (permissions, size, YAML aliases), ``${VAR}``
expansion, and one strict cattrs converter that reports EVERY error at once as
``message @ $.path``. It never loads plugins: checks that need them live with their users.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_mapping,
    is_sequence,
    mapping_structure_factory,
)
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import transform_error

from tmops_core.config_source import MAX_CONFIG_BYTES, expand, parse_yaml, read_config_file
from tmops_core.config_store import StoreConfig, store_url_problem
from tmops_core.secrets import REDACTED, redact_data
from tmops_hookspecs import ConfigError

__all__ = [
    "CONFIG_ENV",
    "MAX_CONFIG_BYTES",
    "REDACTED",
    "RETIRED_KEYS",
    "Config",
    "ExecutorConfig",
    "FeaturesConfig",
    "LoadedConfig",
    "PathsConfig",
    "PluginsConfig",
    "PriceConfig",
    "ProviderConfig",
    "ServerConfig",
    "StoreConfig",
    "TelemetryConfig",
    "find_config",
    "load_config",
    "parse_config",
    "provider_settings",
    "redacted",
    "store_url_problem",
    "to_data",
]

CONFIG_ENV = "TMOPS_CONFIG"
ISOLATIONS = ("worktree", "checkout")
LOG_LEVELS = ("trace", "debug", "info", "success", "warning", "error", "critical")
_SEARCH_PATHS = (Path("tmops.yaml"), Path(".tmops") / "config.yaml")
_SIMPLE_KEY = re.compile(r"\['([A-Za-z0-9_-]+)'\]")


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    frozen: Mapping[str, Any] = _deep_freeze(value)
    return frozen


def _deep_freeze(node: Any) -> Any:
    # Free-form sections (sink options, plugin settings) must be as immutable as the rest.
    if isinstance(node, Mapping):
        return types.MappingProxyType({key: _deep_freeze(value) for key, value in node.items()})
    if isinstance(node, list | tuple):
        return tuple(_deep_freeze(item) for item in node)
    return node


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")


def _not_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")


def _log_level(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")


# --------------------------------------------------------------------------------------------
# The model: the seed's sections (server, providers, features, telemetry, paths) plus plugins
# --------------------------------------------------------------------------------------------


def _absolute_paths(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    relative = [path for path in value if not Path(path).is_absolute()]
    if relative:
        raise ValueError(f"must be absolute paths, got {relative[0][:64]!r}")


@attrs.frozen(kw_only=True)
class ServerConfig:
    name: str = "tmops"
    version: str = ""
    workspace_id: str = "default"
    #: projects an MCP client may name as ``workspace`` besides the server's own: a workspace
    #: is allowed when its project root is one of these folders or inside one
    workspaces: tuple[str, ...] = attrs.field(default=(), validator=_absolute_paths)


def _price(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"must be 0 or more (USD per million tokens), got {value}")


@attrs.frozen(kw_only=True)
class PriceConfig:
    """What a model's tokens cost, in USD per million, for a provider that reports tokens only."""

    input_per_mtok: float = attrs.field(validator=_price)
    output_per_mtok: float = attrs.field(validator=_price)


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """The keys every provider shares; any other key of the section is the provider's own, kept
    in ``options`` for its plugin to check (``tmops config check``) and use."""

    enabled: bool = True
    #: the program to run (``claude`` for claude-code; any program for ``command``)
    command: str | None = None
    #: extra arguments (claude-code) or the argv template after the program (command)
    args: tuple[str, ...] = ()
    instructions_dir: str | None = None
    #: variables added to the agent's environment (e.g. ANTHROPIC_BASE_URL for a gateway)
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    permission_mode: str = "acceptEdits"
    model: str | None = None
    max_turns: int | None = None
    #: wall-clock limit of one agent attempt, and the longest it may stay silent
    timeout_s: int = attrs.field(default=3600, validator=_positive)
    idle_timeout_s: int = attrs.field(default=600, validator=_positive)
    #: model name (or ``default``) -> its price, for an agent that reports tokens but no cost
    prices: Mapping[str, PriceConfig] = attrs.field(factory=dict, converter=_frozen_mapping)
    #: the section's other keys, written beside these ones (not under ``options``)
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)


def _usd(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be more than 0 (USD), got {value}")


def _phase_budgets(
    instance: object, attribute: attrs.Attribute[Any], value: Mapping[str, float]
) -> None:
    for phase, limit in value.items():
        if limit <= 0:
            raise ValueError(f"the budget of {phase!r} must be more than 0 (USD), got {limit}")


def _isolation(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ISOLATIONS:
        raise ValueError(f"must be one of {', '.join(ISOLATIONS)}, got {value!r}")


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be more than 0 (or null for none), got {value}")


def _project_relative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    # copied from the project root into a worktree: never from outside the project
    for pattern in value:
        parts = Path(pattern).parts
        if not pattern or Path(pattern).is_absolute() or ".." in parts:
            raise ValueError(
                f"must be paths or globs relative to the project root, without '..', "
                f"got {pattern[:64]!r}"
            )


@attrs.frozen(kw_only=True)
class FeaturesConfig:
    concurrent_limit: int = attrs.field(default=1, validator=_positive)
    #: ``worktree``: a git worktree per feature (features run side by side); ``checkout``: the
    #: upstream behaviour, the feature branch checked out in the project root.
    isolation: str = attrs.field(default="worktree", validator=_isolation)
    #: where feature worktrees are created, relative to the project root
    worktree_root: str = ".tmops/worktrees"
    default_phases: tuple[str, ...] = ("orchestrator", "tester", "implementer", "verifier")
    #: seconds an agent may go on running after writing its completion checkpoint
    checkpoint_timeout: int = attrs.field(default=300, validator=_positive)
    max_retries: int = attrs.field(default=2, validator=_not_negative)
    #: times the verifier's NO (or a score under ``min_quality_score``) sends the work back to
    #: ``rework_phase`` before the run ends ``needs_review`` for a person to decide
    rework_rounds: int = attrs.field(default=1, validator=_not_negative)
    min_quality_score: int = attrs.field(default=0, validator=_not_negative)
    rework_phase: str = "implementer"
    #: approval gates: the run pauses ``awaiting_approval`` before each of these phases until
    #: a person runs ``tmops approve FEATURE``
    approve_before: tuple[str, ...] = ()
    #: the provider agents run with unless `start` or ``phase_providers`` names another;
    #: None: the installed provider that says it is the default (claude-code, built in)
    default_provider: str | None = None
    #: phase name -> the provider its agent runs with (e.g. ``implementer: codex``)
    phase_providers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    #: the project's test command (argv, run in the worktree) for the tests-fail/pass gates
    test_command: tuple[str, ...] = ("python", "-m", "pytest", "-q")
    test_timeout: int = attrs.field(default=600, validator=_positive)
    #: environment variables passed to agents besides the built-in allowlist
    env_allowlist: tuple[str, ...] = ()
    #: the branch a feature is merged into, for ``tmops cleanup`` (default: the branch checked
    #: out in the project root)
    base_branch: str | None = None
    #: ``tmops status`` and ``tmops list`` warn when the feature worktrees take more (GB)
    worktree_disk_budget_gb: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: gitignored files (paths or globs relative to the project root, e.g. ``.env``) copied
    #: into a new worktree
    worktree_copy: tuple[str, ...] = attrs.field(default=(), validator=_project_relative)
    #: argv run in a feature's worktree once, before its first agent (e.g. ``[npm, ci]``)
    worktree_setup: tuple[str, ...] = ()
    worktree_setup_timeout: int = attrs.field(default=600, validator=_positive)
    #: what one run may spend in USD (None: no limit); reached, the run pauses
    #: ``budget_exhausted``
    max_budget_usd: float | None = attrs.field(default=None, validator=_usd)
    #: phase name -> what that phase may spend in one run, in USD
    phase_budget_usd: Mapping[str, float] = attrs.field(
        factory=dict, converter=_frozen_mapping, validator=_phase_budgets
    )
    #: a run paused by a usage limit is queued again by itself when the limit lifts
    resume_after_usage_limit: bool = True
    #: seconds to wait when the agent reports a usage limit without saying when it lifts
    usage_limit_wait_s: int = attrs.field(default=3600, validator=_positive)


@attrs.frozen(kw_only=True)
class TelemetryConfig:
    enabled: bool = True
    level: str = attrs.field(default="info", validator=_log_level)
    environment: str = "development"
    #: sink name -> ``true``/``false`` or a mapping of the sink's options; ``file: PATH`` (the
    #: seed's spelling) is the ``jsonl`` sink writing to PATH.
    outputs: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.frozen(kw_only=True)
class PathsConfig:
    #: a legacy ``init_feature_multi.sh`` run instead of the native init, relative to the root
    init_script: str | None = None
    init_timeout: int = attrs.field(default=120, validator=_positive)
    #: folder of ``<role>.md`` files replacing the built-in role instructions
    instructions: str | None = None


#: Keys of the seed's config that tmops does not read, refused with why and what to do rather
#: than kept as settings that silently change nothing.
RETIRED_KEYS: Mapping[tuple[str, str], str] = {
    ("paths", "checkpoints"): "checkpoints are always in .tmops/<feature>/runs/<run>/checkpoints, "
    "where the engine, status and the agents' prompts look for them; remove the key",
    ("paths", "tmops_tools"): "tmops runs no script from that folder; to run the upstream init "
    "script, set paths.init_script to its path, and remove the key",
}


@attrs.frozen(kw_only=True)
class PluginsConfig:
    #: plugin names (entry-point names) not to load
    disabled: tuple[str, ...] = ()
    #: one section per plugin, keyed by plugin name, handed to that plugin
    settings: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=_frozen_mapping)


_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def _executor_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(f"must be an executor's name (lowercase, e.g. local), got {value[:64]!r}")


def _git_remote(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    # handed to git as one argv item: a remote's name, never an option
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        raise ValueError(f"must be the name of a git remote (e.g. origin), got {value[:64]!r}")


@attrs.frozen(kw_only=True)
class ExecutorConfig:
    """Which executor runs the attempts; any other key of the section is the executor's own,
    kept in ``options`` for its plugin to check (``tmops config check``) and use."""

    #: ``local``: in the engine's process tree; another name: an executor plugin's
    name: str = attrs.field(default="local", validator=_executor_name)
    #: the git remote workers fetch the feature branch from and push their work to
    remote: str = attrs.field(default="origin", validator=_git_remote)
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.frozen(kw_only=True)
class Config:
    server: ServerConfig = attrs.field(factory=ServerConfig)
    executor: ExecutorConfig = attrs.field(factory=ExecutorConfig)
    providers: Mapping[str, ProviderConfig] = attrs.field(factory=dict, converter=_frozen_mapping)
    features: FeaturesConfig = attrs.field(factory=FeaturesConfig)
    telemetry: TelemetryConfig = attrs.field(factory=TelemetryConfig)
    paths: PathsConfig = attrs.field(factory=PathsConfig)
    store: StoreConfig = attrs.field(factory=StoreConfig)
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)


@attrs.frozen
class LoadedConfig:
    """A config and where it came from (``None``: the built-in defaults)."""

    config: Config
    source: Path | None


# --------------------------------------------------------------------------------------------
# One strict converter: no "5" -> 5, no "abc" -> ['a', 'b', 'c'], no unknown keys
# --------------------------------------------------------------------------------------------


def _strict_scalar(kind: type[Any], *accepted: type[Any]) -> Callable[[Any, type[Any]], Any]:
    accepted = accepted or (kind,)

    def structure(value: Any, _: type[Any]) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got a boolean ({value!r})")
        if not isinstance(value, accepted):
            raise TypeError(f"expected {kind.__name__}, got {_describe(value)}")
        return kind(value)

    return structure


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} ({value!r})"


def _strict_sequence(type_: Any, converter: cattrs.BaseConverter) -> Callable[[Any, Any], Any]:
    inner = homogenous_tuple_structure_factory(type_, converter)

    def structure(value: Any, cl: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {_describe(value)}")
        return inner(value, cl)

    return structure


def _strict_mapping(type_: Any, converter: cattrs.BaseConverter) -> Callable[[Any, Any], Any]:
    inner = mapping_structure_factory(type_, converter)

    def structure(value: Any, cl: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping, got {_describe(value)}")
        return inner(value, cl)

    return structure


def _validating_attrs_class(cl: Any, converter: cattrs.BaseConverter) -> Callable[[Any, Any], Any]:
    # attrs validators run only once every field has structured; running each field's validator
    # as part of structuring that field lets one pass report every error of the document.
    overrides: dict[str, Any] = {}
    for attribute in attrs.fields(attrs.resolve_types(cl)):
        if attribute.validator is not None:
            overrides[attribute.name] = override(struct_hook=_validated_field(attribute, converter))
    inner = make_dict_structure_fn(cl, converter, **overrides)

    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping, got {_describe(value)}")
        return inner(value, type_)

    return structure


def _validated_field(
    attribute: attrs.Attribute[Any], converter: cattrs.BaseConverter
) -> Callable[[Any, Any], Any]:
    def structure(value: Any, type_: Any) -> Any:
        result = converter.structure(value, attribute.type)  # type: ignore[arg-type]
        attribute.validator(None, attribute, result)  # type: ignore[misc]
        return result

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _strict_scalar(str))
    converter.register_structure_hook(int, _strict_scalar(int))
    converter.register_structure_hook(float, _strict_scalar(float, int, float))
    converter.register_structure_hook(bool, _strict_scalar(bool))
    converter.register_structure_hook_factory(
        lambda t: is_sequence(t) and getattr(t, "__origin__", None) is tuple, _strict_sequence
    )
    converter.register_structure_hook_factory(is_mapping, _strict_mapping)
    converter.register_structure_hook_factory(attrs.has, _validating_attrs_class)
    converter.register_structure_hook(ProviderConfig, _provider_section(converter))
    converter.register_unstructure_hook(ProviderConfig, _provider_data(converter))
    converter.register_structure_hook(ExecutorConfig, _open_section(ExecutorConfig, converter))
    converter.register_unstructure_hook(ExecutorConfig, _open_data(ExecutorConfig, converter))
    return converter


def _open_section(cl: type[Any], converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    # The core checks the keys it reads; the others are the plugin's, checked by that plugin.
    shared = _validating_attrs_class(cl, converter)
    common = {field.name for field in attrs.fields(cl)} - {"options"}

    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping, got {_describe(value)}")
        section = shared({k: v for k, v in value.items() if k in common}, type_)
        own = {str(key): item for key, item in value.items() if key not in common}
        return attrs.evolve(section, options=own) if own else section

    return structure


def _open_data(cl: type[Any], converter: cattrs.Converter) -> Callable[[Any], dict[str, Any]]:
    fields = make_dict_unstructure_fn(cl, converter)

    def unstructure(section: Any) -> dict[str, Any]:
        data: dict[str, Any] = fields(section)
        return {**{k: v for k, v in data.items() if k != "options"}, **dict(section.options)}

    return unstructure


def _provider_section(converter: cattrs.Converter) -> Callable[[Any, Any], ProviderConfig]:
    structure: Callable[[Any, Any], ProviderConfig] = _open_section(ProviderConfig, converter)
    return structure


def _provider_data(converter: cattrs.Converter) -> Callable[[ProviderConfig], dict[str, Any]]:
    return _open_data(ProviderConfig, converter)


_CONVERTER = _make_converter()


def _format_error(exc: BaseException, type_: type[Any] | None) -> str:
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        known = ", ".join(field.name for field in attrs.fields(exc.cl))
        extra = ", ".join(sorted(repr(name) for name in exc.extra_fields))
        return f"unknown key {extra} (known keys: {known})"
    if isinstance(exc, TypeError | ValueError) and exc.args:
        return str(exc)
    return f"invalid value ({exc!r})"


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def parse_config(
    data: Any, *, env: Mapping[str, str] | None = None, source: str = "<data>"
) -> Config:
    """Expand variables in already-parsed YAML data and structure it into a :class:`Config`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {source} must be a mapping of sections, got {_describe(data)}")
    problems: list[str] = []
    data = _without_retired_keys(data, problems)
    expanded = expand(data, os.environ if env is None else env, "$", problems)
    try:
        config = _CONVERTER.structure(expanded, Config)
    except Exception as exc:  # cattrs groups every error of the document in one exception
        problems.extend(
            _SIMPLE_KEY.sub(r".\1", line)
            for line in transform_error(exc, format_exception=_format_error)
        )
        config = None
    if config is not None:
        problems += _workflow_problems(config.features)
    if problems or config is None:
        raise ConfigError(
            f"config {source} has {len(problems)} error(s):",
            problems,
        )
    return config


def _workflow_problems(features: FeaturesConfig) -> list[str]:
    """Keys that must name phases of the workflow (the fields are checked one by one)."""
    workflow = ", ".join(features.default_phases)
    return [
        f"phase_providers names {name!r}, which is not a phase of the workflow ({workflow}); "
        f"name one of those, or add it to features.default_phases "
        f"@ $.features.phase_providers.{name}"
        for name in features.phase_providers
        if name not in features.default_phases
    ]


def _without_retired_keys(data: dict[Any, Any], problems: list[str]) -> dict[Any, Any]:
    """``data`` without the :data:`RETIRED_KEYS`, each reported as a problem saying why."""
    found = [
        (section, key)
        for section, key in RETIRED_KEYS
        if isinstance(data.get(section), dict) and key in data[section]
    ]
    if not found:
        return data
    kept = dict(data)
    for section, key in found:
        problems.append(
            f"{section}.{key} is no longer supported: {RETIRED_KEYS[section, key]} "
            f"@ $.{section}.{key}"
        )
        kept[section] = {k: v for k, v in kept[section].items() if k != key}
    return kept


def find_config(
    explicit: str | os.PathLike[str] | None = None, *, cwd: Path | None = None
) -> Path | None:
    """The config path to use: explicit, then ``$TMOPS_CONFIG``, then the search paths."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    base = cwd or Path.cwd()
    for candidate in _SEARCH_PATHS:
        if (base / candidate).is_file():
            return base / candidate
    return None


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Find, read, check and parse the config; raise :class:`ConfigError` with every problem."""
    path = find_config(explicit, cwd=cwd)
    if path is None:
        return LoadedConfig(Config(), None)
    data = parse_yaml(read_config_file(path), str(path))
    return LoadedConfig(parse_config(data, env=env, source=str(path)), path)


def to_data(config: Config) -> dict[str, Any]:
    """The config as plain data (what ``tmops config show`` prints before redaction)."""
    data: dict[str, Any] = _plain(_CONVERTER.unstructure(config))
    return data


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(item) for item in node]
    return node


def redacted(node: Any) -> Any:
    """A copy with every secret hidden: values under secret-naming keys (token, password,
    api_key, GH_PAT...), credentials in URLs and token shapes (see :mod:`tmops_core.secrets`)."""
    if isinstance(node, Mapping):
        return redact_data(node)
    return node


def provider_settings(config: Config, name: str) -> dict[str, Any]:
    """The config section of provider ``name`` (the seed spells ``claude-code`` ``claude_code``)."""
    section = config.providers.get(name) or config.providers.get(name.replace("-", "_"))
    return attrs.asdict(section or ProviderConfig(), recurse=False)
