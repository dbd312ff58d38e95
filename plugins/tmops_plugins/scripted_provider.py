"""The ``scripted`` provider: the scripted local agent (:mod:`tmops_plugins.scripted_agent`).

No model and no key: a script plays each role, speaking ``claude -p``'s flags and stream-json,
so ``tmops demo`` and the tests run the whole workflow offline. It is a provider like any other,
chosen by name (``features.default_provider: scripted`` or ``tmops demo``); it runs the agent
with the Python that runs tmops, through the ``command`` provider's argv template. Its config
section takes the common keys; ``command`` and ``args`` replace the program and template.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from tmops_hookspecs import ProviderSpec, hookimpl

from .claude_code import read_settings
from .command_provider import CommandProvider

__all__ = ["SCRIPTED_ARGS", "SPEC", "create_provider", "tmops_register_providers"]

NAME = "scripted"
#: The argv after the program: the agent module and the flags it reads (see its docstring).
SCRIPTED_ARGS: tuple[str, ...] = (
    "-m", "tmops_plugins.scripted_agent",
    "-p", "{prompt}",
    "--output-format", "stream-json",
    "--verbose",
    "--append-system-prompt", "{role_instructions}",
    "--add-dir", "{checkpoint_dir}",
)  # fmt: skip


def create_provider(settings: Mapping[str, Any]) -> CommandProvider:
    """The ``scripted`` factory: the section's ``command``/``args`` default to the agent."""
    checked = read_settings(NAME, settings)
    command = checked.command or sys.executable
    args = checked.args or SCRIPTED_ARGS
    return CommandProvider(attrs.evolve(checked, command=command, args=args), name=NAME)


#: What this module registers; its state folder, faults and delays (TMOPS_SCRIPTED_STATE_DIR...)
#: are set in the provider's env config, never taken from tmops' own environment.
SPEC = ProviderSpec(
    name=NAME,
    factory=create_provider,
    description="the scripted local agent: no model, no API key, a script plays each role",
)


@hookimpl
def tmops_register_providers() -> Iterable[ProviderSpec]:
    return [SPEC]
