"""The ``claude-code`` provider: Claude Code in headless mode (``claude -p``, stream-json output).

The provider is PURE: it builds an argv list, reads stdout lines and judges the exit; it never
starts a process, reads a project file or looks at the environment (the core does all of that;
the only outside data used is the time zone database, to date a usage-limit reset). The
facts it relies on are in ``reference/claude-code-cli.md`` and were checked against the real
CLI (2.1.329, recordings in ``tests/data/claude/provider/``):

- The output is read with ``--output-format stream-json --verbose``, one JSON object per
  line; reading it and judging the end is :mod:`tmops_plugins.claude_stream`'s.
- The prompt goes LAST, after ``--``: the CLI (commander.js) takes a prompt that starts with
  ``-`` for an option, and ``--add-dir``/``--allowedTools`` take several values, so a prompt
  right after them would be swallowed. A free-text option value that starts with ``-`` is
  passed as ``--flag=value`` for the same reason.

Running as root with ``--permission-mode bypassPermissions`` needs ``IS_SANDBOX=1`` in the
agent's environment: put it in the provider's ``env`` config; the provider cannot decide it.

This module owns the provider: its settings (:func:`read_settings`, shared with the
``command`` provider), the argv it builds, :class:`ClaudeCodeProvider` and the hook that
registers it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from tmops_hookspecs import (
    AgentEvent,
    AgentRequest,
    AgentResult,
    ConfigError,
    Invocation,
    ProviderSpec,
    hookimpl,
)

from .claude_stream import judge, parse_stream_line

__all__ = [
    "MANAGED_FLAGS",
    "PERMISSION_MODES",
    "ClaudeCodeProvider",
    "ProviderSettings",
    "create_provider",
    "read_settings",
    "split_managed_args",
    "tmops_register_providers",
]

NAME = "claude-code"
#: What ``--permission-mode`` accepts (2.1.197 and 2.1.329; the latter adds auto and manual).
PERMISSION_MODES = frozenset(
    {"default", "acceptEdits", "bypassPermissions", "plan", "dontAsk", "auto", "manual"}
)
#: Flags the provider sets itself, so the same flags in the config's ``args`` are dropped:
#: flag -> how many values follow it (``?``: one, unless the next item is a flag; ``+``: every
#: item up to the next flag).
MANAGED_FLAGS: Mapping[str, int | str] = {
    "-p": 0,
    "--print": 0,
    "--verbose": 0,
    "--output-format": 1,
    "--append-system-prompt": 1,
    "--permission-mode": 1,
    "-r": "?",
    "--resume": "?",
    "--add-dir": "+",
    "--max-budget-usd": 1,
}


# --------------------------------------------------------------------------------------------
# Settings (shared with the command provider)
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ProviderSettings:
    """A provider's config section (``tmops_core.config.ProviderConfig``), checked."""

    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict)
    permission_mode: str = "acceptEdits"
    model: str | None = None
    max_turns: int | None = None


