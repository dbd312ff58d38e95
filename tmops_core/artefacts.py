"""What counts as a build artefact: the files tmops never commits, .gitignore or not.

Owns the list (byte code, the caches of test and lint tools, virtual environments, coverage
data, egg-info, installed node modules) in two equal forms: git pathspecs that leave artefacts
out of ``git add`` (:func:`exclude_pathspecs`) or pick them out of the index
(:func:`artefact_pathspecs`), and a matcher of repository paths (:func:`is_artefact`). It runs
no process and touches no file; the one fact it cannot see in a name, that a folder is a
virtual environment, comes from the caller as the folders holding ``pyvenv.cfg``.

A folder called ``venv`` is not an artefact by its name alone: it is also a package name (the
standard library has one). A virtual environment of any name is found by its ``pyvenv.cfg``,
which ``python -m venv`` and virtualenv 20+ always write; ``.venv`` is one by name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

__all__ = [
    "ARTEFACT_DIRS",
    "ARTEFACT_DIR_SUFFIXES",
    "ARTEFACT_FILES",
    "VENV_MARKER",
    "artefact_pathspecs",
    "exclude_pathspecs",
    "exclude_patterns",
    "is_artefact",
    "venv_roots",
]

#: Folders that hold only what tools made, wherever they are.
ARTEFACT_DIRS = (
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".tox",
    ".nox",
    ".venv",
    # Installed packages, rebuilt from package.json and its lock file; a project that vendors
    # them commits them itself.
    "node_modules",
)
#: Folders by the end of their name: the metadata setuptools writes next to the code.
ARTEFACT_DIR_SUFFIXES = (".egg-info",)
#: Files by name (fnmatch, case-sensitive): byte code and coverage data.
ARTEFACT_FILES = ("*.pyc", "*.pyo", ".coverage", ".coverage.*")
#: The file every virtual environment has at its root.
VENV_MARKER = "pyvenv.cfg"


def _globs() -> list[str]:
    globs = [f"**/{name}/**" for name in ARTEFACT_DIRS]
    globs += [f"**/*{suffix}/**" for suffix in ARTEFACT_DIR_SUFFIXES]
    globs += [f"**/{pattern}" for pattern in ARTEFACT_FILES]
    return globs


def exclude_pathspecs(venvs: Iterable[str] = ()) -> list[str]:
    """Pathspecs that leave every artefact out (``git add --all -- . <these>``); ``venvs`` are
    the repository paths of the virtual environments (:func:`venv_roots`)."""
    return [f":(exclude,glob){glob}" for glob in _globs()] + [
        f":(exclude,literal){venv}" for venv in sorted(set(venvs))
    ]


def exclude_patterns() -> list[str]:
    """The artefact folders as ignore patterns (``git ls-files --others --exclude=<each>``), so
    that a search of untracked files never walks into them."""
    return [f"{name}/" for name in ARTEFACT_DIRS] + [
        f"*{suffix}/" for suffix in ARTEFACT_DIR_SUFFIXES
    ]


def artefact_pathspecs(venvs: Iterable[str] = ()) -> list[str]:
    """Pathspecs that match every artefact (``git reset -- <these>`` unstages them)."""
    return [f":(glob){glob}" for glob in _globs()] + [
        f":(literal){venv}" for venv in sorted(set(venvs))
    ]


def venv_roots(paths: Iterable[str]) -> set[str]:
    """The folders that are virtual environments, from repository paths of ``pyvenv.cfg`` files
    (``env/pyvenv.cfg`` gives ``env``; one at the root would make the whole tree one, so it is
    ignored)."""
    roots: set[str] = set()
    for path in paths:
        folder, _, name = path.rstrip("/").rpartition("/")
        if name == VENV_MARKER and folder:
            roots.add(folder)
    return roots


def is_artefact(path: str, venvs: Iterable[str] = ()) -> bool:
    """Whether the repository path ``path`` (``/``-separated, relative to the top) is a build
    artefact or lies inside one; ``venvs`` as for :func:`exclude_pathspecs`."""
    parts = path.strip("/").split("/")
    folders = parts[:-1]
    if any(p in ARTEFACT_DIRS or p.endswith(ARTEFACT_DIR_SUFFIXES) for p in folders):
        return True
    if any(fnmatch.fnmatchcase(parts[-1], pattern) for pattern in ARTEFACT_FILES):
        return True
    prefixes = {"/".join(parts[: i + 1]) for i in range(len(folders))}
    return not prefixes.isdisjoint(venvs)
