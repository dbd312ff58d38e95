"""The tmops command line: versions, plugins, config check/show, user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from click.testing import CliRunner, Result

from tmops_core.config import Config, ProviderConfig, to_data
from tmops_core.surfaces.cli import cli

from .conftest import MakeDist

TMOPS = str(Path(sys.executable).with_name("tmops"))


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_version_names_tmops_and_its_contract() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("tmops 0.1.0 (tmops-hookspecs 0.1.0, tmops-plugins 0.1.0)")


def test_plugins_lists_name_distribution_version_and_registrations() -> None:
    result = run("plugins")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "REGISTERS"]
    jsonl = next(line for line in lines if line.startswith("jsonl"))
    assert jsonl.split() == ["jsonl", "tmops-plugins", "0.1.0", "sinks:", "jsonl"]


def test_plugins_json_is_machine_readable() -> None:
    data = json.loads(run("plugins", "--json").stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["console"]["registers"] == {"sinks": ["console"]}
    assert by_name["console"]["distribution"] == "tmops-plugins"
    assert data["skipped"] == []


def test_plugins_shows_skipped_plugins_with_the_reason(make_dist: MakeDist) -> None:
    make_dist("oops", {"oops": "oops_mod"}, {"oops_mod": "import no_such_module_here\n"})
    result = run("plugins")
    assert result.exit_code == 0
    assert "skipped:" in result.stdout
    assert "oops: failed to import oops_mod: ModuleNotFoundError" in result.stdout
    data = json.loads(run("plugins", "--json").stdout)
    assert data["skipped"][0]["name"] == "oops"


def test_plugins_reports_when_none_are_loaded() -> None:
    result = run("plugins", env={"TMOPS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "(no plugins loaded)" in result.stdout


def test_config_check_passes_on_defaults() -> None:
    result = run("config", "check")
    assert result.exit_code == 0
    assert "built-in defaults" in result.stdout


def test_config_check_finds_tmops_yaml_in_the_working_directory() -> None:
    write_config(Path("tmops.yaml"), "features:\n  concurrent_limit: 2\n")
    result = run("config", "check")
    assert result.exit_code == 0
    assert "config OK:" in result.stdout
    assert "tmops.yaml" in result.stdout


def test_config_check_exits_2_with_every_error_and_its_path(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.yaml",
        "features:\n  concurrent_limit: '5'\n  default_phases: abc\n"
        "telemetry:\n  level: loud\nbogus: 1\n",
    )
    result = run("--config", str(config), "config", "check")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    for expected in (
        "@ $.features.concurrent_limit",
        "@ $.features.default_phases",
        "@ $.telemetry.level",
        "unknown key 'bogus'",
    ):
        assert expected in result.stderr


def test_config_check_reports_problems_that_need_the_plugins(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        "telemetry:\n  outputs:\n    nowhere: true\n    file: 7\n"
        "plugins:\n  settings:\n    not-installed: {a: 1}\n",
    )
    result = run("--config", str(config), "config", "check")
    assert result.exit_code == 2
    assert "no sink named 'nowhere' is registered" in result.stderr
    assert "@ $.telemetry.outputs.nowhere" in result.stderr
    assert "@ $.telemetry.outputs.file" in result.stderr
    assert "@ $.plugins.settings.not-installed" in result.stderr


def test_config_check_warns_about_skipped_plugins(make_dist: MakeDist) -> None:
    make_dist("oops", {"oops": "oops_mod"}, {"oops_mod": "raise ValueError('bad')\n"})
    result = run("config", "check")
    assert result.exit_code == 0
    assert "warning: plugin oops was skipped" in result.stderr


def test_config_show_prints_the_effective_config_with_secrets_redacted(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        "providers:\n  claude-code:\n    command: claude\n    env:\n"
        "      ANTHROPIC_API_KEY: ${SECRET_FOR_TEST}\n      ANTHROPIC_BASE_URL: http://gw\n",
    )
    env = {"SECRET_FOR_TEST": "sk-ant-very-secret"}
    shown = run("--config", str(config), "config", "show", env=env)
    assert shown.exit_code == 0
    assert "sk-ant-very-secret" not in shown.stdout
    data = yaml.safe_load(shown.stdout)
    provider = data["providers"]["claude-code"]
    assert provider["env"] == {
        "ANTHROPIC_API_KEY": "***redacted***",
        "ANTHROPIC_BASE_URL": "http://gw",
    }
    assert data["features"]["concurrent_limit"] == 1
    as_json = json.loads(run("--config", str(config), "config", "show", "--json", env=env).stdout)
    assert as_json == data


def test_a_missing_config_file_is_one_clear_message(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "nope.yaml"), "config", "check")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: cannot read config file")
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from tmops_hookspecs import ConfigError

    with pytest.raises(ConfigError):
        run("--debug", "--config", str(tmp_path / "nope.yaml"), "config", "check")


def test_plugin_commands_are_added_on_demand(make_dist: MakeDist) -> None:
    make_dist(
        "greeter",
        {"greeter": "greeter_mod"},
        {
            "greeter_mod": """
            import click
            from tmops_hookspecs import hookimpl

            @hookimpl
            def tmops_register_commands(cli):
                @cli.command()
                def greet():
                    \"\"\"Say hello.\"\"\"
                    click.echo("hello from a plugin")
            """
        },
    )
    assert run("greet").stdout == "hello from a plugin\n"
    assert "greet" in run("--help").stdout


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.stderr


def test_help_still_works_with_a_broken_config() -> None:
    write_config(Path("tmops.yaml"), "features: [1]\n")
    result = run("--help")
    assert result.exit_code == 0
    assert "plugins" in result.stdout


def test_the_installed_script_reports_user_errors_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "loose.yaml"
    config.write_text("features: {}\n")
    config.chmod(0o666)
    result = subprocess.run(
        [TMOPS, "--config", str(config), "config", "check"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TMOPS_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "writable by every user" in result.stderr
    assert f"chmod o-w {config}" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_cross_references_phases_providers_and_permission_modes(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        "providers:\n  claude-code:\n    permission_mode: yolo\n"
        "features:\n  default_provider: claude_cod\n"
        "  default_phases: [orchestrator, tester, implementer, testr]\n",
    )
    result = run("--config", str(config), "config", "check")
    assert result.exit_code == 2
    assert "no installed plugin provides the phase 'testr'" in result.stderr
    assert "@ $.features.default_phases[3]" in result.stderr
    assert "no installed provider is named 'claude_cod'" in result.stderr
    assert "@ $.features.default_provider" in result.stderr
    assert "permission_mode must be one of" in result.stderr
    assert "'yolo' @ $.providers.claude-code" in result.stderr
    assert "3 error(s)" in result.stderr


def test_config_check_warns_about_a_section_of_a_provider_not_installed(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml", "providers:\n  cursor-agent:\n    command: cursor-agent\n"
    )
    result = run("--config", str(config), "config", "check")
    assert result.exit_code == 0
    warning = "warning: providers.cursor-agent configures a provider that is not installed"
    assert warning in result.stderr


def _model_keys(model: type[Any], prefix: str = "") -> set[str]:
    """Every key path of an attrs config class, nested sections included."""
    keys = set()
    for field in attrs.fields(attrs.resolve_types(model)):
        if field.name == "options":  # an open section's other keys (its plugin's), no key itself
            continue
        path = f"{prefix}{field.name}"
        keys.add(path)
        if attrs.has(field.type):
            keys |= _model_keys(field.type, f"{path}.")
    return keys


def _shown_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(f"{prefix}{key}")
        if isinstance(value, dict) and prefix.count(".") < 1:  # sections, not their mappings
            keys |= _shown_keys(value, f"{prefix}{key}.")
    return keys


def test_config_show_of_a_minimal_file_shows_every_key_with_its_default(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", "features: {max_retries: 5}\n")
    shown = run("--config", str(config), "config", "show", "--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert _model_keys(Config) <= _shown_keys(data)
    assert data["features"]["max_retries"] == 5
    assert data["features"]["concurrent_limit"] == 1
    defaults = to_data(Config())
    assert data["paths"] == defaults["paths"]
    assert data["telemetry"] == defaults["telemetry"]
    # the default provider runs with its built-in settings: they are shown, every key of them
    provider = data["providers"]["claude-code"]
    # every common key; the provider's own keys (``options``) are shown beside them, none here
    assert set(provider) == {field.name for field in attrs.fields(ProviderConfig)} - {"options"}
    assert provider["permission_mode"] == "acceptEdits"
    assert provider["timeout_s"] == 3600
