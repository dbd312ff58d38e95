"""tmops_core.git: the commit tmops makes of the work an agent left, never with build artefacts.

Real repositories WITHOUT a .gitignore (where `git add --all` once committed byte code), real
artefacts on disk: a virtual environment made by `python -m venv`, byte code made by
`compileall`, tool caches, coverage data. The list itself is tmops_core.artefacts'.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from tmops_core.artefacts import artefact_pathspecs, exclude_pathspecs, is_artefact, venv_roots
from tmops_core.git import Git

from .conftest import git, make_repo

WORK = {
    "slug.py": "def slugify(text):\n    return text\n",
    "tests/test_slug.py": "from slug import slugify\n",
    "src/venv/__init__.py": "# a package named venv is code, not a virtual environment\n",
}
ARTEFACTS = {
    "__pycache__/slug.cpython-311.pyc": b"\x00byte code",
    "tests/__pycache__/test_slug.cpython-311-pytest-8.pyc": b"\x00byte code",
    "old_style.pyc": b"\x00byte code",
    ".pytest_cache/v/cache/lastfailed": b"{}",
    ".mypy_cache/3.11/slug.meta.json": b"{}",
    ".ruff_cache/0.6.0/123": b"x",
    ".hypothesis/examples/abc": b"x",
    ".tox/py311/log": b"x",
    ".venv/lib/site.py": b"x",
    "node_modules/left-pad/index.js": b"x",
    ".coverage": b"SQLite format 3\x00",
    ".coverage.host.1234.abcd": b"SQLite format 3\x00",
    "slug.egg-info/PKG-INFO": b"Name: slug\n",
}


def write(root: Path, files: dict[str, str] | dict[str, bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def make_venv(path: Path) -> None:
    """A real virtual environment (no pip: only its layout matters here)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)


def commit(repo: Path, message: str) -> tuple[str | None, bool]:
    """tmops' commit of the work left in ``repo`` (branch main): HEAD, and whether it committed."""
    head, made = Git(repo).commit_work(
        message, branch="main", expected=None, guard=contextlib.nullcontext
    )
    return head, made is not None


def tree(repo: Path, rev: str = "HEAD") -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", rev).splitlines())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = make_repo(tmp_path / "project")
    assert not (path / ".gitignore").exists()
    return path


def test_the_work_is_committed_and_no_artefact_without_a_gitignore(repo: Path) -> None:
    write(repo, WORK)
    write(repo, ARTEFACTS)
    make_venv(repo / "tools-env")  # any name: found by its pyvenv.cfg
    before = tree(repo)

    head, committed = commit(repo, "tmops(x): tester work left uncommitted")

    assert committed
    assert head == git(repo, "rev-parse", "HEAD").strip()
    assert tree(repo) == before | set(WORK)
    # left on disk, untouched: tmops only chose what to commit
    assert all((repo / name).is_file() for name in ARTEFACTS)
    assert (repo / "tools-env" / "pyvenv.cfg").is_file()


def test_an_artefact_the_agent_staged_is_not_committed_and_stays_on_disk(repo: Path) -> None:
    write(repo, WORK)
    make_venv(repo / "tools-env")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "tests"], cwd=repo, check=True
    )  # real byte code in tests/__pycache__
    write(repo, {".coverage": b"SQLite format 3\x00"})
    git(repo, "add", "--all")  # what the role instructions forbid, done anyway
    staged = git(repo, "diff", "--cached", "--name-only").split()
    assert any("__pycache__" in path for path in staged)

    _, committed = commit(repo, "tmops(x): work left uncommitted")

    assert committed
    committed_paths = tree(repo)
    assert set(WORK) <= committed_paths
    assert not [path for path in committed_paths if is_artefact(path, {"tools-env"})]
    assert not [path for path in committed_paths if path.startswith("tools-env/")]
    assert git(repo, "diff", "--cached", "--name-only") == ""  # unstaged again
    assert list((repo / "tests" / "__pycache__").glob("*.pyc"))


def test_only_artefacts_left_means_no_commit(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    write(repo, ARTEFACTS)
    make_venv(repo / "tools-env")

    assert commit(repo, "tmops(x): nothing") == (head, False)
    assert git(repo, "rev-parse", "HEAD").strip() == head


def test_a_staged_artefact_is_left_out_of_a_first_commit_too(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, {"slug.py": "x = 1\n", "__pycache__/slug.cpython-311.pyc": b"\x00"})
    git(repo, "add", "--all")

    head, committed = commit(repo, "tmops(x): first")

    assert committed
    assert head is not None
    assert tree(repo) == {"slug.py"}


def test_a_deleted_and_a_changed_tracked_file_are_committed(repo: Path) -> None:
    write(repo, {"keep.py": "a = 1\n", "gone.py": "b = 2\n"})
    git(repo, "add", "keep.py", "gone.py")
    git(repo, "commit", "-q", "-m", "two files")
    write(repo, {"keep.py": "a = 3\n", "__pycache__/keep.cpython-311.pyc": b"\x00"})
    (repo / "gone.py").unlink()

    _, committed = commit(repo, "tmops(x): edits")

    assert committed
    assert tree(repo) == {"README.md", "keep.py"}
    assert git(repo, "show", "HEAD:keep.py") == "a = 3\n"


@pytest.mark.parametrize(
    ("path", "artefact"),
    [
        ("__pycache__/a.cpython-311.pyc", True),
        ("pkg/sub/__pycache__/a.pyc", True),
        ("pkg/a.pyc", True),
        ("pkg/a.pyo", True),
        ("pkg/a.py", False),
        (".pytest_cache/README.md", True),
        ("pkg/.mypy_cache/x", True),
        (".ruff_cache/x", True),
        (".hypothesis/x", True),
        (".tox/x", True),
        (".nox/x", True),
        (".venv/bin/python", True),
        ("web/node_modules/x/index.js", True),
        (".coverage", True),
        ("sub/.coverage.host.1", True),
        ("coverage.py", False),
        (".coveragerc", False),
        ("slug.egg-info/PKG-INFO", True),
        ("src/venv/__init__.py", False),
        ("tools-env/lib/site.py", True),
        ("tools-env2/lib/site.py", False),
        ("docs/__pycache__.md", False),
    ],
)
def test_the_matcher_and_the_pathspecs_agree(tmp_path: Path, path: str, artefact: bool) -> None:
    venvs = venv_roots(["tools-env/pyvenv.cfg", "pyvenv.cfg"])  # one at the root is ignored
    assert venvs == {"tools-env"}
    assert is_artefact(path, venvs) is artefact
    repo = make_repo(tmp_path / "r")
    write(repo, {path: "x\n"})
    git(repo, "add", "--all", "--", ".", *exclude_pathspecs(venvs))
    staged = git(repo, "diff", "--cached", "--name-only").split()
    assert (path not in staged) is artefact
    git(repo, "add", "--all")
    git(repo, "reset", "-q", "--", *artefact_pathspecs(venvs))
    staged = git(repo, "diff", "--cached", "--name-only").split()
    assert (path not in staged) is artefact
