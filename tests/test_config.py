"""The tmops configuration: discovery, ${VAR} expansion, strictness, hostile files, the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmops_core.config import (
    CONFIG_ENV,
    MAX_CONFIG_BYTES,
    Config,
    load_config,
    parse_config,
    redacted,
    to_data,
)
from tmops_hookspecs import ConfigError

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

# Well under a second: a safety bound against pathological inputs, not a benchmark.
SAFETY_BOUND_S = 1.0


@pytest.fixture(autouse=True)
def no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)


def write_file(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def load_text(tmp_path: Path, text: str | bytes, name: str = "given.yaml") -> Config:
    return load_config(write_file(tmp_path / name, text)).config


def load_error(tmp_path: Path, text: str | bytes, name: str = "given.yaml") -> ConfigError:
    path = write_file(tmp_path / name, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def problem_paths(error: ConfigError) -> list[str]:
    """The ``$.path`` of every problem; each problem must read ``message @ $.path``."""
    paths = []
    for problem in error.problems:
        message, sep, path = problem.rpartition(" @ ")
        assert sep, f"problem without a path: {problem!r}"
        assert message.strip(), f"problem without a message: {problem!r}"
        assert path.startswith("$"), problem
        paths.append(path)
    return paths


def problem_at(error: ConfigError, path: str) -> str:
    matches = [p for p in error.problems if p.endswith(f" @ {path}")]
    assert len(matches) == 1, f"expected one problem @ {path}, got {error.problems}"
    return matches[0]


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding both search-path configs, and the cwd of the test."""
    root = tmp_path / "project"
    write_file(root / "tmops.yaml", "server: {name: from-cwd-tmops-yaml}\n")
    write_file(root / ".tmops" / "config.yaml", "server: {name: from-dot-tmops}\n")
    monkeypatch.chdir(root)
    return root


