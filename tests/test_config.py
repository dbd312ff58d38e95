"""The tmops configuration: discovery of the file and ${VAR} expansion.

Strictness and error reporting are in ``test_config_errors.py``, hostile files in
``test_config_hostile.py``, the seed's example and the model in ``test_config_model.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tmops_core.config import CONFIG_ENV, Config, load_config
from tmops_hookspecs import ConfigError

from .config_support import load_error, load_text, problem_paths, write_file

pytestmark = pytest.mark.usefixtures("no_config_env")


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

    error = load_error(tmp_path, "paths: {instructions: '${TMOPS_TEST_MISSING}/cp'}\n")

    assert problem_paths(error) == ["$.paths.instructions"]
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
