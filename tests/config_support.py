"""Helpers shared by the tests of the tmops configuration (``test_config*.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmops_core.config import Config, load_config
from tmops_hookspecs import ConfigError


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
