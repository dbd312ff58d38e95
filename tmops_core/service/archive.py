"""The backup archive's format, shared by :mod:`~tmops_core.service.backup` (which writes it)
and :mod:`~tmops_core.service.restore` (which checks and reads it).

A backup is one gzip'd tar file, mode 0600, of regular files only (no links, devices or
folders as members)::

    manifest.json        what the archive holds: versions, time, features, refs, every file
                         with its size and sha256
    store/tmops.db       the store, an online copy (SQLite's backup API)
    tree/<path>          the files under .tmops/ (checkpoints, logs, TASK_SPEC.md...)
    git/refs.bundle      a git bundle of the feature branches, refs/tmops/* and the snapshots
                         of uncommitted work
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

__all__ = [
    "ARCHIVES_DIR",
    "BUNDLE_MEMBER",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_MEMBER",
    "STORE_MEMBER",
    "TREE_PREFIX",
    "archive_name",
    "member_problem",
    "sha256_file",
]

FORMAT = "tmops-backup"
FORMAT_VERSION = 1
MANIFEST_MEMBER = "manifest.json"
STORE_MEMBER = "store/tmops.db"
BUNDLE_MEMBER = "git/refs.bundle"
TREE_PREFIX = "tree"
#: the folder under .tmops/ where ``tmops backup`` puts archives when given no DEST
ARCHIVES_DIR = "archives"
_CHUNK = 1 << 20


def archive_name(stamp: str) -> str:
    """The file name of a backup taken at ``stamp`` (``20261202-104900``)."""
    return f"tmops-backup-{stamp}.tar.gz"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def member_problem(name: str) -> str | None:
    """Why ``name`` may not be a member of a backup archive (None when it may): an absolute
    path, a ``..``, or a place outside the archive's own folders."""
    if not name or "\0" in name or "\\" in name:
        return "an empty or malformed name"
    path = PurePosixPath(name)
    if path.is_absolute():
        return "an absolute path"
    if any(part in ("..", "") for part in path.parts) or name.startswith("./"):
        return "a '..' or an empty part in its path"
    if name in (MANIFEST_MEMBER, STORE_MEMBER, BUNDLE_MEMBER):
        return None
    if path.parts[0] == TREE_PREFIX and len(path.parts) > 1:
        return None
    return "a file no tmops backup holds"
