"""Every config key does something: the documented keys are the model's, plugin settings reach
their plugin, and the seed's keys tmops does not read are refused with what to do."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from click.testing import CliRunner

from tmops_core.config import Config, ProviderConfig
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.operations import Service
from tmops_core.surfaces.cli import cli
from tmops_hookspecs import ConfigError, ValidatorSpec, hookimpl

from .config_support import load_error, problem_paths, write_file
from .conftest import REPO, MakeDist

pytestmark = pytest.mark.usefixtures("no_config_env")


def _documented_sections() -> dict[str, Any]:
    """The YAML block of docs/configuration.md's "Sections", every key with its default."""
    text = (REPO / "docs" / "configuration.md").read_text()
    block = re.search(r"^## Sections\n+```yaml\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert block, "docs/configuration.md needs its ## Sections yaml block"
    data: dict[str, Any] = yaml.safe_load(block.group(1))
    return data


def _fields(model: type[Any]) -> set[str]:
    return {field.name for field in attrs.fields(model)}


def test_the_documented_keys_are_the_keys_of_the_model() -> None:
    documented = _documented_sections()
    assert set(documented) == _fields(Config)
    for section, value in documented.items():
        # resolved: under `from __future__ import annotations` a field's type is a string
        model = attrs.fields_dict(attrs.resolve_types(Config))[section].type
        if attrs.has(model):  # ``options``: an open section's other keys, its plugin's own
            assert set(value) == _fields(model) - {"options"}, section
    # every provider key is documented on the first provider, and nothing else is
    # (``options`` is no key: it holds the section's other keys, the provider's own)
    common = _fields(ProviderConfig) - {"options"}
    assert set(documented["providers"]["claude-code"]) == common
    for name, provider in documented["providers"].items():
        assert set(provider) <= common, name


@pytest.mark.parametrize(
    ("key", "what_to_do"),
    [
        ("checkpoints", "checkpoints are always in .tmops/<feature>/runs/<run>/checkpoints"),
        ("tmops_tools", "set paths.init_script to its path"),
    ],
)
def test_a_retired_paths_key_is_a_config_error_naming_it(
    tmp_path: Path, key: str, what_to_do: str
) -> None:
    error = load_error(tmp_path, f"paths:\n  {key}: ./somewhere\n  init_timeout: 30\n")
    assert problem_paths(error) == [f"$.paths.{key}"]
    assert f"paths.{key} is no longer supported: " in error.problems[0]
    assert what_to_do in error.problems[0]
    assert "remove the key" in error.problems[0]


# -- plugins.settings reach the plugin they name ------------------------------------------


class _Strictness:
    """A plugin whose validator is registered only when its settings ask for it."""

    def __init__(self) -> None:
        self.seen: list[Mapping[str, Any]] = []

    @hookimpl
    def tmops_configure(self, settings: Mapping[str, Any]) -> None:
        if set(settings) - {"strict"}:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(settings))}")
        self.seen.append(settings)

    @hookimpl
    def tmops_register_validators(self) -> list[ValidatorSpec]:
        if not self.seen[-1].get("strict"):
            return []
        return [ValidatorSpec(name="strict", validate=lambda checkpoint, context: [])]


def test_each_plugin_gets_its_own_section_before_it_registers() -> None:
    plugin, other = _Strictness(), _Strictness()
    plugins = create_plugin_manager(
        autoload=False,
        extra=[("strictness", plugin), ("other", other)],
        settings={"strictness": {"strict": True}},
    )
    assert plugin.seen == [{"strict": True}]
    assert other.seen == [{}]  # no section: an empty one
    assert plugins.validators()["strict"].plugin == "strictness"


def test_settings_a_plugin_refuses_skip_it_and_fail_config_check(make_dist: MakeDist) -> None:
    make_dist(
        "tmops-strictness",
        {"strictness": "strictness_mod"},
        {
            "strictness_mod": """
                from tmops_hookspecs import ConfigError, hookimpl

                @hookimpl
                def tmops_configure(settings):
                    if settings.get("strict") not in (None, True, False):
                        raise ConfigError("'strict' must be true or false")
            """
        },
    )
    config = write_file(
        Path.cwd() / "tmops.yaml", "plugins:\n  settings:\n    strictness: {strict: maybe}\n", 0o600
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "config", "check"])
    assert result.exit_code == 2, result.output
    assert (
        "plugin 'strictness' refused its settings: 'strict' must be true or false "
        "@ $.plugins.settings.strictness"
    ) in result.stderr
    service = Service.load(config)
    try:
        assert "strictness" not in service.plugins.names()
    finally:
        service.close()


def test_a_providers_own_keys_reach_its_plugin_which_checks_them(make_dist: MakeDist) -> None:
    make_dist(
        "tmops-sandboxed",
        {"sandboxed": "sandboxed_mod"},
        {
            "sandboxed_mod": """
                from tmops_hookspecs import ConfigError, ProviderSpec, hookimpl
                from tmops_plugins.command_provider import create_provider

                def factory(settings):
                    own = dict(settings["options"])
                    if own.pop("sandbox", "none") not in ("none", "strict"):
                        where = "$.providers.sandboxed.sandbox"
                        raise ConfigError("bad", [f"must be none or strict @ {where}"])
                    return create_provider({**settings, "options": own})

                @hookimpl
                def tmops_register_providers():
                    return [ProviderSpec(name="sandboxed", factory=factory)]
            """
        },
    )
    text = (
        "providers:\n"
        "  sandboxed: {command: /bin/true, sandbox: strict, timeout_s: 9}\n"
        "  claude_code: {timeout_s: 9, sandbox: strict}\n"
    )
    config = write_file(Path.cwd() / "tmops.yaml", text, 0o600)
    show = CliRunner().invoke(cli, ["--config", str(config), "config", "show"])
    assert show.exit_code == 0, show.output
    shown = yaml.safe_load(show.stdout)["providers"]
    assert shown["sandboxed"]["sandbox"] == "strict"  # beside the common keys, as written
    assert shown["sandboxed"]["timeout_s"] == 9
    assert "options" not in shown["sandboxed"]
    check = CliRunner().invoke(cli, ["--config", str(config), "config", "check"])
    assert check.exit_code == 2, check.output
    # the provider that knows the key takes it; the one that does not refuses it, at its path
    assert "@ $.providers.sandboxed" not in check.stderr
    assert (
        "unknown key 'sandbox' for provider 'claude-code' @ $.providers.claude_code.sandbox"
    ) in check.stderr
    bad = write_file(
        Path.cwd() / "bad.yaml", "providers: {sandboxed: {command: x, sandbox: loose}}\n", 0o600
    )
    refused = CliRunner().invoke(cli, ["--config", str(bad), "config", "check"])
    assert "must be none or strict @ $.providers.sandboxed.sandbox" in refused.stderr
