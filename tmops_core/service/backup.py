"""``tmops backup``: one archive of everything tmops keeps for a project, taken while runs go on.

What it holds (the format is :mod:`~tmops_core.service.archive`'s): the store, copied with
SQLite's online backup API (one consistent snapshot while engines write); the files under
``.tmops/`` (checkpoints, logs, TASK_SPEC.md, FEATURES.txt, docs, the rollbacks' backups), not
the store's own files, locks, archives or the worktrees (git's); and a git bundle of every
feature branch and ``refs/tmops/*``, so a fresh clone gets them. Work left uncommitted in a
worktree is taken as a snapshot commit (made through a private index: neither the index nor
any branch moves) under ``refs/tmops/<feature>/<run>/snapshot-<stamp>``, bundled, then the
ref is deleted again here: the work itself is still in the worktree.

Order, for runs that go on meanwhile: the store first, then the files, then git. Whatever is
newer than the store's copy (a checkpoint written, a commit made after it) is what an engine
finds after a crash, and takes as it does then: a checkpoint on disk is adopted, a branch
ahead of the recorded head is the agent's own commits.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tmops_core import __version__
from tmops_core.git import Git
from tmops_core.service.archive import (
    ARCHIVES_DIR,
    BUNDLE_MEMBER,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_MEMBER,
    STORE_MEMBER,
    TREE_PREFIX,
    archive_name,
    sha256_file,
)
from tmops_core.store import STORE_NAME, FeatureRecord, open_existing_store, refuse_shared
from tmops_core.store.maintenance import copy_database
from tmops_core.workspace.layout import (
    Layout,
    ensure_private_dir,
    iso,
    open_dir,
    open_file,
    utc_now,
)
from tmops_hookspecs import WorkspaceError

__all__ = ["SECRET_FILES", "create_backup", "skipped_in_tree"]

_CHUNK = 1 << 20


#: files under .tmops/ that are secrets, never put in an archive: the MCP HTTP server's token
#: (``surfaces/mcp_http.TOKEN_FILE``), made anew where it is missing
SECRET_FILES = ("http.token",)


def skipped_in_tree(relative: Path) -> bool:
    """Whether a file under .tmops/ stays out of a backup: the store's own files (copied by
    the backup API), locks, temporary files, secrets, the archives folder and staging
    folders."""
    name = relative.name
    top = relative.parts[0]
    return (
        top == ARCHIVES_DIR
        or relative.as_posix() in SECRET_FILES
        or top.startswith(".staging-")
        or name.startswith(STORE_NAME)
        or name.endswith((".lock", ".tmp"))
    )


def create_backup(
    layout: Layout, dest: Path | None, *, store_url: str | None = None, workspace: str = "default"
) -> dict[str, Any]:
    """Write the backup archive of the project ``layout``; return what it holds.

    ``dest`` is a folder (the archive gets a name with the time in it), or the path of the
    archive (ending ``.tar.gz``, not there yet); None: ``.tmops/archives/``. ``store_url``:
    the config's ``store.url``; a PostgreSQL store is refused (pg_dump backs it up).
    ``workspace``: the config's ``server.workspace_id``; the store of another is refused.
    """
    refuse_shared(store_url, "`tmops backup`")
    source = layout.tmops_dir / STORE_NAME
    store = open_existing_store(source, workspace=workspace)
    if store is None:
        raise WorkspaceError(
            f"there is nothing to back up in {layout.project_root}: tmops has no store there",
            hint="run the command in a project tmops works in (or give --workspace)",
        )
    try:
        features = store.features()
        current = {f.name: f.current_run for f in features}
    finally:
        store.close()
    stamp = f"{utc_now():%Y%m%d-%H%M%S}"
    target = _target(layout, dest, stamp)
    staging = Path(tempfile.mkdtemp(prefix=".tmops-backup-", dir=target.parent))
    try:
        files: dict[str, Path] = {}
        store_copy = staging / STORE_MEMBER
        store_copy.parent.mkdir(mode=0o700)
        schema = copy_database(source, store_copy)
        files[STORE_MEMBER] = store_copy
        worktrees = {Path(f.worktree) for f in features}
        files.update(_copy_tree(layout, staging / TREE_PREFIX, worktrees))
        git = Git(layout.project_root)
        described, refs = _bundle(git, layout, features, current, staging, stamp)
        if refs:
            files[BUNDLE_MEMBER] = staging / BUNDLE_MEMBER
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tmops_version": __version__,
            "created_at": iso(utc_now()),
            "schema_version": schema,
            "project_root": str(layout.project_root),
            "features": described,
            "refs": refs,
            "files": [
                {"path": name, "size": path.stat().st_size, "sha256": sha256_file(path)}
                for name, path in sorted(files.items())
            ],
        }
        _write_archive(target, manifest, files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "archive": str(target),
        "schema_version": schema,
        "features": [f["name"] for f in described],
        "snapshots": [f["snapshot"] for f in described if f["snapshot"]],
        "refs": len(refs),
        "files": len(manifest["files"]),
        "message": f"backup written to {target}",
    }


def _target(layout: Layout, dest: Path | None, stamp: str) -> Path:
    if dest is None:
        folder = layout.tmops_dir / ARCHIVES_DIR
        ensure_private_dir(layout.tmops_dir)
        ensure_private_dir(folder)
        return folder / archive_name(stamp)
    dest = Path(os.path.abspath(dest.expanduser()))
    if dest.is_dir():
        return dest / archive_name(stamp)
    if dest.name.endswith((".tar.gz", ".tgz")) and dest.parent.is_dir():
        if os.path.lexists(dest):
            raise WorkspaceError(
                f"{dest} exists already; a backup never overwrites a file",
                hint="give another file name, or a folder to put the archive in",
            )
        return dest
    raise WorkspaceError(
        f"{dest} is neither a folder nor a new .tar.gz file in an existing folder",
        hint="give an existing folder (the archive gets a name with the time in it) or the "
        "path of the archive to write, ending in .tar.gz",
    )


def _copy_tree(layout: Layout, into: Path, worktrees: set[Path]) -> dict[str, Path]:
    """Copy the files under .tmops/ into ``into`` (each reached without following a link, as
    long as it was when it was opened); return them by member name. A folder that is a git
    worktree (a ``.git`` in it) is git's, not copied; links are skipped."""
    found: dict[str, Path] = {}
    root = layout.tmops_dir
    pending = [Path()]
    while pending:
        relative = pending.pop()
        try:
            fd = open_dir(root / relative) if relative.parts else open_dir(root)
        except FileNotFoundError:
            continue
        try:
            entries = sorted(os.scandir(fd), key=lambda entry: entry.name)
        finally:
            os.close(fd)
        if any(entry.name == ".git" for entry in entries) or root / relative in worktrees:
            continue
        for entry in entries:
            path = relative / entry.name
            if entry.is_dir(follow_symlinks=False):
                if not skipped_in_tree(path):
                    pending.append(path)
            elif entry.is_file(follow_symlinks=False) and not skipped_in_tree(path):
                member = f"{TREE_PREFIX}/{path.as_posix()}"
                if _copy_file(root / path, into / path):
                    found[member] = into / path
    return found


