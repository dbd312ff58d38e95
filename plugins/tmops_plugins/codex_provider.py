"""The ``codex`` provider: OpenAI's Codex CLI in headless mode (``codex exec --json``).

PURE like the other providers: it builds an argv list, reads stdout lines and judges the exit
(:mod:`tmops_plugins.codex_stream`). Checked against the real CLI (``@openai/codex`` 0.171.0):

- ``codex exec --json --sandbox <mode> -C <worktree> --add-dir <dir> -- <prompt>``; the
  exec-level options go BEFORE ``resume <thread_id>``, which continues a session.
- Codex has no flag to add to the system prompt, so the role's instructions follow the tmops
  prompt in the one prompt it takes (the prompt's first line still names the role).
- It has no turn limit: ``max_turns`` is not passed, tmops' ``timeout_s`` bounds a session.
- ``permission_mode`` picks the sandbox: ``plan`` is ``read-only``, ``bypassPermissions`` is
  ``danger-full-access``, anything else ``workspace-write`` (the worktree and ``--add-dir``).

The API key and base URL come from the environment and config (``OPENAI_API_KEY``,
``CODEX_HOME`` with its ``config.toml``, or ``-c`` overrides in ``args``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from tmops_hookspecs import (
    AgentEvent,
    AgentRequest,
    AgentResult,
    Invocation,
    ProviderSpec,
    hookimpl,
)

from .claude_code import ProviderSettings, read_settings
from .codex_stream import judge_codex, parse_codex_line

__all__ = ["ENV_PREFIXES", "CodexProvider", "create_provider", "tmops_register_providers"]

NAME = "codex"
#: The environment Codex reads: its API key and base URL, and its home (config, sessions).
ENV_PREFIXES = ("OPENAI_", "CODEX_")
_SANDBOX = {"plan": "read-only", "bypassPermissions": "danger-full-access"}


class CodexProvider:
    """Builds ``codex exec --json`` invocations and reads their JSONL output."""

    #: ``codex exec resume <thread_id>`` continues a session.
    can_resume = True

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    @property
    def program(self) -> str:
        return self.settings.command or "codex"

    def build_invocation(self, request: AgentRequest) -> Invocation:
        sandbox = _SANDBOX.get(self.settings.permission_mode, "workspace-write")
        argv = [self.program, "exec", "--json", "--sandbox", sandbox]
        # --flag=value throughout: a value starting with "-" is never taken for a flag
        argv += [f"--cd={request.working_dir}"]
        argv += [f"--add-dir={path}" for path in request.extra_dirs]
        if self.settings.model:
            argv += [f"--model={self.settings.model}"]
        argv += list(self.settings.args)
        if request.resume_session_id:
            argv += ["resume", request.resume_session_id]
        prompt = request.prompt
        if request.role_instructions.strip():
            prompt = f"{prompt}\n\n{request.role_instructions}"
        argv += ["--", prompt]
        return Invocation(argv=argv, env=dict(self.settings.env))

    def parse_line(self, line: str) -> Iterable[AgentEvent]:
        return parse_codex_line(line)

    def finish(self, returncode: int, events: Sequence[AgentEvent], stderr: str) -> AgentResult:
        return judge_codex(returncode, events, stderr, program=self.program)


def create_provider(settings: Mapping[str, Any]) -> CodexProvider:
    """The ``codex`` factory: ``settings`` is the provider's config section."""
    return CodexProvider(read_settings(NAME, settings))


@hookimpl
def tmops_register_providers() -> Iterable[ProviderSpec]:
    about = "OpenAI Codex CLI in headless mode (codex exec --json)"
    spec = ProviderSpec(
        name=NAME, factory=create_provider, description=about, env_prefixes=ENV_PREFIXES
    )
    return [attrs.evolve(spec, version_args=("--version",))]
