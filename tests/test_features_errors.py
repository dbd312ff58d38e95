"""``tmops init`` refusing bad input: malicious names, clear errors, nothing left after a failure.

Everything runs for real: git repositories in ``tmp_path``, real processes, no mocks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmops_hookspecs import FeatureError, TmopsError, WorkspaceError

from .features_support import branch_exists, git, init, run_cli
from .users_support import TMOPS_SCRIPT, as_second_user


def repo_state(repo: Path) -> tuple[set[str], str, str]:
    """All paths under the repository (.git included), its refs and its worktrees."""
    paths = set()
    for folder, dirs, files in os.walk(repo):
        paths.update(str(Path(folder, name).relative_to(repo)) for name in (*dirs, *files))
    refs = git(repo, "for-each-ref")
    worktrees = git(repo, "worktree", "list", "--porcelain")
    return paths, refs, worktrees


# -- malicious names ----------------------------------------------------------------------------

BAD_NAMES = [
    "'; rm -rf /; #",
    "../../../etc/passwd",
    "\x00\x01\x02",
    "A" * 1000,
    "feature-${EVIL_VAR}",
    "<script>alert('xss')</script>",
    "-leading",
    "trailing-",
    "ab",
    "a" * 21,
    "Upper",
    "auth api",
    "\u0430uth-api",  # Cyrillic a
    "auth\u2010api",  # unicode hyphen
    "\uff41uth",  # fullwidth a
    "auth\n",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_feature_name_is_refused_saying_what_is_allowed(repo: Path, name: str) -> None:
    with pytest.raises(FeatureError, match="3 to 20 characters"):
        init(repo, name)


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_feature_name_changes_nothing_in_the_repository(repo: Path, name: str) -> None:
    before = repo_state(repo)
    with pytest.raises(FeatureError):
        init(repo, name)
    assert repo_state(repo) == before


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_feature_name_through_the_cli_is_a_one_line_error(repo: Path, name: str) -> None:
    before = repo_state(repo)
    result = run_cli("init", "--workspace", str(repo), "--", name)
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("Error: invalid feature name")
    assert "Traceback" not in result.stderr
    assert repo_state(repo) == before


# -- clear errors -------------------------------------------------------------------------------


def test_outside_a_git_repository_is_a_workspace_error() -> None:
    with pytest.raises(WorkspaceError, match="not inside a git repository"):
        init(Path.cwd())


def test_repository_without_commits_is_a_workspace_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(WorkspaceError, match="no commits"):
        init(empty)


def test_missing_git_is_a_workspace_error(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nothing = tmp_path / "no-bin"
    nothing.mkdir()
    monkeypatch.setenv("PATH", str(nothing))
    with pytest.raises(WorkspaceError, match="git is not installed"):
        init(repo)


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_taken_worktree_path_is_an_error_naming_it(repo: Path, kind: str) -> None:
    taken = repo / ".tmops/worktrees/auth-api"
    taken.parent.mkdir(parents=True)
    if kind == "file":
        taken.write_text("mine\n")
    else:
        taken.mkdir()
    with pytest.raises(WorkspaceError) as caught:
        init(repo)
    assert str(taken) in str(caught.value)


def test_taken_worktree_path_leaves_no_branch_and_no_feature_folder(repo: Path) -> None:
    taken = repo / ".tmops/worktrees/auth-api"
    taken.mkdir(parents=True)
    with pytest.raises(WorkspaceError):
        init(repo)
    assert not branch_exists(repo, "feature/auth-api")
    assert not os.path.lexists(repo / ".tmops/auth-api")
    assert sorted(taken.parent.iterdir()) == [taken]


@pytest.fixture
def nobody_project(second_user: int) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project owned by the second user (nobody) whose ``.tmops`` belongs to root (0755).

    Needs root and a second user that can reach this venv (the ``second_user`` fixture).
    """
    # Not under tmp_path: pytest's base folder is private to root, so nobody could not enter it.
    base = Path(tempfile.mkdtemp(prefix="tmops-nobody-"))
    try:
        yield _nobody_project(base, second_user)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _nobody_project(base: Path, uid: int) -> tuple[Path, dict[str, str]]:
    home = base / "home"
    home.mkdir()
    (home / "gitconfig").write_text("[safe]\n\tdirectory = *\n")
    project = base / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    identity = ("-c", "user.name=t", "-c", "user.email=t@t.invalid")
    git(project, *identity, "commit", "-q", "--allow-empty", "-m", "initial commit")
    for folder, dirs, files in os.walk(base):
        for name in (".", *dirs, *files):
            os.chown(Path(folder, name), uid, uid, follow_symlinks=False)
    (project / ".tmops").mkdir(mode=0o755)
    (project / ".tmops").chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": str(home / "gitconfig"),
        "LC_ALL": "C",
    }
    return project, env


def run_as_nobody(
    project: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        as_second_user(TMOPS_SCRIPT, *args),
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unwritable_tmops_is_a_clear_error_saying_how_to_fix_it(
    nobody_project: tuple[Path, dict[str, str]],
) -> None:
    project, env = nobody_project
    result = run_as_nobody(project, env, "init", "auth-api")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(project / ".tmops") in result.stderr
    assert "chmod" in result.stderr or "chown" in result.stderr


def test_unwritable_tmops_creates_no_branch(nobody_project: tuple[Path, dict[str, str]]) -> None:
    project, env = nobody_project
    result = run_as_nobody(project, env, "init", "auth-api")
    assert result.returncode != 0
    assert not branch_exists(project, "feature/auth-api")
    assert os.listdir(project / ".tmops") == []


# -- a failure part-way leaves nothing behind --------------------------------------------------


def assert_nothing_left(repo: Path) -> None:
    tmops = repo / ".tmops"
    assert not branch_exists(repo, "feature/auth-api")
    assert not os.path.lexists(tmops / "auth-api")
    assert [p.name for p in tmops.iterdir() if p.name.startswith(".staging-")] == []
    features = tmops / "FEATURES.txt"
    assert not features.exists() or "auth-api:" not in features.read_text()


def test_worktree_path_registered_on_another_branch_fails_after_the_branch_cleanly(
    repo: Path,
) -> None:
    # The branch is created first; the worktree step then finds the path used by another branch.
    git(repo, "worktree", "add", "-q", "-b", "other", str(repo / ".tmops/worktrees/auth-api"))
    with pytest.raises(WorkspaceError, match="has branch other checked out"):
        init(repo)
    assert_nothing_left(repo)


def test_failing_git_worktree_add_undoes_the_new_branch(repo: Path) -> None:
    # git cannot register any worktree when .git/worktrees is a file: `git worktree add` fails
    # for real, after tmops has created the branch.
    (repo / ".git/worktrees").write_text("not a folder\n")
    with pytest.raises(WorkspaceError, match="git worktree failed"):
        init(repo)
    assert_nothing_left(repo)


def test_worktree_root_being_a_file_leaves_nothing_behind(repo: Path) -> None:
    (repo / ".tmops").mkdir()
    (repo / ".tmops/worktrees").write_text("a file where the worktrees go\n")
    with pytest.raises((TmopsError, OSError)):
        init(repo)
    assert_nothing_left(repo)


def test_worktree_root_being_a_file_is_a_workspace_error(repo: Path) -> None:
    (repo / ".tmops").mkdir()
    (repo / ".tmops/worktrees").write_text("a file where the worktrees go\n")
    with pytest.raises(WorkspaceError, match=re.escape(str(repo / ".tmops/worktrees"))):
        init(repo)