def _copy_file(source: Path, target: Path) -> bool:
    """Copy what ``source`` holds now (up to its size when opened: a log being written may
    grow); False when it went away meanwhile."""
    try:
        fd = open_file(source, os.O_RDONLY)
    except FileNotFoundError:
        return False
    with os.fdopen(fd, "rb") as handle:
        left = os.fstat(handle.fileno()).st_size
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(out, "wb") as sink:
            while left > 0 and (chunk := handle.read(min(left, _CHUNK))):
                sink.write(chunk)
                left -= len(chunk)
    return True


def _bundle(
    git: Git,
    layout: Layout,
    features: list[FeatureRecord],
    current: dict[str, str],
    staging: Path,
    stamp: str,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Snapshot the uncommitted work of each worktree, then bundle the branches, refs/tmops/*
    and the snapshots; return the features as the manifest names them and the refs bundled."""
    described: list[dict[str, Any]] = []
    snapshots: list[str] = []
    try:
        for feature in features:
            described.append(_describe(git, layout, feature, current[feature.name], stamp))
            if described[-1]["snapshot"]:
                snapshots.append(described[-1]["snapshot"])
        refs = git.refs("refs/tmops/")
        for feature in features:
            head = git.rev(f"refs/heads/{feature.branch}")
            if head is not None:
                refs[f"refs/heads/{feature.branch}"] = head
        if refs:
            (staging / BUNDLE_MEMBER).parent.mkdir(mode=0o700)
            git.create_bundle(staging / BUNDLE_MEMBER, sorted(refs))
    finally:
        for ref in snapshots:  # in the bundle now; here the work is still in its worktree
            git.delete_ref(ref)
    return described, refs


def _describe(
    git: Git, layout: Layout, feature: FeatureRecord, run: str, stamp: str
) -> dict[str, Any]:
    worktree = Path(feature.worktree)
    inside = worktree.is_relative_to(layout.project_root)
    snapshot = None
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(worktree).st_mode):
            tree = Git(worktree)
            head = tree.head()
            commit = tree.snapshot(f"tmops({feature.name}): uncommitted work at a backup")
            if commit is not None and commit != head:
                snapshot = f"refs/tmops/{feature.name}/{run}/snapshot-{stamp}"
                git.set_ref(snapshot, commit)
    return {
        "name": feature.name,
        "branch": feature.branch,
        "run": run,
        "worktree": str(worktree),
        # where it goes in the project it is restored to; None: outside the project, kept
        "worktree_in_project": worktree.relative_to(layout.project_root).as_posix()
        if inside
        else None,
        "snapshot": snapshot,
    }


def _write_archive(target: Path, manifest: dict[str, Any], files: dict[str, Path]) -> None:
    """Write the archive to a new private file beside ``target``, then give it its name
    (never replacing a file): a half-written archive never has a backup's name."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
                tar.addfile(_member(MANIFEST_MEMBER, len(data)), fileobj=io.BytesIO(data))
                for name, path in sorted(files.items()):
                    with path.open("rb") as handle:
                        tar.addfile(_member(name, path.stat().st_size), fileobj=handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.link(temp, target)  # fails, and replaces nothing, if the name is taken
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(utc_now().timestamp())
    return info
