"""Planting symlinks where tmops keeps its files, and checking that nothing went through them.

Each test plants a link at a path tmops opens or creates, pointing outside the project: at a
file that stands in for ``/etc/passwd`` (``kind="file"``) or at a folder (``kind="folder"``).
:meth:`Outside.unchanged` then says whether anything outside was read into tmops, written or
created through the link. Used by ``test_links_*.py`` and ``test_engine_spawn.py``; a plain
module, not a conftest: it holds no fixture.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

#: What the stand-in for /etc/passwd holds; it must never show up in anything tmops writes.
OUTSIDE_TEXT = "root:x:0:0:root:/root:/bin/bash\nstand-in for /etc/passwd\n"
KINDS = ("file", "folder")


@dataclass
class Outside:
    """A folder outside the project: ``passwd`` (a file) and ``folder`` (with one file in it)."""

    root: Path
    before: dict[str, bytes | None] = field(default_factory=dict)

    @classmethod
    def make(cls, root: Path) -> Outside:
        root.mkdir()
        (root / "passwd").write_text(OUTSIDE_TEXT)
        (root / "folder").mkdir()
        (root / "folder" / "kept.txt").write_text("kept\n")
        outside = cls(root)
        outside.before = outside.snapshot()
        return outside

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"

    @property
    def folder(self) -> Path:
        return self.root / "folder"

    def target(self, kind: str) -> Path:
        return self.passwd if kind == "file" else self.folder

    def snapshot(self) -> dict[str, bytes | None]:
        """Every path under the outside folder with its bytes (``None`` for a folder)."""
        found: dict[str, bytes | None] = {}
        for folder, dirs, files in os.walk(self.root):
            for name in dirs:
                found[os.path.relpath(os.path.join(folder, name), self.root)] = None
            for name in files:
                path = Path(folder, name)
                found[str(path.relative_to(self.root))] = path.read_bytes()
        return found

    def unchanged(self) -> bool:
        return self.snapshot() == self.before

    def plant(self, path: Path, kind: str) -> Path:
        """Replace whatever is at ``path`` with a link to the outside file or folder."""
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(self.target(kind))
        return path


def says_remove_the_link(message: str, link: Path) -> bool:
    """Whether an error names the link and says to remove it."""
    return str(link) in message and "remove the link" in message
