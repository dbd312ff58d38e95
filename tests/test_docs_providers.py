"""docs/providers.md is held to the code: its table lists every built-in provider, the facts
it states about Claude Code, the command and the scripted providers are the modules' own, and
every snippet of "Writing a provider plugin" is the example provider's code, its names the
contract's fields, its config-check output what `tmops config check` prints."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import attrs
import pytest
import yaml

from tmops_core.plugins import ENTRY_POINT_GROUP
from tmops_hookspecs import PROJECT_NAME, AgentResult, Outcome, ProviderSpec
from tmops_plugins.claude_code import MANAGED_FLAGS, PERMISSION_MODES
from tmops_plugins.command_provider import PLACEHOLDERS
from tmops_plugins.scripted_provider import SCRIPTED_ARGS

from .conftest import REPO

PAGE = (REPO / "docs" / "providers.md").read_text(encoding="utf-8")
EXAMPLE = REPO / "examples" / "tmops-security-review"
#: where the snippets of "Writing a provider plugin" come from
SOURCES = [*sorted((EXAMPLE / "tmops_security_review").glob("*.py")), REPO / "tests" /
           "test_example_provider.py"]  # fmt: skip
TMOPS = str(Path(sys.executable).with_name("tmops"))


def _section(title: str) -> str:
    """The text under ``## title``, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", PAGE, flags=re.M | re.S)
    assert match is not None, f"docs/providers.md has no section {title!r}"
    return match.group(1)


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


WRITING = _section("Writing a provider plugin")


def _stripped(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    return any(
        haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1)
    )


def _builtin_providers() -> set[str]:
    """The providers of the modules plugins/pyproject.toml declares in the entry-point group."""
    project = tomllib.loads((REPO / "plugins" / "pyproject.toml").read_text())["project"]
    names: set[str] = set()
    for value in project["entry-points"][ENTRY_POINT_GROUP].values():
        module = importlib.import_module(value)
        register = getattr(module, "tmops_register_providers", None)
        names |= {spec.name for spec in register()} if register else set()
    return names


def test_the_table_lists_every_builtin_provider_and_only_them() -> None:
    table = re.search(r"^\| provider \| package / binary \|.*?\n\n", PAGE, flags=re.M | re.S)
    assert table is not None, "the intro table of the providers is missing"
    rows = re.findall(r"^\| `([a-z][a-z0-9_-]*)` \|", table.group(0), flags=re.M)
    builtin = _builtin_providers()
    assert {"claude-code", "command", "scripted"} <= builtin
    assert sorted(rows) == sorted(builtin)


def test_every_python_snippet_of_the_writing_section_is_the_examples_code() -> None:
    sources = {path: _stripped(path.read_text()) for path in SOURCES}
    snippets = _blocks(WRITING, "python")
    assert len(snippets) >= 7
    for snippet in snippets:
        # "..." stands for lines left out: each part between them is copied as it is
        for part in re.split(r"^\s*\.\.\.\s*$", snippet, flags=re.M):
            lines = _stripped(part)
            if lines:
                assert any(_contains(text, lines) for text in sources.values()), part


def test_the_entry_point_snippet_is_the_examples_and_the_group_is_tmops() -> None:
    [snippet] = _blocks(WRITING, "toml")
    declared = tomllib.loads(snippet)["project"]["entry-points"]
    example = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert declared == example["entry-points"]
    assert list(declared) == [PROJECT_NAME] == [ENTRY_POINT_GROUP]
    builtin = tomllib.loads((REPO / "plugins" / "pyproject.toml").read_text())["project"]
    assert ENTRY_POINT_GROUP in builtin["entry-points"]
    assert f"the group `{ENTRY_POINT_GROUP}`" in WRITING


def test_the_spec_table_names_every_field_of_provider_spec() -> None:
    table = re.search(r"^\| `ProviderSpec` field.*?\n\n", WRITING, flags=re.M | re.S)
    assert table is not None
    named = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", table.group(0), flags=re.M))
    fields = {name for pair in named for name in pair if name}
    assert fields == {field.name for field in attrs.fields(ProviderSpec)}


def test_every_outcome_and_every_result_field_is_explained() -> None:
    table = re.search(r"^\| `AgentResult.outcome`.*?\n\n", WRITING, flags=re.M | re.S)
    assert table is not None
    listed = set(re.findall(r"`([a-z_]+)`", table.group(0)))
    assert {outcome.value for outcome in Outcome} <= listed
    for field in attrs.fields(AgentResult):
        assert re.search(rf"`(?:AgentResult\.)?{field.name}`", WRITING), field.name


def test_the_config_check_output_shown_is_what_tmops_prints(tmp_path: Path) -> None:
    pytest.importorskip("tmops_security_review")
    [config] = [b for b in _blocks(WRITING, "yaml") if "security-review-agent" in b]
    assert "security-review-agent" in yaml.safe_load(config)["providers"]
    path = tmp_path / "tmops.yaml"
    path.write_text(config)
    path.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMOPS_")}
    result = subprocess.run(
        [TMOPS, "--config", str(path), "config", "check"],
        capture_output=True, text=True, check=False, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    [shown] = _blocks(WRITING, "text")
    printed = _stripped(result.stderr)
    for line in _stripped(shown):
        assert line in printed, (line, result.stderr)


def test_the_claude_code_facts_are_the_providers() -> None:
    claude = _section("Claude Code (`claude-code`)")
    modes = re.search(r"permission_mode: acceptEdits +# (.*)", claude)
    assert modes is not None
    assert set(modes.group(1).split(", ")) == PERMISSION_MODES
    dropped = re.search(r"Flags the provider sets itself are dropped.*?\):", claude, flags=re.S)
    assert dropped is not None
    flags = {f for item in re.findall(r"`([^`]+)`", dropped.group(0)) for f in item.split("/")}
    assert set(MANAGED_FLAGS) <= flags
    for name in ("CLAUDE_CONFIG_DIR", "`ANTHROPIC_`", "`CLAUDE_CODE_`"):
        assert name in claude
    from tmops_plugins.claude_code import tmops_register_providers

    [spec] = tmops_register_providers()
    assert spec.env_names == ("CLAUDE_CONFIG_DIR",)
    assert set(spec.env_prefixes) == {"ANTHROPIC_", "CLAUDE_CODE_"}


def test_the_command_placeholders_and_the_scripted_argv_are_the_modules() -> None:
    command = _section("Command (`command`)")
    placeholders = re.search(r"The\s+placeholders are (.*?);", command, flags=re.S)
    assert placeholders is not None
    assert set(re.findall(r"`\{(\w+)\}`", placeholders.group(1))) == set(PLACEHOLDERS)
    scripted = _section("Scripted (`scripted`)")
    flags = [item for item in SCRIPTED_ARGS if item.startswith("-")]
    words = scripted.split()
    assert all(flag in words for flag in flags), flags
    assert "tmops_plugins.scripted_agent" in words
