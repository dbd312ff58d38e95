"""README's command table is true for every command: each command the CLI has (hidden ones
aside) has a row, each of its options is named in that row, and the `tmops mcp` row names every
tool the server lists."""

from __future__ import annotations

import re
from pathlib import Path

import click

from tmops_core.surfaces.cli import cli

from .mcp_support import TOOLS

README = Path(__file__).resolve().parent.parent / "README.md"


def _rows() -> dict[str, str]:
    """The command table's rows by their command path (``config check``, ``start``...)."""
    rows = {}
    for line in README.read_text().splitlines():
        found = re.match(r"\| `tmops ([a-z][a-z ]*?)(?: [A-Z\[-].*?)?` \|", line)
        if found:
            rows[found.group(1)] = line
    return rows


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """tmops' own commands (a plugin's, added to the group by an earlier test, are the
    plugin's to document)."""
    found: dict[str, click.Command] = {}
    for name, command in sorted(group.commands.items()):
        module = getattr(command.callback, "__module__", "") or ""
        if command.hidden or not (module.startswith("tmops_core.") or command is cli):
            continue
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{prefix}{name} "))
        else:
            found[f"{prefix}{name}"] = command
    return found


def test_every_command_and_option_is_in_the_readme_table() -> None:
    rows = _rows()
    commands = _commands(cli)
    assert set(commands) <= set(rows), sorted(set(commands) - set(rows))
    for name, command in commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                longest = max(param.opts, key=len)
                assert longest in rows[name], f"`tmops {name}` row does not name {longest}"


def test_the_mcp_row_names_every_tool() -> None:
    row = _rows()["mcp"]
    assert all(f"`{tool}`" in row for tool in TOOLS), sorted(t for t in TOOLS if t not in row)
