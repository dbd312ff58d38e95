"""The tmops configuration: strict types and keys, every problem reported with its path.

The property at the end: any data gives a ``Config`` or a ``ConfigError``, nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmops_core.config import Config, parse_config
from tmops_hookspecs import ConfigError

from .config_support import load_error, problem_paths

pytestmark = pytest.mark.usefixtures("no_config_env")


def problem_at(error: ConfigError, path: str) -> str:
    matches = [p for p in error.problems if p.endswith(f" @ {path}")]
    assert len(matches) == 1, f"expected one problem @ {path}, got {error.problems}"
    return matches[0]


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
  instructions: "${TMOPS_TEST_MISSING}"
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
            "$.paths.instructions",
        ]
    )
    assert f"has {len(error.problems)} error(s)" in error.message
    rendered = str(error)
    assert all(problem in rendered for problem in error.problems)


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
