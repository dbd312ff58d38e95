"""``tmops restore``: a backup archive (:mod:`~tmops_core.service.backup`) back into a project,
typically a fresh clone, so that its runs go on from where they were.

Nothing in an archive is trusted before it is checked: every member must be a regular file
with a relative name under the archive's own folders (no absolute path, no ``..``, no link or
device), extracted with tarfile's ``data`` filter into a private folder; every file must be
the one the manifest names, with its sha256; the store must pass ``PRAGMA integrity_check``,
have a schema this tmops can migrate, and be a store of this config's workspace
(``server.workspace_id``; one older than the workspace column becomes this workspace's). Only
then is anything in the project touched.

It refuses while a live engine serves the project, and, unless ``force``, when it would
replace anything: a ``.tmops`` with state in it, a branch at another commit, a worktree path
taken. With ``force`` what it replaces is kept aside: ``.tmops`` moved to
``.tmops/.replaced-<stamp>``, a branch kept at ``refs/tmops/replaced-<stamp>/heads/<branch>``.

Then: the files of ``.tmops/`` and the store are put in place, the refs fetched from the
bundle, the worktrees made again where the store says (their paths moved to this project),
and the work that was uncommitted at the backup put back in them, uncommitted. The store's
engines (processes of the project it was copied from) are recorded taken over, the attempts
that were running abandoned, and a run that was running paused
(:func:`~tmops_core.store.maintenance.adopt_restored`): ``tmops resume`` drives it on from its
phase; a paused or queued run goes on as it would have (``tmops approve``, ``tmops start``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tmops_core.git import Git
from tmops_core.orchestration.liveness import engine_running
from tmops_core.service import archive as fmt
from tmops_core.store import STORE_NAME, SQLiteStore, open_existing_store, refuse_shared
from tmops_core.store.maintenance import adopt_restored, head_version, inspect_database
from tmops_core.workspace.features import exclude_tmops
from tmops_core.workspace.layout import (
    Layout,
    atomic_write,
    ensure_private_dir,
    iso,
    lstat_checked,
    open_dir,
    point_current,
    utc_now,
    validate_feature_name,
    validate_run_name,
)
from tmops_hookspecs import WorkspaceError

__all__ = ["restore_backup"]


def restore_backup(
    layout: Layout, archive: Path, *, worktree_root: str, force: bool = False,
    actor: str = "local", store_url: str | None = None, workspace: str = "default",
) -> dict[str, Any]:  # fmt: skip
    """Restore ``archive`` into the project ``layout``; return what was restored.

    ``worktree_root`` is ``features.worktree_root`` of this project's config: a feature's
    worktree is made where ``tmops init`` would make it here (no path is taken from the
    archive), or in the project root for a feature checked out there. A run paused because
    it was running gets ``orchestration.run.paused`` in its audit trail, naming ``actor``.
    ``store_url``: the config's ``store.url``; a PostgreSQL store is refused (pg_restore).
    ``workspace``: the config's ``server.workspace_id``; a backup of another is refused.
    """
    refuse_shared(store_url, "`tmops restore`")
    git = Git(layout.project_root)
    git.toplevel()  # a clear error outside a git repository
    staging = Path(tempfile.mkdtemp(prefix="tmops-restore-"))
    try:
        manifest = _unpack(archive, staging, workspace)
        refs = _refs(manifest)
        features = _features(manifest, refs)
        _check_live_engine(layout, workspace)
        stamp = f"{utc_now():%Y%m%d-%H%M%S}"
        worktrees = _worktree_paths(layout, features, worktree_root)
        git.prune_worktrees()  # a branch "checked out" in a worktree that is gone is not
        conflicts = _conflicts(layout, git, worktrees, refs)
        if conflicts and not force:
            raise WorkspaceError(
                "restoring would replace: " + "; ".join(conflicts),
                hint="restore into a fresh clone, or add --force: what is replaced is kept "
                f"aside (.tmops/.replaced-{stamp}, refs/tmops/replaced-{stamp}/...)",
            )
        kept = _set_aside(layout, git, refs, stamp) if conflicts else []
        _place_files(layout, staging, features)
        if fmt.BUNDLE_MEMBER in _names(manifest):
            git.fetch_bundle(staging / fmt.BUNDLE_MEMBER, sorted(refs))
        exclude_tmops(git)
        # migrated to this tmops' head (a store older than 0010 stamped with the workspace)
        store = SQLiteStore(layout.tmops_dir / STORE_NAME, workspace=workspace)
        try:
            paths = {name: str(path) for name, path in worktrees.items()}
            now = iso(utc_now())
            adopted = adopt_restored(store, worktrees=paths, now=now)
            for feature, run in adopted.paused:
                why = f"restored from {archive.name}, taken while the run ran"
                data = {"run": run, "now": True, "status": "paused", "actor": actor, "reason": why}
                store.add_event(feature, run, "orchestration.run.paused", json.dumps(data), now)
            runs = {f["name"]: store.run(f["name"], f["run"]) for f in features}
        finally:
            store.close()
        made, skipped = _make_worktrees(layout, git, features, worktrees)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "archive": str(archive),
        "project": str(layout.project_root),
        "created_at": manifest.get("created_at"),
        "features": {
            name: {"run": run.run, "status": run.status, "phase": run.current_phase}
            for name, run in runs.items()
            if run is not None
        },
        "worktrees": made,
        "worktrees_skipped": skipped,
        "paused": [f"{feature}/{run}" for feature, run in adopted.paused],
        "abandoned_attempts": adopted.attempts,
        "kept_aside": kept,
        "message": f"restored {len(features)} feature(s) from {archive}; "
        "`tmops status FEATURE` says how each run goes on (a run that was running is paused: "
        "`tmops resume FEATURE`)",
    }


# -- checking the archive ---------------------------------------------------------------------


def _unpack(archive: Path, into: Path, workspace: str) -> dict[str, Any]:
    """Check every member, extract them, check them against the manifest and the store
    against ``workspace``; the manifest."""
    if not archive.is_file():
        raise WorkspaceError(f"{archive} is not a file", hint="give the path of a backup archive")
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                problem = fmt.member_problem(member.name)
                if problem is None and not member.isfile():
                    problem = "not a regular file (a link, a device or a folder)"
                if problem is not None:
                    raise _bad(archive, f"its member {member.name!r} is {problem}")
            if len({m.name for m in members}) != len(members):
                raise _bad(archive, "it holds a file twice")
            size = sum(m.size for m in members)
            if size > shutil.disk_usage(into).free:
                raise WorkspaceError(
                    f"{archive} unpacks to {size} bytes, more than the free space in {into}",
                    hint="free some space (or set TMPDIR to a roomier folder) and try again",
                )
            tar.extractall(into, filter="data")  # the second line of defence
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _bad(archive, f"it cannot be read as a tar.gz file ({exc})") from exc
    manifest = _manifest(archive, into)
    listed = {entry["path"]: entry for entry in manifest["files"]}
    present = {m.name for m in members} - {fmt.MANIFEST_MEMBER}
    if present != set(listed):
        extra = sorted(present - set(listed)) + sorted(set(listed) - present)
        raise _bad(archive, f"its files are not the ones its manifest lists: {extra[:5]}")
    for name, entry in listed.items():
        if fmt.sha256_file(into / name) != entry.get("sha256"):
            raise _bad(archive, f"{name} is not the file that was backed up (sha256 differs)")
    _check_store(archive, into, manifest, workspace)
    return manifest


def _check_store(archive: Path, into: Path, manifest: dict[str, Any], workspace: str) -> None:
    """The unpacked store: sound, of a schema this tmops migrates, and ``workspace``'s."""
    report = inspect_database(into / fmt.STORE_MEMBER)
    if not report.sound:
        raise _bad(archive, f"its store fails the integrity check: {report.integrity[0]}")
    if report.version > head_version():
        raise WorkspaceError(
            f"{archive} was made by a newer tmops: its store has schema version "
            f"{report.version}, this tmops knows up to {head_version()}",
            hint=f"upgrade tmops (the backup was made by tmops {manifest.get('tmops_version')})",
        )
    if report.workspace not in (None, workspace):
        # refused, not stamped anew: the audit trail would no longer say whose it was
        raise WorkspaceError(
            f"{archive} is a backup of workspace {report.workspace!r}, and this project's "
            f"config says server.workspace_id {workspace!r}; nothing was restored",
            hint=f"restore it with a config whose server.workspace_id is {report.workspace!r} "
            f"(it is that workspace's project), or restore a backup of {workspace!r}",
        )


