"""features.worktree_disk_budget_gb: status and list warn when the feature worktrees take more,
naming `tmops cleanup --dry-run`; the sizes are kept a while, so a poll does not walk them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tmops_core.surfaces.cli import cli
from tmops_core.workspace import disk
from tmops_core.workspace.disk import tree_bytes, worktrees_bytes
from tmops_core.workspace.layout import Layout

from .engine_support import write_config
from .worktree_support import add_caches, du_bytes, project

pytestmark = pytest.mark.usefixtures("no_config_env")

#: about 100 KB: a worktree with caches in it takes more
TINY_BUDGET_GB = 0.0001


def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def test_status_and_list_warn_over_the_budget(tmp_path: Path) -> None:
    p = project(tmp_path)
    worktree = p.init("heavy")
    add_caches(worktree)
    config = write_config(
        tmp_path / "tmops.yaml", {"features": {"worktree_disk_budget_gb": TINY_BUDGET_GB}}
    )
    workspace = ["--workspace", str(p.root)]

    code, out, err = _cli(config, "status", "heavy", *workspace)
    assert code == 0, err
    assert "over features.worktree_disk_budget_gb" in err
    assert "tmops cleanup --dry-run" in err
    assert "heavy: initialized" in out  # the status itself is unchanged

    code, out, err = _cli(config, "list", *workspace)
    assert code == 0, err
    assert "tmops cleanup --dry-run" in err

    code, out, _ = _cli(config, "list", "--json", *workspace)
    disk = json.loads(out)["worktree_disk"]
    assert disk["over"] is True
    assert disk["used_bytes"] == du_bytes(worktree)
    assert disk["budget_gb"] == TINY_BUDGET_GB
    code, out, _ = _cli(config, "status", "heavy", "--json", *workspace)
    assert json.loads(out)["worktree_disk"]["warning"] == disk["warning"]


def test_no_budget_measures_nothing_and_warns_nothing(tmp_path: Path) -> None:
    p = project(tmp_path)
    add_caches(p.init("heavy"))
    config = write_config(tmp_path / "tmops.yaml", {"features": {}})
    code, out, err = _cli(config, "list", "--json", "--workspace", str(p.root))
    assert code == 0, err
    assert json.loads(out)["worktree_disk"] is None
    assert "budget" not in err
    assert not (p.root / ".tmops" / "worktree-sizes.json").exists()


def test_sizes_are_kept_for_a_while_and_cleanup_forgets_them(tmp_path: Path) -> None:
    p = project(tmp_path)
    worktree = p.init("heavy")
    layout = Layout(p.root)
    first = worktrees_bytes(layout, [worktree], now=1000.0)
    assert first == tree_bytes(worktree) == du_bytes(worktree)
    (worktree / "big.bin").write_bytes(os.urandom(64 * 1024))
    # within the time kept: the kept size, no walk
    assert worktrees_bytes(layout, [worktree], now=1100.0) == first
    # after it: measured again
    assert worktrees_bytes(layout, [worktree], now=2000.0) == du_bytes(worktree) > first
    # a removed worktree counts for nothing, whatever was kept
    p.cancel("heavy")
    p.service.cleanup(force=True, workspace=p.root)
    assert not worktree.exists()
    assert worktrees_bytes(layout, [worktree], now=2001.0) == 0


def test_a_link_in_a_worktree_is_counted_as_itself_never_followed(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "blob").write_bytes(os.urandom(512 * 1024))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "to-big").symlink_to(big)
    (tree / "blob-link").symlink_to(big / "blob")
    (tree / "data").write_bytes(os.urandom(8192))
    os.link(tree / "data", tree / "same-data")  # a hard link: its blocks once
    assert tree_bytes(tree) == du_bytes(tree) < 512 * 1024


def test_a_polled_list_walks_each_worktree_once_per_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = project(tmp_path, worktree_disk_budget_gb=1)
    trees = [p.init(f"feat-{i:02d}") for i in range(5)]
    walked: list[Path] = []
    real = disk.tree_bytes

    def counted(path: Path) -> int:
        walked.append(path)
        return real(path)

    monkeypatch.setattr(disk, "tree_bytes", counted)
    for _ in range(3):  # a list, then two polls within the time sizes are kept
        p.service.list_features(workspace=p.root)
        assert p.service.worktree_disk(workspace=p.root)["over"] is False  # type: ignore[index]
    assert sorted(walked) == sorted(trees)
