"""What ``tmops restore`` refuses: crafted or damaged archives (checked before the project is
touched), a project an engine serves, and state it would replace (kept aside with --force);
and what ``tmops backup`` refuses as a destination."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tmops_core.service.backup import create_backup
from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.service.restore import restore_backup
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import WorkspaceError

from .engine_support import file_service, git, new_feature, scripted_config, write_config
from .takeover_support import make_project, wait_until

Members = dict[str, bytes]
#: features.worktree_root by default
WORKTREES = ".tmops/worktrees"


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path]:
    """A project with a feature initialised (no run yet), its backup, and a fresh clone."""
    root = create_demo_project(tmp_path / "p").path
    service = file_service(write_config(tmp_path / "tmops.yaml", scripted_config(tmp_path)))
    new_feature(service, root)
    service.close()
    archive = Path(create_backup(Layout(root), tmp_path)["archive"])
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(root), str(clone))
    return archive, clone


def read_members(archive: Path) -> Members:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def write_archive(
    path: Path, members: Members, *, extra: Callable[[tarfile.TarFile], None] | None = None
) -> Path:
    """An archive of ``members`` with the manifest's hashes made to match them again."""
    manifest = json.loads(members["manifest.json"])
    manifest["files"] = [
        {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in sorted(members.items())
        if name != "manifest.json"
    ]
    members = {**members, "manifest.json": json.dumps(manifest).encode()}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return path


def with_feature(archive: Path, out: Path, **changes: object) -> Path:
    """``archive`` again with its first feature in the manifest changed."""
    members = read_members(archive)
    manifest = json.loads(members["manifest.json"])
    manifest["features"][0].update(changes)
    return write_archive(out, {**members, "manifest.json": json.dumps(manifest).encode()})


def refused(archive: Path, clone: Path, match: str) -> None:
    with pytest.raises(WorkspaceError, match=match):
        restore_backup(Layout(clone), archive, worktree_root=WORKTREES)
    assert not (clone / ".tmops").exists(), "nothing of the project was touched"


def test_the_restore_itself_needs_no_force_in_a_fresh_clone(backed_up: tuple[Path, Path]) -> None:
    archive, clone = backed_up
    answer = restore_backup(Layout(clone), archive, worktree_root=WORKTREES)
    assert answer["features"] == {DEMO_FEATURE: {"run": "initial", "status": "initialized",
                                                 "phase": None}}  # fmt: skip
    assert (clone / ".tmops" / DEMO_FEATURE / "current").is_symlink()
    assert (clone / ".tmops" / "tmops.db").stat().st_mode & 0o777 == 0o600
    assert (clone / ".tmops" / "worktrees" / DEMO_FEATURE / ".git").is_file()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../outside.txt", "a '..'"),
        ("/tmp/absolute.txt", "an absolute path"),
        ("tree/../../x", "a '..'"),
        ("elsewhere/x", "a file no tmops backup holds"),
    ],
)
def test_a_member_outside_the_archive_folders_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path, name: str, why: str
) -> None:
    archive, clone = backed_up
    members = {**read_members(archive), name: b"planted"}
    refused(write_archive(tmp_path / "bad.tar.gz", members), clone, why)
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE]
)
def test_a_link_a_device_or_a_folder_member_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path, kind: bytes
) -> None:
    archive, clone = backed_up

    def planted(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("tree/planted")
        info.type = kind
        info.linkname = "/etc/passwd"
        tar.addfile(info)

    bad = write_archive(tmp_path / "bad.tar.gz", read_members(archive), extra=planted)
    refused(bad, clone, "not a regular file")


def test_a_file_changed_after_the_backup_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, clone = backed_up
    members = read_members(archive)
    spec = f"tree/{DEMO_FEATURE}/runs/initial/TASK_SPEC.md"
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:  # the manifest's hashes left as they were
        for name, data in members.items():
            content = b"tampered" if name == spec else data
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    refused(bad, clone, "TASK_SPEC.md is not the file that was backed up")


def test_a_file_the_manifest_does_not_list_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, clone = backed_up
    members = read_members(archive)
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for name, data in {**members, "tree/extra.md": b"x"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    refused(bad, clone, "not the ones its manifest lists")


def _store_bytes(members: Members, tmp_path: Path, change: Callable[[Path], None]) -> bytes:
    path = tmp_path / "copy.db"
    path.write_bytes(members["store/tmops.db"])
    change(path)
    return path.read_bytes()


def test_a_damaged_store_is_refused(backed_up: tuple[Path, Path], tmp_path: Path) -> None:
    archive, clone = backed_up
    members = read_members(archive)
    data = bytearray(members["store/tmops.db"])
    data[100:4096] = b"\xff" * (4096 - 100)  # the page after the header: the schema's
    members["store/tmops.db"] = bytes(data)
    refused(write_archive(tmp_path / "bad.tar.gz", members), clone, "integrity|malformed")


def test_a_store_of_a_newer_tmops_is_refused(backed_up: tuple[Path, Path], tmp_path: Path) -> None:
    archive, clone = backed_up
    members = read_members(archive)

    def newer(path: Path) -> None:
        with sqlite3.connect(path) as db:
            db.execute("INSERT INTO schema_migrations (version) VALUES (9999)")
        db.close()

    members["store/tmops.db"] = _store_bytes(members, tmp_path, newer)
    refused(write_archive(tmp_path / "bad.tar.gz", members), clone, "made by a newer tmops")


def test_something_that_is_not_a_backup_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    _, clone = backed_up
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar file at all")
    refused(junk, clone, "cannot be read as a tar.gz")
    refused(tmp_path / "missing.tar.gz", clone, "is not a file")


def test_existing_state_is_replaced_only_with_force_and_kept_aside(
    backed_up: tuple[Path, Path],
) -> None:
    archive, clone = backed_up
    restore_backup(Layout(clone), archive, worktree_root=WORKTREES)
    (clone / ".tmops" / "mine.txt").write_text("state made after the restore\n")
    branch = f"feature/{DEMO_FEATURE}"
    worktree = clone / ".tmops" / "worktrees" / DEMO_FEATURE
    (worktree / "other.txt").write_text("x")
    git(worktree, "add", "other.txt")
    git(worktree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "other work")
    moved = git(clone, "rev-parse", branch).strip()

    with pytest.raises(WorkspaceError, match="restoring would replace: the state in") as caught:
        restore_backup(Layout(clone), archive, worktree_root=WORKTREES)
    assert f"the branch {branch}" in str(caught.value)
    assert (clone / ".tmops" / "mine.txt").exists()

    answer = restore_backup(Layout(clone), archive, worktree_root=WORKTREES, force=True)
    aside = [Path(p) for p in answer["kept_aside"] if not p.startswith("refs/")]
    assert [p.name.startswith(".replaced-") for p in aside] == [True]
    assert aside[0].parent == clone / ".tmops"
    assert ".replaced-" not in git(clone, "status", "--porcelain", "--untracked-files=all")
    assert (aside[0] / "mine.txt").read_text() == "state made after the restore\n"
    kept = [p for p in answer["kept_aside"] if p.startswith("refs/")]
    assert kept == [f"refs/tmops/{aside[0].name.removeprefix('.')}/heads/{branch}"]
    assert git(clone, "rev-parse", kept[0]).strip() == moved
    assert git(clone, "rev-parse", branch).strip() != moved
    assert (worktree / ".git").is_file()
    assert not (worktree / "other.txt").exists()


def test_a_project_an_engine_serves_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path, fault="orchestrator:slow=30", default_phases=["orchestrator"])
    try:
        archive = Path(create_backup(Layout(project.root), tmp_path)["archive"])
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        project.engine()
        wait_until(lambda: project.live_agent("orchestrator"), timeout=60, what="agent")
        with pytest.raises(WorkspaceError, match="an engine serves") as caught:
            restore_backup(Layout(project.root), archive, worktree_root=WORKTREES, force=True)
        assert "tmops cancel" in (caught.value.hint or "")
        assert project.live_agent("orchestrator") is not None
    finally:
        project.close()


def test_backup_refuses_a_destination_it_would_overwrite_or_cannot_place(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, clone = backed_up
    root = tmp_path / "p"
    with pytest.raises(WorkspaceError, match="never overwrites"):
        create_backup(Layout(root), archive)
    with pytest.raises(WorkspaceError, match=r"neither a folder nor a new \.tar\.gz"):
        create_backup(Layout(root), tmp_path / "no-such-folder")
    with pytest.raises(WorkspaceError, match="nothing to back up"):
        create_backup(Layout(clone), None)
    named = create_backup(Layout(root), tmp_path / "named.tar.gz")
    assert named["archive"] == str(tmp_path / "named.tar.gz")


def test_worktrees_go_where_this_project_puts_them_never_where_the_archive_says(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, clone = backed_up
    planted = tmp_path / "planted"
    crafted = with_feature(
        archive, tmp_path / "crafted.tar.gz", worktree=str(planted), worktree_in_project=None
    )
    elsewhere = tmp_path / "worktrees"
    answer = restore_backup(Layout(clone), crafted, worktree_root=str(elsewhere))
    assert answer["worktrees"] == [str(elsewhere / DEMO_FEATURE)]
    assert (elsewhere / DEMO_FEATURE / ".git").is_file()
    assert not planted.exists()


def test_a_branch_the_archive_does_not_hold_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, clone = backed_up
    bad = with_feature(archive, tmp_path / "bad.tar.gz", branch="--upload-pack=evil")
    refused(bad, clone, "holds no such branch")


def test_a_project_that_lost_its_tmops_folder_is_restored_in_place(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, _ = backed_up
    root = tmp_path / "p"
    shutil.rmtree(root / ".tmops")  # the worktree inside it went with it; git still lists it
    answer = restore_backup(Layout(root), archive, worktree_root=WORKTREES)
    assert answer["kept_aside"] == []
    worktree = root / ".tmops" / "worktrees" / DEMO_FEATURE
    assert answer["worktrees"] == [str(worktree)]
    assert git(worktree, "branch", "--show-current").strip() == f"feature/{DEMO_FEATURE}"


def test_a_damaged_store_in_the_project_is_replaced_with_force(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, _ = backed_up
    root = tmp_path / "p"
    store = root / ".tmops" / "tmops.db"
    store.write_bytes(b"this is no database any more" * 200)
    with pytest.raises(WorkspaceError, match="restoring would replace: the state in"):
        restore_backup(Layout(root), archive, worktree_root=WORKTREES)
    answer = restore_backup(Layout(root), archive, worktree_root=WORKTREES, force=True)
    aside = Path(answer["kept_aside"][0])
    assert (aside / "tmops.db").read_bytes().startswith(b"this is no database")
    assert answer["features"][DEMO_FEATURE]["status"] == "initialized"


def test_a_backup_of_another_workspace_is_refused_and_so_is_backing_up_its_store(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, clone = backed_up  # the project's config: the default workspace
    with pytest.raises(WorkspaceError, match="backup of workspace 'default'") as refusal:
        restore_backup(Layout(clone), archive, worktree_root=WORKTREES, workspace="team_b")
    assert "server.workspace_id 'team_b'" in refusal.value.message
    assert "server.workspace_id is 'default'" in (refusal.value.hint or "")
    assert not (clone / ".tmops").exists(), "nothing of the project was touched"
    restore_backup(Layout(clone), archive, worktree_root=WORKTREES, workspace="default")
    with pytest.raises(WorkspaceError, match="made for workspace 'default'"):
        create_backup(Layout(clone), tmp_path / "again.tar.gz", workspace="team_b")


def test_a_backup_from_before_the_workspace_column_becomes_this_workspaces(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, clone = backed_up
    members = read_members(archive)

    def as_0009(path: Path) -> None:  # the store as tmops before migration 0010 left it
        with sqlite3.connect(path) as db:
            for table in ("features", "runs", "attempts", "events", "approvals", "engines"):
                db.execute(f"ALTER TABLE {table} DROP COLUMN workspace_id")
            db.execute("DROP TABLE store_workspace")
            db.execute("DELETE FROM schema_migrations WHERE version >= 10")
        db.close()

    members["store/tmops.db"] = _store_bytes(members, tmp_path, as_0009)
    old = write_archive(tmp_path / "old.tar.gz", members)
    answer = restore_backup(Layout(clone), old, worktree_root=WORKTREES, workspace="team_b")
    assert list(answer["features"]) == [DEMO_FEATURE]
    with sqlite3.connect(clone / ".tmops" / "tmops.db") as db:
        owners = {row[0] for table in ("features", "runs", "events", "store_workspace")
                  for row in db.execute(f"SELECT workspace_id FROM {table}")}  # noqa: S608 - fixed names  # fmt: skip
    db.close()
    assert owners == {"team_b"}