def test_explicit_path_wins_over_env_and_search_paths(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = write_file(tmp_path / "env.yaml", "server: {name: from-env}\n")
    explicit = write_file(tmp_path / "explicit.yaml", "server: {name: from-explicit}\n")
    monkeypatch.setenv(CONFIG_ENV, str(from_env))

    loaded = load_config(explicit)

    assert loaded.source == explicit
    assert loaded.config.server.name == "from-explicit"


def test_env_variable_wins_over_search_paths(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = write_file(tmp_path / "env.yaml", "server: {name: from-env}\n")
    monkeypatch.setenv(CONFIG_ENV, str(from_env))

    loaded = load_config()

    assert loaded.source == from_env
    assert loaded.config.server.name == "from-env"


def test_tmops_yaml_in_cwd_wins_over_dot_tmops_config(project: Path) -> None:
    loaded = load_config()

    assert loaded.source is not None
    assert loaded.source.resolve() == (project / "tmops.yaml").resolve()
    assert loaded.config.server.name == "from-cwd-tmops-yaml"


def test_dot_tmops_config_is_used_when_no_tmops_yaml(project: Path) -> None:
    (project / "tmops.yaml").unlink()

    loaded = load_config()

    assert loaded.source is not None
    assert loaded.source.resolve() == (project / ".tmops" / "config.yaml").resolve()
    assert loaded.config.server.name == "from-dot-tmops"


def test_builtin_defaults_when_no_config_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-project"
    empty.mkdir()
    monkeypatch.chdir(empty)

    loaded = load_config()

    assert loaded.source is None
    assert loaded.config == Config()
    assert loaded.config.server.name == "tmops"


def test_explicit_path_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "tmops.yaml"

    with pytest.raises(ConfigError) as info:
        load_config(missing)

    assert str(missing) in info.value.message


def test_env_path_that_does_not_exist_is_an_error_not_a_fallback(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing.yaml"
    monkeypatch.setenv(CONFIG_ENV, str(missing))

    with pytest.raises(ConfigError) as info:
        load_config()

    assert str(missing) in info.value.message


# --------------------------------------------------------------------------------------------
# ${VAR} expansion
# --------------------------------------------------------------------------------------------


def test_variable_is_expanded_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMOPS_TEST_WS", "team-42")

    config = load_text(tmp_path, "server: {workspace_id: 'ws-${TMOPS_TEST_WS}'}\n")

    assert config.server.workspace_id == "ws-team-42"


def test_variable_default_is_used_when_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TMOPS_TEST_UNSET", raising=False)

    config = load_text(tmp_path, "server: {name: '${TMOPS_TEST_UNSET:-fallback}'}\n")

    assert config.server.name == "fallback"


def test_variable_default_is_ignored_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMOPS_TEST_SET", "actual")

    config = load_text(tmp_path, "server: {name: '${TMOPS_TEST_SET:-fallback}'}\n")

    assert config.server.name == "actual"


def test_missing_variable_without_default_is_reported_with_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TMOPS_TEST_MISSING", raising=False)

    error = load_error(tmp_path, "paths: {checkpoints: '${TMOPS_TEST_MISSING}/cp'}\n")

    assert problem_paths(error) == ["$.paths.checkpoints"]
    assert "TMOPS_TEST_MISSING" in error.problems[0]


def test_missing_variable_inside_a_list_is_reported_with_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TMOPS_TEST_MISSING", raising=False)

    error = load_error(
        tmp_path, "providers: {claude_code: {args: ['-p', '${TMOPS_TEST_MISSING}']}}\n"
    )

    assert problem_paths(error) == ["$.providers.claude_code.args[1]"]


def test_expanded_value_is_not_expanded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMOPS_TEST_OUTER", "${TMOPS_TEST_INNER}")
    monkeypatch.setenv("TMOPS_TEST_INNER", "should-not-appear")

    config = load_text(tmp_path, "server: {name: '${TMOPS_TEST_OUTER}'}\n")

    assert config.server.name == "${TMOPS_TEST_INNER}"


def test_double_dollar_is_a_literal_dollar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMOPS_TEST_SET", "expanded")

    config = load_text(tmp_path, "server: {name: 'cost $$5', version: '$${TMOPS_TEST_SET}'}\n")

    assert config.server.name == "cost $5"
    assert config.server.version == "${TMOPS_TEST_SET}"


# --------------------------------------------------------------------------------------------
# Strictness
# --------------------------------------------------------------------------------------------


def test_string_is_not_accepted_for_an_int(tmp_path: Path) -> None:
    error = load_error(tmp_path, "features: {concurrent_limit: '5'}\n")

    assert "expected int" in problem_at(error, "$.features.concurrent_limit")


def test_string_is_not_split_into_a_list(tmp_path: Path) -> None:
    error = load_error(tmp_path, "features: {default_phases: abc}\n")

    assert "expected a list" in problem_at(error, "$.features.default_phases")


def test_boolean_is_not_accepted_for_an_int(tmp_path: Path) -> None:
    error = load_error(tmp_path, "features: {checkpoint_timeout: true}\n")

    assert "boolean" in problem_at(error, "$.features.checkpoint_timeout")


def test_number_is_not_accepted_for_a_string(tmp_path: Path) -> None:
    error = load_error(tmp_path, "server: {name: 5}\n")

    assert "expected str" in problem_at(error, "$.server.name")


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "serverz: {name: x}\n")

    assert "unknown key 'serverz'" in problem_at(error, "$")


def test_unknown_nested_key_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "features: {concurrency: 2}\n")

    assert "unknown key 'concurrency'" in problem_at(error, "$.features")


def test_section_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "paths: [a, b]\n")

    assert problem_paths(error) == ["$.paths"]


def test_provider_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "providers: {claude_code: claude}\n")

    assert problem_paths(error) == ["$.providers.claude_code"]


def test_wrong_types_inside_provider_args_and_env_are_refused(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        "providers:\n  claude_code:\n    args: ['-p', 3]\n    env: {DEBUG: 1}\n",
    )

    assert sorted(problem_paths(error)) == [
        "$.providers.claude_code.args[1]",
        "$.providers.claude_code.env.DEBUG",
    ]


def test_provider_args_given_as_a_string_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "providers: {claude_code: {args: '-p --resume'}}\n")

    assert "expected a list" in problem_at(error, "$.providers.claude_code.args")


def test_concurrent_limit_zero_keeps_the_validator_message(tmp_path: Path) -> None:
    error = load_error(tmp_path, "features: {concurrent_limit: 0}\n")

    assert problem_at(error, "$.features.concurrent_limit") == (
        "must be at least 1, got 0 @ $.features.concurrent_limit"
    )


