"""How much disk a folder takes, and the worktrees' total against a budget, cheaply.

A folder is measured the way ``du`` does: the blocks of every entry under it, the folder
itself included, each inode once (hard links), links counted as themselves and never
followed, nothing outside the folder's file system. The worktrees' sizes are kept in
``.tmops/worktree-sizes.json`` for :data:`SIZE_TTL_S`, so ``list`` and ``status`` (polled) walk
a worktree at most once in that time, and never when no budget is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from tmops_core.workspace.layout import Layout, atomic_write, read_checked
from tmops_hookspecs import TmopsError

__all__ = [
    "GB", "SIZE_TTL_S", "forget_sizes", "human_bytes", "tree_bytes", "worktrees_bytes",
]  # fmt: skip

GB = 1024**3
#: how long a measured worktree size stays good for the budget's warning
SIZE_TTL_S = 300.0
_CACHE = "worktree-sizes.json"
_BLOCK = 512  # st_blocks counts 512-byte units whatever the file system's block size


def tree_bytes(path: Path) -> int:
    """The disk ``path`` takes (0 if missing), measured as ``du -s --block-size=1`` does."""
    try:
        top = os.lstat(path)
    except OSError:
        return 0
    total = top.st_blocks * _BLOCK
    if not stat.S_ISDIR(top.st_mode):
        return total
    seen: set[tuple[int, int]] = {(top.st_dev, top.st_ino)}
    pending = [str(path)]
    while pending:
        folder = pending.pop()
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (info.st_dev, info.st_ino)
                if key in seen or info.st_dev != top.st_dev:
                    continue
                seen.add(key)
                total += info.st_blocks * _BLOCK
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
    return total


def human_bytes(count: int) -> str:
    """``1.5 GB``, ``320.0 MB``, ``12.0 KB``, ``0 B``: binary units, as the budget's GB."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def worktrees_bytes(
    layout: Layout, worktrees: Iterable[Path], *, now: float | None = None, keep: bool = True
) -> int:
    """The total size of ``worktrees``, each measured at most once per :data:`SIZE_TTL_S`
    (the sizes are kept in the cache file; a cache that cannot be read or written only costs
    a walk). ``keep=False`` uses the kept sizes but writes nothing (a pure read)."""
    now = time.time() if now is None else now
    cache = _read_cache(layout)
    fresh: dict[str, tuple[int, float]] = {}
    for worktree in dict.fromkeys(worktrees):
        if not os.path.isdir(worktree):  # removed (tmops cleanup): nothing to count
            continue
        known = cache.get(str(worktree))
        fresh_enough = known is not None and 0 <= now - known[1] < SIZE_TTL_S
        fresh[str(worktree)] = known if known and fresh_enough else (tree_bytes(worktree), now)
    total = sum(size for size, _ in fresh.values())
    if keep and fresh != cache:
        with contextlib.suppress(OSError, TmopsError):
            atomic_write(layout.tmops_dir / _CACHE, json.dumps(fresh))
    return total


def forget_sizes(layout: Layout) -> None:
    """Drop the kept sizes (after worktrees were removed): the next reading measures again."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.tmops_dir / _CACHE)


def _read_cache(layout: Layout) -> dict[str, tuple[int, float]]:
    try:
        data = json.loads(read_checked(layout.tmops_dir / _CACHE, limit=1 << 20) or b"{}")
    except (OSError, ValueError, TmopsError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: (int(value[0]), float(value[1]))
        for key, value in data.items()
        if isinstance(value, list) and len(value) == 2
    }
