"""docs/operations.md is held to the code: every tmops command it shows parses with the real
CLI (the command exists, each option is one of its options), every alert it names is in the
example rules, every config key it names is one `tmops config show` knows, and it has a
runbook for each incident users meet."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import attrs
import click
import pytest
import yaml

from tmops_core.config import Config, ProviderConfig, to_data
from tmops_core.surfaces.cli import cli

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGE = (DOCS / "operations.md").read_text(encoding="utf-8")


def _invocations() -> list[list[str]]:
    """The argv of every `tmops ...` in the page's code: fenced blocks, inline code and the
    systemd units' ExecStart lines."""
    found: list[list[str]] = []
    snippets = re.findall(r"```[a-z]*\n(.*?)```", PAGE, flags=re.S)
    snippets += re.findall(r"`([^`\n]*tmops [^`\n]*)`", PAGE)
    for snippet in snippets:
        for text in snippet.splitlines():
            line = text.split("#", 1)[0].removeprefix("ExecStart=")
            words = shlex.split(line) if "tmops " in line else []
            for index, word in enumerate(words):
                if word == "tmops" or word.endswith("/bin/tmops"):
                    found.append(words[index + 1 :])
                    break
    return found


def _check(argv: list[str]) -> None:
    """Parse argv the way click would, down the command groups, without running anything."""
    command: click.Command = cli
    words = list(argv)
    while words:
        word = words.pop(0)
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            names = {n for p in command.params for n in getattr(p, "opts", [])}
            assert option in names, f"`{' '.join(argv)}`: {command.name} has no {option}"
            param = next(p for p in command.params if option in getattr(p, "opts", []))
            if not getattr(param, "is_flag", False) and "=" not in word:
                words.pop(0)
        elif isinstance(command, click.Group) and word in command.commands:
            command = command.commands[word]
        elif isinstance(command, click.Group):
            pytest.fail(f"`{' '.join(argv)}`: no command {word!r}")


def test_the_page_shows_tmops_commands_and_each_one_parses() -> None:
    invocations = _invocations()
    assert len(invocations) >= 15
    named = {argv[0] for argv in invocations if argv and not argv[0].startswith("-")}
    assert {"mcp", "backup", "cleanup", "doctor", "status", "resume", "logs"} <= named
    for argv in invocations:
        _check(argv)


def test_the_systemd_unit_serves_http_on_loopback_with_the_project() -> None:
    exec_start = re.search(r"^ExecStart=(.*tmops mcp .*)$", PAGE, flags=re.M)
    assert exec_start is not None
    argv = shlex.split(exec_start.group(1))
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "--http" in argv
    assert "--workspace" in argv


def test_every_alert_the_page_names_is_an_example_rule() -> None:
    rules = yaml.safe_load((DOCS / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"]}
    named = set(re.findall(r"`(Tmops[A-Za-z]+)`", PAGE))
    assert named, "the runbooks start from the alerts"
    assert named <= alerts, named - alerts


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    keys = {prefix} if prefix else set()
    for key, value in tree.items():
        keys |= _keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def test_every_config_key_the_page_names_exists() -> None:
    known = _keys(to_data(Config()))
    named = set(re.findall(r"`((?:features|server|telemetry|paths|plugins)\.[a-z_.]+)`", PAGE))
    assert named
    for key in named:
        assert key in known or key.startswith("telemetry.outputs."), key
    provider = set(re.findall(r"`providers\.<name>\.([a-z_]+)`", PAGE))
    assert provider <= {field.name for field in attrs.fields(ProviderConfig)}


@pytest.mark.parametrize(
    "incident",
    ["A stuck run", "A usage limit", "A full disk", "An engine crash", "A budget reached"],
)
def test_there_is_a_runbook_for(incident: str) -> None:
    section = re.search(rf"^### {incident}\n(.*?)(?=^### |\Z)", PAGE, flags=re.M | re.S)
    assert section is not None, incident
    body = section.group(1)
    assert "**Noticed by**" in body
    assert "**Act.**" in body
