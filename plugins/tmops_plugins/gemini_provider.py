"""The ``gemini`` provider: Gemini CLI in headless mode (``gemini -p``, stream-json output).

The provider is PURE: it builds an argv list, reads stdout lines and judges the exit (the
reading and judging are :mod:`tmops_plugins.gemini_stream`'s). Checked against the real CLI
0.61.0:

- ``--approval-mode`` sets what the agent may do unasked. Headless, a tool that needs
  approval is refused, so a role that must run the tests needs ``yolo``. The config's
  ``permission_mode`` takes Gemini's names (``default``, ``auto_edit``, ``yolo``, ``plan``) or
  Claude Code's, mapped to the nearest (``bypassPermissions`` and the default ``acceptEdits``
  to ``yolo``: in ``auto_edit`` the agent could not run the tests).
- The CLI has no option for extra system instructions (``GEMINI_SYSTEM_MD`` replaces its whole
  system prompt), so the role's instructions go first in the prompt.
- The prompt is passed as ``--prompt=<text>``: yargs would read a prompt starting with ``-``
  as a flag.
- ``--resume <session id>`` continues a session the same project folder started.
- There is no turn-limit flag (the limit is the ``model.maxSessionTurns`` setting), so
  ``max_turns`` is not passed; exit 53 still reports a turn limit hit.

The CLI reads its key and endpoint from the environment (``GEMINI_API_KEY``,
``GOOGLE_GEMINI_BASE_URL``, ``GEMINI_CLI_HOME`` for its settings folder); put them in the
provider's ``env`` config, or export them: :data:`ENV_PREFIXES` lets them through to the agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

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
from .gemini_stream import judge, parse_stream_line

__all__ = [
    "APPROVAL_MODES",
    "ENV_PREFIXES",
    "GeminiProvider",
    "create_provider",
    "tmops_register_providers",
]

NAME = "gemini"
#: Environment variables the CLI reads (key, endpoint, project, its home and telemetry).
ENV_PREFIXES = ("GEMINI_", "GOOGLE_")
#: What ``--approval-mode`` accepts.
APPROVAL_MODES = frozenset({"default", "auto_edit", "yolo", "plan"})
#: Claude Code's permission modes, read as the nearest approval mode.
_FROM_CLAUDE = {
    "acceptEdits": "yolo",
    "bypassPermissions": "yolo",
    "dontAsk": "yolo",
    "auto": "yolo",
    "manual": "default",
}


def approval_mode(permission_mode: str) -> str:
    """The ``--approval-mode`` for a config ``permission_mode``; ConfigError when none fits."""
    if permission_mode in APPROVAL_MODES:
        return permission_mode
    if permission_mode in _FROM_CLAUDE:
        return _FROM_CLAUDE[permission_mode]
    raise ConfigError(
        f"provider '{NAME}': permission_mode must be one of "
        f"{', '.join(sorted(APPROVAL_MODES))}, got {permission_mode!r}",
        hint="yolo lets the headless agent edit files and run the tests",
    )


class GeminiProvider:
    """Builds ``gemini -p`` invocations and reads their stream-json output."""

    #: ``gemini --resume <session>`` continues a session, so a retry sends only the nudge.
    can_resume = True

    def __init__(
        self, settings: ProviderSettings, mode: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.approval_mode = mode
        self._clock = clock

    @property
    def program(self) -> str:
        return self.settings.command or "gemini"

    def build_invocation(self, request: AgentRequest) -> Invocation:
        argv = [self.program, "--output-format", "stream-json"]
        argv += ["--approval-mode", self.approval_mode, "--skip-trust"]
        if self.settings.model:
            argv.append(f"--model={self.settings.model}")
        if request.extra_dirs:
            argv.append("--include-directories=" + ",".join(str(p) for p in request.extra_dirs))
        if request.resume_session_id:
            argv.append(f"--resume={request.resume_session_id}")
        prompt = request.prompt
        if request.role_instructions and not request.resume_session_id:
            prompt = f"{request.role_instructions}\n\n{prompt}"
        argv += [*self.settings.args, f"--prompt={prompt}"]
        return Invocation(argv=argv, env=dict(self.settings.env))

    def parse_line(self, line: str) -> Iterable[AgentEvent]:
        return parse_stream_line(line)

    def finish(self, returncode: int, events: Sequence[AgentEvent], stderr: str) -> AgentResult:
        return judge(returncode, events, stderr, now=self._clock(), program=self.program)


def create_provider(settings: Mapping[str, Any]) -> GeminiProvider:
    """The ``gemini`` factory: ``settings`` is the provider's config section."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"provider '{NAME}': settings must be a mapping, got {settings!r}")
    mode = settings.get("permission_mode", "yolo")
    if not isinstance(mode, str):
        raise ConfigError(f"provider '{NAME}': permission_mode must be a string, got {mode!r}")
    common = read_settings(NAME, {k: v for k, v in settings.items() if k != "permission_mode"})
    return GeminiProvider(common, approval_mode(mode))


@hookimpl
def tmops_register_providers() -> Iterable[ProviderSpec]:
    return [
        ProviderSpec(
            name=NAME,
            factory=create_provider,
            description="Gemini CLI in headless mode (gemini -p, stream-json)",
            version_args=("--version",),
            env_prefixes=ENV_PREFIXES,
        )
    ]
