"""tmops cleanup: the worktrees of finished features go when their work is merged or pushed,
with the caches in them, and the disk freed is reported; unmerged or uncommitted work only
with --force and after a backup ref; a run an engine works on is never touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mcp import Client

from tmops_core.surfaces.cli import cli
from tmops_core.surfaces.mcp_server import build_server
from tmops_hookspecs import FeatureError

from .worktree_support import Project, add_caches, commit_in, du_bytes, git, project, tree_digest


@pytest.fixture
def four(tmp_path: Path) -> tuple[Project, dict[str, Path]]:
    """Four finished features (cancelled runs) and two an engine works on:
    merged (into main, with caches in its worktree), pushed (to the bare remote), unmerged
    (a commit nobody has, plus uncommitted changes), running and queued."""
    p = project(tmp_path)
    trees = {name: p.init(name) for name in ("merged", "pushed", "unmerged", "running", "queued")}
    commit_in(trees["merged"], "merged.py", "x = 1\n")
    git(p.root, "merge", "-q", "--ff-only", "feature/merged")
    add_caches(trees["merged"])
    commit_in(trees["pushed"], "pushed.py", "y = 2\n")
    git(trees["pushed"], "push", "-q", "origin", "feature/pushed")
    commit_in(trees["unmerged"], "unmerged.py", "z = 3\n")
    (trees["unmerged"] / "app.py").write_text("print('changed, not committed')\n")
    (trees["unmerged"] / "notes.md").write_text("my notes, never committed\n")
    for name in ("merged", "pushed", "unmerged"):
        p.cancel(name)
    p.run_it("running")
    p.queue("queued")
    return p, trees


def _by_feature(answer: dict[str, object]) -> dict[str, dict[str, object]]:
    return {item["feature"]: item for item in answer["worktrees"]}  # type: ignore[attr-defined,index]


def test_a_dry_run_lists_what_would_go_and_changes_nothing(
    four: tuple[Project, dict[str, Path]],
) -> None:
    p, trees = four
    before = {name: tree_digest(path) for name, path in trees.items()}
    refs = git(p.root, "for-each-ref")
    worktrees = git(p.root, "worktree", "list", "--porcelain")
    sizes = {name: du_bytes(trees[name]) for name in ("merged", "pushed")}

    answer = p.service.cleanup(dry_run=True, workspace=p.root)

    items = _by_feature(answer)
    assert answer["dry_run"] is True
    assert {n for n, i in items.items() if i["action"] == "remove"} == {"merged", "pushed"}
    assert items["merged"]["merged"] is True
    assert items["pushed"]["pushed"] == ["origin/feature/pushed"]
    assert items["merged"]["bytes"] == sizes["merged"]
    assert answer["freed_bytes"] == sizes["merged"] + sizes["pushed"]
    assert "would remove merged" in answer["message"]
    unmerged = items["unmerged"]
    assert (unmerged["action"], unmerged["uncommitted"]) == ("skipped", True)
    assert "neither merged into main nor pushed" in unmerged["reason"]
    assert "--force" in unmerged["reason"]
    assert "running" in items["running"]["reason"]
    assert "queued" in items["queued"]["reason"]
    # nothing changed: the files, the refs, the worktrees
    assert {name: tree_digest(path) for name, path in trees.items()} == before
    assert git(p.root, "for-each-ref") == refs
    assert git(p.root, "worktree", "list", "--porcelain") == worktrees


def test_cleanup_removes_merged_and_pushed_worktrees_with_their_caches(
    four: tuple[Project, dict[str, Path]],
) -> None:
    p, trees = four
    sizes = {name: du_bytes(trees[name]) for name in ("merged", "pushed")}
    heads = {n: git(p.root, "rev-parse", f"refs/heads/feature/{n}").strip() for n in trees}
    untouched = {n: tree_digest(trees[n]) for n in ("unmerged", "running", "queued")}

    answer = p.service.cleanup(workspace=p.root)

    items = _by_feature(answer)
    assert {n for n, i in items.items() if i["action"] == "removed"} == {"merged", "pushed"}
    # the reported bytes are what du measured, and the folders are gone, caches and all
    assert answer["freed_bytes"] == sizes["merged"] + sizes["pushed"]
    assert not trees["merged"].exists()
    assert not trees["pushed"].exists()
    listed = git(p.root, "worktree", "list", "--porcelain")
    assert str(trees["merged"]) not in listed
    assert str(trees["pushed"]) not in listed
    # every branch stays where it was, and the output says so
    assert {n: git(p.root, "rev-parse", f"refs/heads/feature/{n}").strip() for n in trees} == heads
    assert "branch feature/merged kept" in answer["message"]
    # the others are untouched
    assert {n: tree_digest(trees[n]) for n in untouched} == untouched
    assert p.status("running")["status"] == "running"
    assert p.status("queued")["status"] == "queued"
    # the audit trail says what went
    events = p.service.audit_trail("merged", workspace=p.root)
    removed = [e for e in events if e["event_type"] == "orchestration.worktree.removed"]
    assert removed
    assert removed[-1]["data"]["bytes"] == sizes["merged"]
    # a second cleanup finds nothing more to do
    again = _by_feature(p.service.cleanup(workspace=p.root))
    assert again["merged"]["reason"] == "already removed"


def test_force_backs_up_uncommitted_work_first_and_the_backup_restores_it(
    four: tuple[Project, dict[str, Path]], tmp_path: Path
) -> None:
    p, trees = four
    answer = p.service.cleanup(force=True, workspace=p.root)

    items = _by_feature(answer)
    unmerged = items["unmerged"]
    assert unmerged["action"] == "removed"
    assert not trees["unmerged"].exists()
    ref = unmerged["backup_ref"]
    assert isinstance(ref, str)
    assert ref.startswith("refs/tmops/unmerged/initial/backup-")
    assert ref in answer["message"]
    # the backup holds the committed and the uncommitted work; a worktree restores it
    restored = tmp_path / "restored"
    git(p.root, "worktree", "add", "-q", "--detach", str(restored), ref)
    assert (restored / "notes.md").read_text() == "my notes, never committed\n"
    assert (restored / "app.py").read_text() == "print('changed, not committed')\n"
    assert (restored / "unmerged.py").read_text() == "z = 3\n"
    # even forced, a run an engine works on is never touched
    assert items["running"]["action"] == items["queued"]["action"] == "skipped"
    assert trees["running"].is_dir()
    assert trees["queued"].is_dir()


def test_a_paused_or_unstarted_run_keeps_its_worktree(tmp_path: Path) -> None:
    p = project(tmp_path)
    fresh = p.init("fresh")
    paused = p.init("paused")
    p.queue("paused")
    p.service.pause("paused", workspace=p.root)
    items = _by_feature(p.service.cleanup(force=True, workspace=p.root))
    assert "not started" in items["fresh"]["reason"]
    assert "paused" in items["paused"]["reason"]
    assert fresh.is_dir()
    assert paused.is_dir()


def test_the_cleanup_command_json_and_text(four: tuple[Project, dict[str, Path]]) -> None:
    p, trees = four
    runner = CliRunner()
    dry = runner.invoke(cli, ["cleanup", "--dry-run", "--json", "--workspace", str(p.root)])
    assert dry.exit_code == 0, dry.output
    data = json.loads(dry.output)
    assert data["dry_run"] is True
    assert trees["merged"].is_dir()
    done = runner.invoke(cli, ["cleanup", "--workspace", str(p.root)])
    assert done.exit_code == 0, done.output
    assert "removed merged" in done.output
    assert "freed" in done.output
    assert not trees["merged"].exists()
    assert trees["unmerged"].is_dir()


@pytest.mark.anyio
async def test_the_mcp_tool_is_a_dry_run_unless_told_otherwise(
    four: tuple[Project, dict[str, Path]],
) -> None:
    p, trees = four
    async with Client(build_server(p.service, workspace=p.root)) as client:
        dry = await client.call_tool("tmops_cleanup", {})
        assert dry.is_error is False
        assert dry.structured_content is not None
        assert dry.structured_content["dry_run"] is True
        assert trees["merged"].is_dir()
        done = await client.call_tool("tmops_cleanup", {"dry_run": False})
        assert done.structured_content is not None
    assert done.structured_content["freed_bytes"] == dry.structured_content["freed_bytes"]
    assert not trees["merged"].exists()
    assert trees["unmerged"].is_dir()


def test_a_base_branch_that_is_not_a_branch_is_a_clear_error(tmp_path: Path) -> None:
    p = project(tmp_path, base_branch="trunk")
    p.init("feat")
    with pytest.raises(FeatureError) as error:
        p.service.cleanup(dry_run=True, workspace=p.root)
    assert "features.base_branch" in str(error.value)
    assert "trunk" in str(error.value)


def test_the_configured_base_branch_decides_what_is_merged(tmp_path: Path) -> None:
    p = project(tmp_path, base_branch="release")
    worktree = p.init("feat")
    commit_in(worktree, "feat.py", "f = 1\n")
    git(p.root, "merge", "-q", "--ff-only", "feature/feat")  # into main, not release
    git(p.root, "branch", "release", "HEAD~1")
    p.cancel("feat")
    item = _by_feature(p.service.cleanup(dry_run=True, workspace=p.root))["feat"]
    assert item["action"] == "skipped"
    assert "neither merged into release nor pushed" in item["reason"]
    git(p.root, "branch", "-f", "release", "main")
    item = _by_feature(p.service.cleanup(dry_run=True, workspace=p.root))["feat"]
    assert (item["action"], item["reason"]) == ("remove", "merged into release")


def test_a_worktree_reached_through_a_link_is_never_removed(tmp_path: Path) -> None:
    p = project(tmp_path)
    worktree = p.init("linked")
    commit_in(worktree, "linked.py", "l = 1\n")
    git(worktree, "push", "-q", "origin", "feature/linked")
    p.cancel("linked")
    real = tmp_path / "real-folder"
    worktree.rename(real)
    worktree.symlink_to(real)
    before = tree_digest(real)

    item = _by_feature(p.service.cleanup(force=True, workspace=p.root))["linked"]

    assert item["action"] == "skipped"
    assert "could not be checked" in item["reason"]
    assert "symlink" in item["reason"]
    assert worktree.is_symlink()
    assert tree_digest(real) == before
