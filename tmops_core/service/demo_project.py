"""The demo project: a scratch git repository and the spec of one small feature, ``slugify``.

``tmops demo`` runs the whole test-first workflow on it with the scripted local agent
(:mod:`tmops_plugins.scripted_agent`), and the tests use it the same way. The project is a
minimal Python package root: ``README.md``, ``pyproject.toml`` (pytest reads ``tests/`` and
imports modules from the repository root), an empty ``tests/__init__.py`` (git keeps no empty
folder) and a ``.gitignore``; on branch ``main`` with one commit, made with a local identity
(``tmops demo <demo@tmops.invalid>``) so that committing works on a machine with no git identity.

The feature asks for ``slug.py`` at the root with ``slugify(text: str) -> str``; the acceptance
criteria are exactly what the scripted tester tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import attrs

__all__ = ["DEMO_FEATURE", "DEMO_TASK_SPEC", "DemoProject", "create_demo_project"]

#: The name of the demo's feature (branch ``feature/slugify``).
DEMO_FEATURE = "slugify"

#: The TASK_SPEC.md text of the demo's feature.
DEMO_TASK_SPEC = """\
# Task Specification: slugify

## User Story
As a developer publishing articles, I want a `slugify` function that turns a title into a
URL-safe slug, so that every article gets a readable, predictable address.

## Acceptance Criteria
- [ ] Given "Hello World", when I call `slugify`, then I get "hello-world" (lower case, words
      joined by one dash).
- [ ] Given "Hello, World!", then I get "hello-world": punctuation is dropped.
- [ ] Given runs of spaces, underscores or dashes ("a  b__c--d"), then each run becomes a single
      dash ("a-b-c-d").
- [ ] Given leading or trailing separators ("  -Hello World_ "), then the slug has no leading or
      trailing dash ("hello-world").
- [ ] Given the empty string, then I get the empty string.
- [ ] Given accented letters ("Crème Brûlée"), then they become their plain ASCII letters
      ("creme-brulee").

## Technical Constraints
- Python 3.11, standard library only (no new dependency).
- The code lives in `slug.py` at the repository root and is used as
  `from slug import slugify`; the signature is `slugify(text: str) -> str`.
- The tests live in `tests/` and run with `python -m pytest -q` from the repository root.

## Definition of Done
- [ ] Every acceptance criterion has a test that failed before the code was written.
- [ ] All tests pass on branch feature/slugify.
- [ ] The verifier's review is recorded in 007-verify-complete.md.
"""

_README = """\
# tmops demo project

A scratch repository made by `tmops demo`. The scripted local agent (no AI model behind it)
adds a `slugify` function to it, test first: tests in `tests/`, code in `slug.py`.

Run the tests with `python -m pytest -q`.
"""

_PYPROJECT = """\
[project]
name = "tmops-demo"
version = "0.1.0"
description = "The scratch project of tmops demo"
requires-python = ">=3.11"

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
"""

_GITIGNORE = """\
__pycache__/
.pytest_cache/
"""

_FILES = {
    "README.md": _README,
    "pyproject.toml": _PYPROJECT,
    ".gitignore": _GITIGNORE,
    "tests/__init__.py": "",
}

_GIT_NAME = "tmops demo"
_GIT_EMAIL = "demo@tmops.invalid"
_GIT_TIMEOUT_S = 60


@attrs.frozen
class DemoProject:
    """A demo repository made by :func:`create_demo_project`."""

    #: The repository root (absolute).
    path: Path
    #: The feature to run on it (:data:`DEMO_FEATURE`).
    feature: str
    #: The feature's TASK_SPEC.md text (:data:`DEMO_TASK_SPEC`).
    task_spec: str


def _git(cwd: Path, *args: str) -> None:
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git is not installed or not on PATH; the demo project needs it")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        env.pop(name, None)
    done = subprocess.run(
        [git, *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_GIT_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")


def create_demo_project(path: Path) -> DemoProject:
    """Make the demo repository at ``path`` (created if missing; it must be empty).

    :raises FileExistsError: when ``path`` exists and is not an empty directory.
    :raises RuntimeError: when git is missing or one of its commands fails.
    """
    path = Path(path).absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty directory")
    path.mkdir(parents=True, exist_ok=True)
    for name, text in _FILES.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.name", _GIT_NAME)
    _git(path, "config", "user.email", _GIT_EMAIL)
    _git(path, "config", "commit.gpgsign", "false")
    _git(path, "add", "--", *_FILES)
    _git(path, "commit", "-q", "--no-verify", "-m", "chore: demo project for tmops")
    return DemoProject(path=path.resolve(), feature=DEMO_FEATURE, task_spec=DEMO_TASK_SPEC)