def test_unknown_log_level_keeps_the_validator_message(tmp_path: Path) -> None:
    error = load_error(tmp_path, "telemetry: {level: loud}\n")

    problem = problem_at(error, "$.telemetry.level")
    assert "must be one of" in problem
    assert "'loud'" in problem


def test_every_error_of_a_document_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TMOPS_TEST_MISSING", raising=False)
    text = """\
server:
  name: 5
  colour: blue
providers:
  claude_code:
    args: [7, "-p"]
    env: {TOKEN: false}
features:
  concurrent_limit: "5"
  default_phases: abc
  checkpoint_timeout: 0
telemetry:
  level: loud
paths:
  checkpoints: "${TMOPS_TEST_MISSING}"
extra_section: {}
"""
    error = load_error(tmp_path, text)

    assert sorted(problem_paths(error)) == sorted(
        [
            "$",
            "$.server",
            "$.server.name",
            "$.providers.claude_code.args[0]",
            "$.providers.claude_code.env.TOKEN",
            "$.features.concurrent_limit",
            "$.features.default_phases",
            "$.features.checkpoint_timeout",
            "$.telemetry.level",
            "$.paths.checkpoints",
        ]
    )
    assert f"has {len(error.problems)} error(s)" in error.message
    rendered = str(error)
    assert all(problem in rendered for problem in error.problems)


# --------------------------------------------------------------------------------------------
# Hostile files
# --------------------------------------------------------------------------------------------


def test_world_writable_config_is_refused(tmp_path: Path) -> None:
    path = write_file(tmp_path / "tmops.yaml", "server: {name: x}\n", mode=0o666)

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert "writable by every user" in info.value.message
    assert f"chmod o-w {path}" in str(info.value)


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_config_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = write_file(tmp_path / "tmops.yaml", "server: {name: x}\n")
    os.chown(path, 65534, 65534)

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert "another user" in info.value.message
    assert "65534" in info.value.message


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        previous = name
    path = write_file(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")

    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    elapsed = time.perf_counter() - start

    assert "aliases are not allowed" in info.value.message
    assert elapsed < SAFETY_BOUND_S


def test_document_over_one_mebibyte_is_refused_quickly(tmp_path: Path) -> None:
    text = "server:\n  name: x\n# " + "x" * MAX_CONFIG_BYTES + "\n"
    path = write_file(tmp_path / "big.yaml", text)

    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    elapsed = time.perf_counter() - start

    assert "larger than 1 MiB" in info.value.message
    assert elapsed < SAFETY_BOUND_S


def test_document_of_exactly_one_mebibyte_is_read(tmp_path: Path) -> None:
    head = "server: {name: x}\n# "
    text = head + "x" * (MAX_CONFIG_BYTES - len(head) - 1) + "\n"
    assert len(text.encode()) == MAX_CONFIG_BYTES

    assert load_text(tmp_path, text).server.name == "x"


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "server:\n  name: a\n  name: b\n")

    assert "'name' appears twice" in error.message


def test_duplicate_top_level_sections_are_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, "server: {name: a}\nserver: {name: b}\n")

    assert "'server' appears twice" in error.message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("invalid-yaml", "server: [unclosed\n", "not valid YAML"),
        ("top-level-list", "- server\n- features\n", "must be a mapping"),
        ("top-level-scalar", "just a string\n", "must be a mapping"),
        ("deep-nesting", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("deep-mapping-nesting", "a: " + "{a: " * 100_000, "nested too deeply"),
        ("not-utf8", b"server:\n  name: \xff\xfe\n", "not UTF-8"),
        ("nul-byte", "server: {name: \x00}\n", "not valid YAML"),
        ("unknown-tag", "server: !!python/object:os.system {}\n", "not valid YAML"),
    ],
)
def test_malformed_file_gives_a_config_error(
    tmp_path: Path, name: str, content: str | bytes, expected: str
) -> None:
    path = write_file(tmp_path / f"{name}.yaml", content)

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert expected in info.value.message


@pytest.mark.parametrize("content", ["? [a, b]\n: 1\n", "? {a: 1}\n: 1\n"])
def test_complex_yaml_key_gives_a_config_error(tmp_path: Path, content: str) -> None:
    path = write_file(tmp_path / "complex-key.yaml", content)

    with pytest.raises(ConfigError):
        load_config(path)


