"""The ``opencode`` provider: OpenCode in headless mode (``opencode run --format json``).

PURE like the other providers: it builds an argv list, reads stdout lines and judges the exit
(:mod:`tmops_plugins.opencode_stream`). Checked against the real CLI (``opencode-ai``
1.18.33):

- ``opencode run --format=json --model=<provider>/<model> --title=<title>``, the prompt on
  stdin: a prompt given as arguments is joined with spaces and one that holds a space is
  wrapped in quotes, stdin reaches the model as it is. ``--session=<id>`` continues a session
  started in the same folder.
- OpenCode has no flag to add to the system prompt, so the role's instructions follow the
  tmops prompt (its first line still names the role); a resumed session has them already.
- Headless, a permission OpenCode would ask for is refused, and editing outside the project
  folder is one: ``OPENCODE_PERMISSION`` allows the request's extra folders (the checkpoint
  folder). ``permission_mode`` ``bypassPermissions`` passes ``--auto`` (every permission not
  denied in OpenCode's config is granted), ``plan`` runs OpenCode's read-only ``plan`` agent.
- There is no turn-limit flag: ``max_turns`` is not passed, ``timeout_s`` bounds a session.
- ``--title`` names the session after the feature and phase, so OpenCode asks the model for no
  title (one model call less).

Its own keys in ``providers.opencode`` (checked here, each refused at its
``$.providers.opencode.<key>``): ``agent``, the OpenCode agent to run (``--agent``), and
``config``, a mapping passed as ``OPENCODE_CONFIG_CONTENT`` (OpenCode's config, merged over the
user's: custom providers and their ``baseURL``, models and prices; ``{env:NAME}`` reads a key
from the environment).
"""

from __future__ import annotations

import json
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

from .claude_code import ProviderSettings, read_settings
from .opencode_stream import judge_opencode, parse_opencode_line

__all__ = [
    "ENV_NAMES",
    "ENV_PREFIXES",
    "OpenCodeOptions",
    "OpenCodeProvider",
    "create_provider",
    "tmops_register_providers",
]

NAME = "opencode"
#: OpenCode's own settings (config, permissions, switches such as OPENCODE_DISABLE_*)
ENV_PREFIXES = ("OPENCODE_",)
#: where OpenCode keeps its config, sessions and cache, and the keys of the model providers
#: people use most; any other key is added with ``features.env_allowlist`` or the ``env`` key
ENV_NAMES = (
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENROUTER_API_KEY",
    "GOOGLE_GENERATIVE_AI_API_KEY",
)
#: set for every session (the config's ``env`` may say otherwise): an update in the middle of
#: a run would change the agent between its phases
_DEFAULT_ENV = {"OPENCODE_DISABLE_AUTOUPDATE": "1"}
_OWN_KEYS = frozenset({"agent", "config"})


@attrs.frozen
class OpenCodeOptions:
    """``providers.opencode``'s own keys."""

    agent: str | None = None
    #: the ``config`` mapping as JSON, for ``OPENCODE_CONFIG_CONTENT``
    config: str | None = None


def _refuse(key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(
        f"provider '{NAME}': '{key}' must be {expected}",
        [f"got {type(value).__name__} {value!r} @ $.providers.{NAME}.{key}"],
        hint=f"fix providers.{NAME}.{key} in tmops.yaml",
    )


def _plain(value: object) -> object:
    """The config's read-only mappings and tuples as the dicts and lists JSON writes."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def read_options(options: Mapping[str, Any]) -> OpenCodeOptions:
    """Check the keys :data:`_OWN_KEYS` names; the others are left to :func:`read_settings`."""
    agent = options.get("agent")
    if agent is not None and (not isinstance(agent, str) or not agent.strip() or "\0" in agent):
        raise _refuse("agent", "the name of an OpenCode agent (build, plan, or your own)", agent)
    config = options.get("config")
    if config is not None:
        if not isinstance(config, Mapping):
            raise _refuse("config", "a mapping (OpenCode's opencode.json)", config)
        try:
            config_text = json.dumps(_plain(config))
        except (TypeError, ValueError):
            raise _refuse("config", "a mapping JSON can hold", config) from None
    return OpenCodeOptions(agent=agent, config=config_text if config is not None else None)


def _permission(request: AgentRequest) -> str:
    """``OPENCODE_PERMISSION``: the request's extra folders may be read and written."""
    allowed = {f"{path}/**": "allow" for path in request.extra_dirs}
    allowed.update({str(path): "allow" for path in request.extra_dirs})
    return json.dumps({"external_directory": allowed})


class OpenCodeProvider:
    """Builds ``opencode run --format json`` invocations and reads their JSON lines."""

    #: ``opencode run --session <id>`` continues a session.
    can_resume = True

    def __init__(
        self,
        settings: ProviderSettings,
        options: OpenCodeOptions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.options = options
        self._clock = clock

    @property
    def program(self) -> str:
        return self.settings.command or "opencode"

    def build_invocation(self, request: AgentRequest) -> Invocation:
        # --flag=value throughout: a value starting with "-" is never taken for a flag
        argv = [self.program, "run", "--format=json"]
        if self.settings.model:
            argv.append(f"--model={self.settings.model}")
        agent = "plan" if self.settings.permission_mode == "plan" else self.options.agent
        if agent:
            argv.append(f"--agent={agent}")
        if self.settings.permission_mode == "bypassPermissions":
            argv.append("--auto")
        argv.append(f"--title=tmops {request.feature} {request.phase} ({request.run})")
        if request.resume_session_id:
            argv.append(f"--session={request.resume_session_id}")
        argv += self.settings.args
        prompt = request.prompt
        if request.role_instructions.strip() and not request.resume_session_id:
            prompt = f"{prompt}\n\n{request.role_instructions}"
        env = {**_DEFAULT_ENV, "OPENCODE_PERMISSION": _permission(request)}
        if self.options.config is not None:
            env["OPENCODE_CONFIG_CONTENT"] = self.options.config
        env.update(self.settings.env)
        return Invocation(argv=argv, env=env, stdin=prompt)

    def parse_line(self, line: str) -> Iterable[AgentEvent]:
        return parse_opencode_line(line)

    def finish(self, returncode: int, events: Sequence[AgentEvent], stderr: str) -> AgentResult:
        return judge_opencode(returncode, events, stderr, now=self._clock(), program=self.program)


def create_provider(settings: Mapping[str, Any]) -> OpenCodeProvider:
    """The ``opencode`` factory: ``settings`` is the provider's config section."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"provider '{NAME}': settings must be a mapping, got {settings!r}")
    options = dict(settings.get("options") or {})
    own = read_options({key: options.pop(key) for key in _OWN_KEYS if key in options})
    common = read_settings(NAME, {**settings, "options": options})
    if common.model is not None and "/" not in common.model.strip("/"):
        raise _refuse("model", "<provider>/<model>, as OpenCode names it", common.model)
    if own.config is not None and "OPENCODE_CONFIG_CONTENT" in common.env:
        raise ConfigError(
            f"provider '{NAME}': both 'config' and env OPENCODE_CONFIG_CONTENT are set",
            [f"one of them must go @ $.providers.{NAME}.config"],
            hint="keep OpenCode's config in one place: the config key or the variable",
        )
    return OpenCodeProvider(common, own)


@hookimpl
def tmops_register_providers() -> Iterable[ProviderSpec]:
    return [
        ProviderSpec(
            name=NAME,
            factory=create_provider,
            description="OpenCode in headless mode (opencode run --format json)",
            version_args=("--version",),
            env_names=ENV_NAMES,
            env_prefixes=ENV_PREFIXES,
        )
    ]
