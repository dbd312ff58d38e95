"""The ``command`` provider: any program as an agent, from an argv template in the config.

This is how other agent CLIs, wrappers and scripts plug in without writing a plugin::

    providers:
      command:
        command: /usr/local/bin/my-agent
        args: ["--task", "{prompt}", "--system", "{role_instructions}", "--dir", "{working_dir}"]

Each ``args`` item is one argv item, filled with ``str.format_map``: a placeholder never splits
an item and no shell ever sees it, so a prompt with quotes, newlines, ``;`` or ``$()`` arrives
as it was written. Write ``{{`` and ``}}`` for literal braces. Placeholders: see
:data:`PLACEHOLDERS` (``{checkpoint_dir}`` is the first extra directory, ``{allowed_tools}``
the phase's tools joined by commas, ``{resume_session_id}`` and ``{max_turns}`` are empty when
unset). A prompt that may start with ``-`` is safest after a ``--`` item, if the program
understands one.

Output: a line in Claude Code's stream-json shape is read as the ``claude-code`` provider reads
it (so a script can report its session id, cost and a result with the same mapping of errors);
any other non-empty line is a progress event. Without a stream-json result the exit code
decides: 0 succeeded, above 0 failed, below 0 (a signal) crashed. Like every provider this one
is PURE: the core runs the program.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

from tmops_hookspecs import (
    AgentEvent,
    AgentRequest,
    AgentResult,
    ConfigError,
    Invocation,
    Outcome,
    ProviderSpec,
    hookimpl,
)

from .claude_code import ProviderSettings, read_settings
from .claude_stream import (
    decode_stream_line,
    describe_exit,
    events_from_message,
    judge,
    stderr_tail,
)

__all__ = ["PLACEHOLDERS", "CommandProvider", "create_provider", "tmops_register_providers"]

NAME = "command"
#: The names an ``args`` item may use, each as ``{name}``.
PLACEHOLDERS = (
    "prompt",
    "role_instructions",
    "feature",
    "run",
    "phase",
    "working_dir",
    "checkpoint_dir",
    "resume_session_id",
    "max_turns",
    "allowed_tools",
)
#: The ``type`` values of Claude Code's stream-json lines.
_STREAM_TYPES = frozenset({"system", "assistant", "user", "result"})
_LINE_LIMIT = 1000


def _check_template(index: int, item: str, provider: str) -> None:
    shown = item if len(item) <= 60 else item[:59] + "…"
    where = f"provider '{provider}': args[{index}] {shown!r}"
    hint = f"placeholders: {', '.join('{' + name + '}' for name in PLACEHOLDERS)}; "
    hint += "write {{ and }} for literal braces"
    try:
        fields = list(string.Formatter().parse(item))
    except ValueError as exc:
        raise ConfigError(f"{where} is not a valid template: {exc}", hint=hint) from None
    for _literal, field, spec, conversion in fields:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            raise ConfigError(f"{where} uses an unknown placeholder {{{field}}}", hint=hint)
        if spec or conversion:
            raise ConfigError(
                f"{where}: placeholder {{{field}}} takes no conversion or format", hint=hint
            )


class CommandProvider:
    """Runs ``command`` with the ``args`` template filled from the request."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        name: str = NAME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.command:
            raise ConfigError(
                f"provider '{name}' needs 'command': the program to run",
                hint=f"set providers.{name}.command (and its args template) in tmops.yaml",
            )
        for index, item in enumerate(settings.args):
            _check_template(index, item, name)
        self.settings = settings
        self.command: str = settings.command
        #: config ``args`` items this provider ignores (none: the template is used as written)
        self.ignored_args: tuple[str, ...] = ()
        self._clock = clock

    @property
    def can_resume(self) -> bool:
        """Only a template that passes ``{resume_session_id}`` can continue a session; without
        it a retry must run the role afresh with the whole prompt."""
        return any("{resume_session_id}" in item for item in self.settings.args)

    @property
    def program(self) -> str:
        return PurePath(self.command).name or self.command

    def build_invocation(self, request: AgentRequest) -> Invocation:
        values = {
            "prompt": request.prompt,
            "role_instructions": request.role_instructions,
            "feature": request.feature,
            "run": request.run,
            "phase": request.phase,
            "working_dir": str(request.working_dir),
            "checkpoint_dir": str(request.extra_dirs[0]) if request.extra_dirs else "",
            "resume_session_id": request.resume_session_id or "",
            "max_turns": str(request.max_turns or self.settings.max_turns or ""),
            "allowed_tools": ",".join(request.allowed_tools),
        }
        argv = [self.command, *(item.format_map(values) for item in self.settings.args)]
        return Invocation(argv=argv, env=dict(self.settings.env))

    def parse_line(self, line: str) -> Iterable[AgentEvent]:
        message = decode_stream_line(line)
        if message is not None and message["type"] in _STREAM_TYPES:
            return events_from_message(message)
        text = line.strip()
        if not text:
            return []
        clipped = text if len(text) <= _LINE_LIMIT else text[: _LINE_LIMIT - 1] + "…"
        return [AgentEvent(kind="progress", message=clipped)]

    def finish(self, returncode: int, events: Sequence[AgentEvent], stderr: str) -> AgentResult:
        if any(event.kind == "result" for event in events):
            return judge(returncode, events, stderr, now=self._clock(), program=self.program)
        session = next((event.session_id for event in reversed(events) if event.session_id), None)
        if returncode == 0:
            last = next((event.message for event in reversed(events) if event.message), "")
            message = f"{self.program} exited 0" + (f": {last}" if last else "")
            return AgentResult(outcome=Outcome.SUCCEEDED, session_id=session, message=message)
        tail = stderr_tail(stderr) or "nothing on stderr"
        if returncode < 0:
            return AgentResult(
                outcome=Outcome.CRASHED,
                session_id=session,
                message=f"{self.program} was {describe_exit(returncode)}; stderr: {tail}",
            )
        return AgentResult(
            outcome=Outcome.FAILED,
            session_id=session,
            message=f"{self.program} exited with code {returncode}; stderr: {tail}",
        )


def create_provider(settings: Mapping[str, Any]) -> CommandProvider:
    """The ``command`` factory: ``settings`` is the provider's config section."""
    return CommandProvider(read_settings(NAME, settings))


@hookimpl
def tmops_register_providers() -> Iterable[ProviderSpec]:
    return [
        ProviderSpec(
            name=NAME,
            factory=create_provider,
            description="any program, from an argv template (stream-json output understood)",
        )
    ]