def _wrong(provider: str, key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(
        f"provider '{provider}': '{key}' must be {expected}, got {type(value).__name__} {value!r}",
        hint=f"fix providers.{provider}.{key} in tmops.yaml",
    )


def _optional_text(provider: str, settings: Mapping[str, Any], key: str) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise _wrong(provider, key, "a non-empty string", value)
    return value


def read_settings(provider: str, settings: Mapping[str, Any]) -> ProviderSettings:
    """Check a provider's settings mapping (``attrs.asdict(ProviderConfig)``).

    Keys this provider does not use (``enabled``, ``timeout_s``, ... and any the config model
    gains later) are left to the core; the section's own keys (``options``: none is known to
    these providers) are refused, each at its ``$.providers.<name>.<key>``. Raises
    :class:`ConfigError` naming the key.
    """
    if not isinstance(settings, Mapping):
        raise ConfigError(f"provider '{provider}': settings must be a mapping, got {settings!r}")
    unknown = sorted(settings.get("options") or {})
    if unknown:
        raise ConfigError(
            f"provider '{provider}': unknown key(s) {', '.join(map(repr, unknown))}",
            [
                f"unknown key {key!r} for provider '{provider}' @ $.providers.{provider}.{key}"
                for key in unknown
            ],
            hint=f"remove them, or check their spelling in providers.{provider}",
        )
    args = settings.get("args")
    args = () if args is None else args
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise _wrong(provider, "args", "a list of strings", args)
    for item in args:
        if not isinstance(item, str) or "\0" in item:
            raise _wrong(provider, "args", "a list of strings", item)
    env = settings.get("env")
    env = {} if env is None else env
    if not isinstance(env, Mapping):
        raise _wrong(provider, "env", "a mapping of names to strings", env)
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
            raise _wrong(provider, f"env.{key}", "a string", value)
    mode = settings.get("permission_mode", "acceptEdits")
    if not isinstance(mode, str) or mode not in PERMISSION_MODES:
        raise ConfigError(
            f"provider '{provider}': permission_mode must be one of "
            f"{', '.join(sorted(PERMISSION_MODES))}, got {mode!r}",
            hint="acceptEdits lets the agent edit the worktree and the checkpoint folder",
        )
    max_turns = settings.get("max_turns")
    if max_turns is not None and (
        not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 1
    ):
        raise _wrong(provider, "max_turns", "a whole number of at least 1", max_turns)
    return ProviderSettings(
        command=_optional_text(provider, settings, "command"),
        args=tuple(args),
        env=dict(env),
        permission_mode=mode,
        model=_optional_text(provider, settings, "model"),
        max_turns=max_turns,
    )


def split_managed_args(args: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split config ``args`` into (kept, dropped): drop the flags in :data:`MANAGED_FLAGS`
    with their values, in ``--flag value`` and ``--flag=value`` spelling.

    The seed config's ``["-p", "--resume", "--output-format", "json"]`` is all dropped.
    """
    kept: list[str] = []
    dropped: list[str] = []
    index = 0
    while index < len(args):
        item = args[index]
        flag = item.split("=", 1)[0] if item.startswith("--") else item
        arity = MANAGED_FLAGS.get(flag)
        if arity is None:
            kept.append(item)
            index += 1
            continue
        dropped.append(item)
        index += 1
        if "=" in item:
            continue
        if arity == 1 and index < len(args):
            dropped.append(args[index])
            index += 1
        elif arity in {"?", "+"}:
            while index < len(args) and not args[index].startswith("-"):
                dropped.append(args[index])
                index += 1
                if arity == "?":
                    break
    return tuple(kept), tuple(dropped)


# --------------------------------------------------------------------------------------------
# The provider
# --------------------------------------------------------------------------------------------


def _option(flag: str, value: str) -> list[str]:
    # A value starting with "-" would be read as a flag: the CLI takes --flag=value as well.
    return [f"{flag}={value}"] if value.startswith("-") else [flag, value]


class ClaudeCodeProvider:
    """Builds ``claude -p`` invocations and reads their stream-json output."""

    #: ``claude --resume <session>`` continues a session, so a retry sends only the nudge.
    can_resume = True

    def __init__(
        self, settings: ProviderSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self._clock = clock
        extra, ignored = split_managed_args(settings.args)
        self.extra_args: tuple[str, ...] = extra
        #: the config ``args`` items dropped because the provider sets those flags itself
        self.ignored_args: tuple[str, ...] = ignored

    @property
    def program(self) -> str:
        return self.settings.command or "claude"

    def build_invocation(self, request: AgentRequest) -> Invocation:
        argv = [self.program, "-p", "--output-format", "stream-json", "--verbose"]
        argv += _option("--append-system-prompt", request.role_instructions)
        argv += ["--permission-mode", self.settings.permission_mode]
        if request.extra_dirs:
            argv += ["--add-dir", *(str(path) for path in request.extra_dirs)]
        if request.resume_session_id:
            argv += _option("--resume", request.resume_session_id)
        max_turns = request.max_turns or self.settings.max_turns
        if max_turns:
            argv += ["--max-turns", str(max_turns)]
        if self.settings.model:
            argv += _option("--model", self.settings.model)
        if request.allowed_tools:
            argv += _option("--allowedTools", ",".join(request.allowed_tools))
        if request.max_budget_usd is not None:
            # what is left of the run's (or phase's) budget: the CLI stops itself there
            argv += ["--max-budget-usd", f"{max(request.max_budget_usd, 0.0):.6f}"]
        argv += [*self.extra_args, "--", request.prompt]
        return Invocation(argv=argv, env=dict(self.settings.env))

    def parse_line(self, line: str) -> Iterable[AgentEvent]:
        return parse_stream_line(line)

    def finish(self, returncode: int, events: Sequence[AgentEvent], stderr: str) -> AgentResult:
        return judge(returncode, events, stderr, now=self._clock(), program=self.program)


def create_provider(settings: Mapping[str, Any]) -> ClaudeCodeProvider:
    """The ``claude-code`` factory: ``settings`` is the provider's config section."""
    return ClaudeCodeProvider(read_settings(NAME, settings))


@hookimpl
def tmops_register_providers() -> Iterable[ProviderSpec]:
    return [
        ProviderSpec(
            name=NAME,
            factory=create_provider,
            description="Claude Code in headless mode (claude -p, stream-json)",
            version_args=("--version",),
            # its settings, gateways and config folder (ANTHROPIC_BASE_URL, CLAUDE_CODE_...)
            env_names=("CLAUDE_CONFIG_DIR",),
            env_prefixes=("ANTHROPIC_", "CLAUDE_CODE_"),
            is_default=True,  # the provider tmops runs when the config names none
        )
    ]
