"""``tmops init`` never follows a link under ``.tmops/`` or the worktrees folder.

Real git repositories; the links point outside the project, at a stand-in for ``/etc/passwd``
or at a folder. A refused init names the link, says to remove it, leaves no branch, worktree or
run behind, and changes nothing outside.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.links_support import KINDS, OUTSIDE_TEXT, Outside, says_remove_the_link

from .features_support import branch_exists, git, init, run_cli

FEATURE = "auth-api"


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    return Outside.make(tmp_path / "outside")


def refused_init(repo: Path, *args: str) -> str:
    result = run_cli("init", FEATURE, "--workspace", str(repo), *args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("kind", KINDS)
def test_a_linked_worktrees_folder_is_refused(repo: Path, outside: Outside, kind: str) -> None:
    (repo / ".tmops").mkdir()
    link = outside.plant(repo / ".tmops" / "worktrees", kind)
    output = refused_init(repo)
    assert says_remove_the_link(output, link)
    assert not branch_exists(repo, f"feature/{FEATURE}")
    assert str(outside.root) not in git(repo, "worktree", "list")
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_a_link_where_the_worktree_goes_is_refused(repo: Path, outside: Outside, kind: str) -> None:
    (repo / ".tmops" / "worktrees").mkdir(parents=True)
    link = outside.plant(repo / ".tmops" / "worktrees" / FEATURE, kind)
    output = refused_init(repo)
    assert says_remove_the_link(output, link)
    assert not branch_exists(repo, f"feature/{FEATURE}")
    assert outside.unchanged()


def test_a_worktrees_folder_inside_the_project_but_outside_tmops_is_checked(
    repo: Path, outside: Outside
) -> None:
    config = repo / "tmops.yaml"
    config.write_text("features:\n  worktree_root: wt\n")
    config.chmod(0o600)
    link = outside.plant(repo / "wt", "folder")
    result = run_cli("--config", str(config), "init", FEATURE, "--workspace", str(repo))
    assert result.exit_code == 1, result.output
    assert says_remove_the_link(result.output, link)
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_a_linked_features_txt_is_refused(repo: Path, outside: Outside, kind: str) -> None:
    (repo / ".tmops").mkdir()
    link = outside.plant(repo / ".tmops" / "FEATURES.txt", kind)
    output = refused_init(repo)
    assert says_remove_the_link(output, link)
    assert not branch_exists(repo, f"feature/{FEATURE}")
    assert not os.path.lexists(repo / ".tmops" / FEATURE)
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_a_retry_does_not_copy_a_spec_that_is_a_link(
    repo: Path, outside: Outside, kind: str
) -> None:
    first = init(repo)
    link = outside.plant(first.task_spec, kind)
    output = refused_init(repo, "--retry")
    assert says_remove_the_link(output, link)
    assert not os.path.lexists(repo / ".tmops" / FEATURE / "runs" / "retry")
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_init_refuses_a_spec_that_is_a_link(
    repo: Path, outside: Outside, kind: str
) -> None:
    first = init(repo)
    link = outside.plant(first.task_spec, kind)
    output = refused_init(repo)
    assert says_remove_the_link(output, link)
    assert os.path.islink(link)
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_init_does_not_fill_a_linked_run_folder(
    repo: Path, outside: Outside, kind: str
) -> None:
    first = init(repo)
    link = outside.plant(first.run_dir, kind)
    output = refused_init(repo)
    assert says_remove_the_link(output, link)
    assert outside.unchanged()


def test_no_spec_made_from_a_linked_one_holds_its_target(repo: Path, outside: Outside) -> None:
    first = init(repo)
    outside.plant(first.task_spec, "file")
    refused_init(repo, "--retry")
    for folder, _dirs, files in os.walk(repo / ".tmops"):
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                assert OUTSIDE_TEXT not in path.read_text(errors="replace"), path
