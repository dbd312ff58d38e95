"""Plugins are found without importing importlib.metadata: the entry points read from the
installed distributions are the ones importlib.metadata finds, shadowing included."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from tests.conftest import MakeDist
from tmops_core.entry_points import entry_points


def _theirs(group: str) -> list[tuple[str, str, str | None, str | None]]:
    return sorted(
        (ep.name, ep.value, ep.dist.name if ep.dist else None, ep.dist.version if ep.dist else None)
        for ep in importlib.metadata.entry_points(group=group)
    )


def _mine(group: str) -> list[tuple[str, str, str | None, str | None]]:
    return sorted(
        (ep.name, ep.value, ep.dist.name if ep.dist else None, ep.dist.version if ep.dist else None)
        for ep in entry_points(group)
    )


@pytest.mark.parametrize("group", ["tmops", "console_scripts", "pytest11"])
def test_the_installed_entry_points_are_those_importlib_metadata_finds(group: str) -> None:
    assert _mine(group) == _theirs(group)


def test_a_new_distribution_is_found_and_loads(make_dist: MakeDist) -> None:
    make_dist("tmops-extra", {"extra": "extra_plugin:PLUGIN"}, {"extra_plugin": "PLUGIN = 42\n"})
    assert _mine("tmops") == _theirs("tmops")
    (found,) = [ep for ep in entry_points("tmops") if ep.name == "extra"]
    assert found.dist is not None
    assert (found.dist.name, found.dist.version) == ("tmops-extra", "0.1.0")
    assert found.load() == 42


def test_the_first_copy_of_a_distribution_on_the_path_wins(
    make_dist: MakeDist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist("tmops-twice", {"first": "first_plugin"}, {"first_plugin": "X = 1\n"})
    later = tmp_path / "later"
    info = later / "tmops_twice-0.2.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tmops-twice\nVersion: 0.2.0\n")
    (info / "entry_points.txt").write_text("[tmops]\nsecond = second_plugin\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(later)])
    names = {ep.name for ep in entry_points("tmops")}
    assert "first" in names
    assert "second" not in names
    assert _mine("tmops") == _theirs("tmops")
