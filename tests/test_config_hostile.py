"""The tmops configuration: hostile files are refused quickly, with a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tmops_core.config import MAX_CONFIG_BYTES, Config, load_config
from tmops_hookspecs import ConfigError

from .config_support import load_error, load_text, problem_paths, write_file

pytestmark = pytest.mark.usefixtures("no_config_env")

# Well under a second: a safety bound against pathological inputs, not a benchmark.
SAFETY_BOUND_S = 1.0


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