def _manifest(archive: Path, into: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((into / fmt.MANIFEST_MEMBER).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _bad(archive, f"its manifest is missing or not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != fmt.FORMAT:
        raise _bad(archive, "it is not a tmops backup (no tmops manifest)")
    if manifest.get("format_version") != fmt.FORMAT_VERSION:
        raise WorkspaceError(
            f"{archive} has backup format {manifest.get('format_version')!r}; this tmops reads "
            f"format {fmt.FORMAT_VERSION}",
            hint=f"restore it with the tmops that made it ({manifest.get('tmops_version')})",
        )
    if not isinstance(manifest.get("files"), list) or fmt.STORE_MEMBER not in _names(manifest):
        raise _bad(archive, "its manifest lists no store")
    return manifest


def _names(manifest: dict[str, Any]) -> set[str]:
    return {str(entry.get("path")) for entry in manifest["files"] if isinstance(entry, dict)}


def _features(manifest: dict[str, Any], refs: dict[str, str]) -> list[dict[str, Any]]:
    """The manifest's features, each name checked, its branch and snapshot among the refs."""
    features = manifest.get("features")
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise WorkspaceError("the backup's manifest lists no features")
    for feature in features:
        validate_feature_name(feature.get("name"))
        validate_run_name(feature.get("run"))
        if f"refs/heads/{feature.get('branch')}" not in refs:
            raise WorkspaceError(
                f"the backup's manifest names the branch {feature.get('branch')!r} of "
                f"{feature['name']} but holds no such branch"
            )
        if feature.get("snapshot") is not None and feature["snapshot"] not in refs:
            raise WorkspaceError(f"the backup holds no snapshot {feature['snapshot']!r}")
    return features


def _refs(manifest: dict[str, Any]) -> dict[str, str]:
    refs = manifest.get("refs") or {}
    if not isinstance(refs, dict) or not all(
        isinstance(ref, str) and ref.startswith(("refs/heads/", "refs/tmops/")) for ref in refs
    ):
        raise WorkspaceError("the backup's manifest names refs outside refs/heads and refs/tmops")
    return {str(ref): str(sha) for ref, sha in refs.items()}


def _bad(archive: Path, why: str) -> WorkspaceError:
    return WorkspaceError(
        f"{archive} is not a sound tmops backup: {why}; nothing was restored",
        hint="restore another backup (`tmops backup` writes a new one)",
    )


# -- what the project holds -------------------------------------------------------------------


def _check_live_engine(layout: Layout, workspace: str) -> None:
    try:
        store = open_existing_store(layout.tmops_dir / STORE_NAME, workspace=workspace)
    except (sqlite3.DatabaseError, WorkspaceError):
        store = None  # damaged or another workspace's, the one to replace: the lock still tells
    try:
        if engine_running(layout, store):
            raise WorkspaceError(
                f"an engine serves {layout.project_root}: a restore would pull its state away "
                "from under it",
                hint="let its runs finish or stop them (`tmops pause FEATURE --now` or "
                "`tmops cancel FEATURE`), then restore",
            )
    finally:
        if store is not None:
            store.close()


def _conflicts(
    layout: Layout, git: Git, worktrees: dict[str, Path], refs: dict[str, str]
) -> list[str]:
    found = []
    if lstat_checked(layout.tmops_dir) is not None and any(_state_in(layout.tmops_dir)):
        found.append(f"the state in {layout.tmops_dir}")
    for ref, sha in sorted(refs.items()):
        here = git.rev(ref)
        moved = ref.startswith("refs/heads/") and here is not None and here != sha
        if moved and here is not None and not git.is_ancestor(here, sha):
            found.append(f"the branch {ref.removeprefix('refs/heads/')} (at {here[:12]})")
    known = {w.path.resolve() for w in git.worktrees()}
    for path in worktrees.values():
        if path == layout.project_root or path.resolve() in known or _tmops_path(layout, path):
            continue
        if os.path.lexists(path):
            found.append(f"the path {path} (left alone: no worktree is made there)")
    return found


def _tmops_path(layout: Layout, path: Path) -> bool:
    """Whether ``path`` is under .tmops/ (replaced, and kept aside, with the rest of it)."""
    return path.is_relative_to(layout.tmops_dir)


def _state_in(tmops_dir: Path) -> list[str]:
    """What under .tmops/ a restore would replace: anything but archives and locks."""
    fd = open_dir(tmops_dir)
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    return [n for n in names if n != fmt.ARCHIVES_DIR and not n.endswith(".lock")]


def _set_aside(layout: Layout, git: Git, refs: dict[str, str], stamp: str) -> list[str]:
    """Keep what the restore replaces: what .tmops/ held moved whole into
    ``.tmops/.replaced-<stamp>/`` (private, out of git like the rest of .tmops; its archives
    stay where they were), the branches it moves kept under refs/tmops/replaced-<stamp>/."""
    kept = []
    if lstat_checked(layout.tmops_dir) is not None and _state_in(layout.tmops_dir):
        moving = layout.project_root / f".tmops.replacing-{stamp}"
        os.rename(layout.tmops_dir, moving)
        ensure_private_dir(layout.tmops_dir)
        aside = layout.tmops_dir / f".replaced-{stamp}"
        os.rename(moving, aside)
        if lstat_checked(aside / fmt.ARCHIVES_DIR) is not None:
            os.rename(aside / fmt.ARCHIVES_DIR, layout.tmops_dir / fmt.ARCHIVES_DIR)
        git.prune_worktrees()  # the worktrees that moved with it are git's no more
        kept.append(str(aside))
    for ref, sha in sorted(refs.items()):
        here = git.rev(ref)
        if ref.startswith("refs/heads/") and here not in (None, sha):
            backup = f"refs/tmops/replaced-{stamp}/heads/{ref.removeprefix('refs/heads/')}"
            git.set_ref(backup, here)
            kept.append(backup)
    return kept


# -- putting it back --------------------------------------------------------------------------


def _place_files(layout: Layout, staging: Path, features: list[dict[str, Any]]) -> None:
    """The files of .tmops/, the store, then each feature's ``current`` link."""
    ensure_private_dir(layout.tmops_dir)
    tree = staging / fmt.TREE_PREFIX
    for path in sorted(tree.rglob("*")) if tree.is_dir() else []:
        if path.is_file():
            target = layout.tmops_dir / path.relative_to(tree)
            os.close(open_dir(target.parent, create=True))
            atomic_write(target, path.read_bytes())
    atomic_write(layout.tmops_dir / STORE_NAME, (staging / fmt.STORE_MEMBER).read_bytes())
    for feature in features:
        if lstat_checked(layout.run_dir(feature["name"], feature["run"])) is not None:
            point_current(layout, feature["name"], feature["run"])


def _worktree_paths(
    layout: Layout, features: list[dict[str, Any]], worktree_root: str
) -> dict[str, Path]:
    """Each feature's worktree in this project: the project root for a feature checked out
    there, else ``<worktree_root>/<feature>`` as ``tmops init`` makes it."""
    root = Path(os.path.expanduser(worktree_root))
    base = Path(os.path.normpath(root if root.is_absolute() else layout.project_root / root))
    return {
        f["name"]: layout.project_root if f.get("worktree_in_project") == "." else base / f["name"]
        for f in features
    }


def _make_worktrees(
    layout: Layout, git: Git, features: list[dict[str, Any]], paths: dict[str, Path]
) -> tuple[list[str], list[str]]:
    """Add the worktrees git does not have, and put the uncommitted work back in them; a path
    taken by something else is left alone. The worktrees made, and those left alone."""
    known = {w.path.resolve() for w in git.worktrees()}
    made, skipped = [], []
    for feature in features:
        path = paths[feature["name"]]
        if path == layout.project_root or path.resolve() in known:
            continue
        if os.path.lexists(path):
            skipped.append(str(path))
            continue
        if path.is_relative_to(layout.project_root):
            os.close(open_dir(path.parent, create=True, root=layout.project_root))
        else:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        git.add_worktree(path, feature["branch"])
        made.append(str(path))
        snapshot = feature.get("snapshot")
        if snapshot and git.rev(snapshot) is not None:
            tree = Git(path)
            head = tree.head()
            if head is not None:
                tree.restore_paths(snapshot, tree.changed_paths(head, snapshot))
    return made, skipped
