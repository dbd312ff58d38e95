"""The tmops exception family.

Every error a user, a config file or a plugin can cause is a :class:`TmopsError`: its message says
what was wrong and its ``hint`` what to do about it. The CLI shows these without a traceback and
the MCP server returns them as ``isError`` results. Anything else escaping tmops is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ConfigError",
    "FeatureError",
    "PluginError",
    "ProviderError",
    "TmopsError",
    "WorkspaceError",
]


class TmopsError(Exception):
    """A problem the user can fix; ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(TmopsError):
    """The configuration is invalid; ``problems`` holds every error as ``message @ $.path``."""

    exit_code = 2

    def __init__(
        self, message: str, problems: Iterable[str] = (), *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems: tuple[str, ...] = tuple(problems)

    def __str__(self) -> str:
        lines = [self.message, *(f"  {problem}" for problem in self.problems)]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class PluginError(TmopsError):
    """A plugin failed to load, registered something invalid, or clashes with another plugin."""


class ProviderError(TmopsError):
    """An agent provider could not build an invocation or understand its agent's output."""


class CheckpointError(TmopsError):
    """A checkpoint file is missing, unsafe or malformed."""


class FeatureError(TmopsError):
    """A feature name is invalid or names no known feature."""


class WorkspaceError(TmopsError):
    """The project on disk (git, ``.tmops/``, permissions) is not in a state tmops can work with."""
