"""tmops_core.workspace.layout.make_private: a checkpoint tmops takes is made 0600, never
through a link. The engine's use of it, on every checkpoint it checks, is tested in
``test_engine_faults.py`` (an adopted checkpoint) and ``test_engine_content.py`` (one set
aside)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tmops_core.workspace.layout import make_private


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_readable_file_is_made_0600_and_keeps_its_content(tmp_path: Path) -> None:
    path = tmp_path / "003-tests-complete.md"
    path.write_text("**From:** Tester\n")
    path.chmod(0o644)
    assert make_private(path)
    assert mode(path) == 0o600
    assert path.read_text() == "**From:** Tester\n"


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.md"
    target.write_text("not a checkpoint\n")
    target.chmod(0o644)
    link = tmp_path / "003-tests-complete.md"
    link.symlink_to(target)
    assert not make_private(link)
    assert mode(target) == 0o644


def test_a_fifo_is_left_alone_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "003-tests-complete.md"
    os.mkfifo(fifo, 0o644)
    assert not make_private(fifo)  # O_NONBLOCK: no writer needed
    assert mode(fifo) == 0o644


def test_a_directory_or_a_missing_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "003-tests-complete.md"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert not make_private(folder)
    assert mode(folder) == 0o755
    assert not make_private(tmp_path / "005-impl-complete.md")
