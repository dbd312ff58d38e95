"""Copying what git does not give a new worktree: the gitignored files the project needs to run
(``.env``, local settings), listed in ``features.worktree_copy``.

Each entry is a path or a glob relative to the project root (the config refuses an absolute one
and ``..``). A match is copied only if it is reached without a link on the way; a file keeps its
mode (a 0600 secret stays 0600), a folder is copied file by file; links inside are not followed
but skipped; ``.git`` and ``.tmops`` are never copied, and nothing already in the worktree (a
tracked file) is overwritten.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from tmops_core.log import logger
from tmops_core.workspace.layout import lstat_checked, open_file, read_checked
from tmops_hookspecs import TmopsError

__all__ = ["copy_into_worktree"]

#: never copied: git's own data and tmops' (the worktree lives inside .tmops)
_NEVER = {".git", ".tmops"}


def copy_into_worktree(root: Path, worktree: Path, patterns: Iterable[str]) -> list[str]:
    """Copy the files ``patterns`` match in ``root`` into ``worktree``; what was copied, as
    change lines (``copied .env``)."""
    copied: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, root_dir=root, recursive=True, include_hidden=True))
        if not matches:
            logger.info("features.worktree_copy: nothing matches {!r} in {}", pattern, root)
        for relative in matches:
            copied.extend(_copy(root, worktree, Path(relative)))
    return copied


def _copy(root: Path, worktree: Path, relative: Path) -> list[str]:
    if _NEVER & set(relative.parts) or ".." in relative.parts:
        return []
    try:
        info = lstat_checked(root / relative, root=root)  # a link anywhere on the way: refused
    except TmopsError as exc:
        logger.warning("features.worktree_copy: {} skipped: {}", relative, exc.message)
        return []
    if info is None:
        return []
    if stat.S_ISDIR(info.st_mode):
        found = []
        for child in sorted(os.listdir(root / relative)):
            found.extend(_copy(root, worktree, relative / child))
        return found
    if not stat.S_ISREG(info.st_mode):
        return []
    target = worktree / relative
    if os.path.lexists(target):  # tracked, or copied already: the worktree's own wins
        return []
    data = read_checked(root / relative, root=root) or b""
    mode = stat.S_IMODE(info.st_mode)
    # its folders made 0700 where missing, none of them a link
    fd = open_file(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode=mode, create_dirs=True,
                   root=worktree)  # fmt: skip
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        os.fchmod(handle.fileno(), mode)  # whatever the umask took away
    return [f"copied {relative}"]
