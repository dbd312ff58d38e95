"""Fuzzing the checkpoint parser and the config loader: hostile text in, no crash, no hang.

The parser never raises for content (it reads what it can and says why); the loader raises
only :class:`~tmops_hookspecs.ConfigError`, and refuses any unknown key.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tmops_core.checkpoints.parse import MAX_CHECKPOINT_BYTES, parse_checkpoint
from tmops_core.config import Config, load_config, parse_config, to_data
from tmops_hookspecs import ConfigError

from .conftest import fuzz_settings
from .mcp_strategies import ANY_JSON

pytestmark = pytest.mark.fuzz

#: one parse takes milliseconds; over this it is a hang (a regex that backtracks, say)
PARSE_TIMEOUT_S = 10

_CHECKPOINT_LINES = st.sampled_from(
    [
        "---", "...", "# Checkpoint: 001", "## Metrics", "## Git Commit", "## Blockers",
        "## Quality Score", "```", "~~~", "**Status:** COMPLETE", "**Key**: value",
        "- **Ready: YES**", "QUALITY_SCORE=8", "quality_score: 9/10", "coverage: 85%",
        "key: &a [1]", "*a", "key: !!python/object:os.system x", "- item", "? complex",
        "\ufeff", "\0", "\r", " " * 200, "*" * 500, ":" * 500, "#" * 100,
    ]
)  # fmt: skip
checkpoint_texts = st.one_of(
    st.text(max_size=2000),
    st.lists(st.one_of(_CHECKPOINT_LINES, st.text(max_size=80)), max_size=60).map("\n".join),
)


@contextmanager
def hang_guard(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (a hang, not a slow example)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds}s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-parse")


@given(text=checkpoint_texts, as_bytes=st.binary(max_size=64))
@fuzz_settings()
def test_checkpoint_parser_reads_any_text(scratch: Path, text: str, as_bytes: bytes) -> None:
    path = scratch / "001-fuzz.md"
    data = text.encode("utf-8", errors="surrogatepass") + as_bytes
    path.write_bytes(data)
    with hang_guard(PARSE_TIMEOUT_S):
        checkpoint = parse_checkpoint(path)
    assert checkpoint.size == len(data)
    assert len(checkpoint.body) <= MAX_CHECKPOINT_BYTES
    assert all(isinstance(v, str) for v in checkpoint.fields.values())


def test_checkpoint_parser_reads_a_huge_file_quickly(scratch: Path) -> None:
    path = scratch / "huge.md"
    path.write_bytes(b"**" + b"a:" * MAX_CHECKPOINT_BYTES)
    started = time.monotonic()
    with hang_guard(PARSE_TIMEOUT_S):
        checkpoint = parse_checkpoint(path)
    assert checkpoint.size == 2 + 2 * MAX_CHECKPOINT_BYTES
    assert time.monotonic() - started < PARSE_TIMEOUT_S


def refusal(load: Callable[[], object]) -> str | None:
    """The ConfigError's message (it must have one), or None when ``load`` takes the data;
    any other exception escapes: a crash."""
    try:
        load()
    except ConfigError as exc:
        return str(exc)
    return None


_KNOWN_KEYS = st.sampled_from(sorted(to_data(Config())))
_CONFIG_KEYS = st.one_of(_KNOWN_KEYS, st.text(max_size=12))
#: sections of anything, two levels deep: the depth of a tmops config
config_data = st.one_of(
    ANY_JSON,
    st.dictionaries(
        _CONFIG_KEYS,
        st.one_of(ANY_JSON, st.dictionaries(_CONFIG_KEYS, ANY_JSON, max_size=6)),
        max_size=6,
    ),
)


def _known_sections(data: object) -> dict[str, object]:
    """``data`` made into a mapping of the real sections (whatever their values)."""
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if key in to_data(Config())}


@given(data=config_data)
@fuzz_settings()
def test_config_parser_raises_only_config_errors(data: object) -> None:
    assert refusal(lambda: parse_config(data, env={})) != ""


@given(data=config_data, unknown=st.text(min_size=1, max_size=12))
@fuzz_settings()
def test_config_with_an_unknown_section_is_refused(data: object, unknown: str) -> None:
    sections = _known_sections(data)
    if unknown in to_data(Config()):
        unknown = f"x-{unknown}"
    with pytest.raises(ConfigError):
        parse_config({**sections, unknown: {}}, env={})


@given(
    text=st.one_of(
        st.text(max_size=500),
        config_data.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    )
)
@fuzz_settings()
def test_config_file_loader_raises_only_config_errors(scratch: Path, text: str) -> None:
    path = scratch / "tmops.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    os.chmod(path, 0o600)
    with hang_guard(PARSE_TIMEOUT_S):
        assert refusal(lambda: load_config(path, env={})) != ""