def test_unknown_keys_of_mixed_types_give_a_config_error(tmp_path: Path) -> None:
    path = write_file(tmp_path / "mixed.yaml", "server: {1: x, colour: y}\n")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert problem_paths(info.value) == ["$.server"]


def test_directory_passed_as_config_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()

    with pytest.raises(ConfigError) as info:
        load_config(directory)

    assert str(directory) in info.value.message


def test_fifo_passed_as_config_is_refused_without_hanging(tmp_path: Path) -> None:
    # In a child process: if opening the FIFO blocked, only the child would hang.
    fifo = tmp_path / "tmops.yaml"
    os.mkfifo(fifo, 0o600)
    code = (
        "import sys\n"
        "from tmops_core.config import load_config\n"
        "from tmops_hookspecs import ConfigError\n"
        "try:\n"
        "    load_config(sys.argv[1])\n"
        "except ConfigError as exc:\n"
        "    print(exc.message)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code, str(fifo)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "not a regular file" in result.stdout


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == Config()


# --------------------------------------------------------------------------------------------
# The seed's example and the model
# --------------------------------------------------------------------------------------------


def test_seed_example_config_loads(tmp_path: Path) -> None:
    config = load_text(tmp_path, SEED_CONFIG, name="tmops.yaml")

    assert list(config.providers) == ["claude_code"]
    claude = config.providers["claude_code"]
    assert claude.command == "claude"
    assert claude.args == ("-p", "--resume", "--output-format", "json")
    assert config.features.concurrent_limit == 1
    assert config.features.checkpoint_timeout == 300
    assert config.telemetry.outputs["console"] is True
    assert config.telemetry.outputs["file"] == "./logs/tmops.log"
    assert config.paths.checkpoints == ".tmops/{feature}/runs/initial/checkpoints"
    assert config.server.name == "tmops-mcp"


@pytest.fixture
def seed_config(tmp_path: Path) -> Config:
    return load_text(tmp_path, SEED_CONFIG, name="tmops.yaml")


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


# --------------------------------------------------------------------------------------------
# Property: any data gives a Config or a ConfigError, nothing else
# --------------------------------------------------------------------------------------------

_FIELD_NAMES = [
    *(field.name for field in attrs.fields(Config)),
    "name",
    "version",
    "workspace_id",
    "enabled",
    "command",
    "args",
    "instructions_dir",
    "env",
    "concurrent_limit",
    "default_phases",
    "checkpoint_timeout",
    "max_retries",
    "level",
    "environment",
    "outputs",
    "tmops_tools",
    "checkpoints",
    "instructions",
    "disabled",
    "settings",
]
_TEXT = st.text(max_size=12) | st.sampled_from(
    ["info", "loud", "${HOME}", "${TMOPS_NOPE}", "${TMOPS_NOPE:-x}", "$$", "5", "true", ""]
)
_SCALARS = st.none() | st.booleans() | st.integers() | _TEXT
_KEYS = st.sampled_from(_FIELD_NAMES) | st.text(max_size=8)
_DATA = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=16,
)
_SECTION = st.dictionaries(_KEYS, _DATA, max_size=6)
_SECTIONS: dict[str, st.SearchStrategy[Any]] = {
    "server": _SECTION | _DATA,
    "providers": st.dictionaries(st.text(max_size=8), _SECTION | _DATA, max_size=3) | _DATA,
    "features": _SECTION | _DATA,
    "telemetry": _SECTION | _DATA,
    "paths": _SECTION | _DATA,
    "plugins": st.fixed_dictionaries(
        {}, optional={"disabled": _DATA, "settings": st.dictionaries(_KEYS, _DATA | _SECTION)}
    )
    | _DATA,
}
_DOCUMENTS = (
    st.fixed_dictionaries({}, optional=_SECTIONS)
    | st.dictionaries(_KEYS, _DATA, max_size=6)
    | _DATA
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_DOCUMENTS)
def test_parse_config_gives_a_config_or_a_config_error(document: Any) -> None:
    outcome: Config | ConfigError
    try:
        outcome = parse_config(document, env={"HOME": "/home/someone"})
    except ConfigError as exc:
        outcome = exc
    assert isinstance(outcome, Config | ConfigError)
    if isinstance(outcome, ConfigError):
        assert outcome.problems or outcome.message
