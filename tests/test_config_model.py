"""The tmops configuration: the seed's example config and the frozen, read-only model."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from tmops_core.config import Config, parse_config, redacted, to_data

from .config_support import load_error, load_text, problem_paths

pytestmark = pytest.mark.usefixtures("no_config_env")

SEED_CONFIG = """\
server:
  name: "tmops-mcp"
  version: "1.0.0"
  workspace_id: "default"
providers:
  claude_code:
    enabled: true
    command: "claude"
    args: ["-p", "--resume", "--output-format", "json"]
    instructions_dir: "./tmops_v6_portable/instance_instructions"
features:
  concurrent_limit: 1
  default_phases: ["orchestrator", "tester", "implementer", "verifier"]
  checkpoint_timeout: 300
telemetry:
  enabled: true
  level: "info"
  outputs:
    console: true
    file: "./logs/tmops.log"
paths:
  tmops_tools: "./tmops_v6_portable/tmops_tools"
  checkpoints: ".tmops/{feature}/runs/initial/checkpoints"
  instructions: "./tmops_v6_portable/instance_instructions"
"""


# --------------------------------------------------------------------------------------------
# The seed's example and the model
# --------------------------------------------------------------------------------------------


#: the seed's keys tmops does not read (see RETIRED_KEYS): refused, each with what to do
SEED_RETIRED = ('  tmops_tools: "./tmops_v6_portable/tmops_tools"\n',
                '  checkpoints: ".tmops/{feature}/runs/initial/checkpoints"\n')  # fmt: skip
SEED_WITHOUT_RETIRED = SEED_CONFIG.replace(SEED_RETIRED[0], "").replace(SEED_RETIRED[1], "")


def test_the_seed_example_is_refused_only_for_the_keys_tmops_does_not_read(
    tmp_path: Path,
) -> None:
    error = load_error(tmp_path, SEED_CONFIG, name="tmops.yaml")
    assert sorted(problem_paths(error)) == ["$.paths.checkpoints", "$.paths.tmops_tools"]
    assert all("is no longer supported" in problem for problem in error.problems)


def test_seed_example_config_loads_without_those_keys(tmp_path: Path) -> None:
    config = load_text(tmp_path, SEED_WITHOUT_RETIRED, name="tmops.yaml")

    assert list(config.providers) == ["claude_code"]
    claude = config.providers["claude_code"]
    assert claude.command == "claude"
    assert claude.args == ("-p", "--resume", "--output-format", "json")
    assert config.features.concurrent_limit == 1
    assert config.features.checkpoint_timeout == 300
    assert config.telemetry.outputs["console"] is True
    assert config.telemetry.outputs["file"] == "./logs/tmops.log"
    assert config.paths.instructions == "./tmops_v6_portable/instance_instructions"
    assert config.server.name == "tmops-mcp"


@pytest.fixture
def seed_config(tmp_path: Path) -> Config:
    return load_text(tmp_path, SEED_WITHOUT_RETIRED, name="tmops.yaml")


def test_config_attributes_cannot_be_assigned(seed_config: Config) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        seed_config.server = seed_config.server  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        seed_config.features.concurrent_limit = 5  # type: ignore[misc]


def test_config_mapping_fields_are_read_only(seed_config: Config) -> None:
    with pytest.raises(TypeError):
        seed_config.providers["other"] = seed_config.providers["claude_code"]  # type: ignore[index]
    with pytest.raises(TypeError):
        seed_config.telemetry.outputs["console"] = False  # type: ignore[index]
    with pytest.raises(TypeError):
        seed_config.providers["claude_code"].env["X"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        seed_config.plugins.settings["x"] = {}  # type: ignore[index]
    assert seed_config.telemetry.outputs["console"] is True


def test_nested_mappings_of_the_config_are_read_only() -> None:
    config = parse_config(
        {
            "telemetry": {"outputs": {"jsonl": {"path": "events.jsonl"}}},
            "plugins": {"settings": {"security-review": {"strict": True}}},
        },
        env={},
    )

    with pytest.raises(TypeError):
        config.telemetry.outputs["jsonl"]["path"] = "/elsewhere"
    with pytest.raises(TypeError):
        config.plugins.settings["security-review"]["strict"] = False  # type: ignore[index]


def test_redacted_config_hides_secret_values_but_keeps_urls() -> None:
    config = parse_config(
        {
            "providers": {
                "claude_code": {
                    "env": {
                        "ANTHROPIC_API_KEY": "sk-secret-1",
                        "ANTHROPIC_BASE_URL": "https://proxy.example",
                    }
                }
            },
            "plugins": {
                "settings": {
                    "notify": {
                        "api_key": "secret-2",
                        "token": "secret-3",
                        "password": "secret-4",
                        "channel": "#ops",
                    }
                }
            },
        },
        env={},
    )

    shown = redacted(to_data(config))

    text = json.dumps(shown)
    for secret in ("sk-secret-1", "secret-2", "secret-3", "secret-4"):
        assert secret not in text
    env = shown["providers"]["claude_code"]["env"]
    assert env["ANTHROPIC_BASE_URL"] == "https://proxy.example"
    assert env["ANTHROPIC_API_KEY"] != "sk-secret-1"
    assert shown["plugins"]["settings"]["notify"]["channel"] == "#ops"
    assert shown["features"]["concurrent_limit"] == 1


def test_to_data_round_trips_through_parse_config(seed_config: Config) -> None:
    assert parse_config(to_data(seed_config), env={}) == seed_config
