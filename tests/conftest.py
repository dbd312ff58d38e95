"""Shared fixtures: a clean tmops environment per test and fake installed distributions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

_TMOPS_ENV = (
    "TMOPS_CONFIG",
    "TMOPS_DISABLE_PLUGINS",
    "TMOPS_DISABLE_PLUGIN_AUTOLOAD",
)


@pytest.fixture(autouse=True)
def clean_tmops_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts in an empty folder with no tmops variables set."""
    for name in _TMOPS_ENV:
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


MakeDist = Callable[..., Path]


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Install a fake distribution (modules + entry points in group ``tmops``) on sys.path.

    This goes through the real importlib.metadata entry-point machinery, as pip-installed
    plugins do.
    """
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def make(name: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        lines = ["[tmops]", *(f"{ep} = {target}" for ep, target in entry_points.items())]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        return site

    yield make
    for module in created:
        sys.modules.pop(module, None)


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` (the tests' own calls, as a user would type them)."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def make_repo(path: Path) -> Path:
    """A real git repository (branch ``main``, one commit) at ``path``."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "tmops tests")
    git(path, "config", "user.email", "tests@tmops.invalid")
    git(path, "config", "commit.gpgsign", "false")
    (path / "README.md").write_text("hello\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "initial commit")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git repository in ``tmp_path / "repo"``, outside the test's working directory."""
    return make_repo(tmp_path / "repo")
