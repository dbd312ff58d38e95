"""No link is followed under ``.tmops/``: the opening helpers of ``workspace.layout``, the store
and the agent logs, each against a link planted on the way to a file or at the file itself.

Every link points outside the project, at a stand-in for ``/etc/passwd`` or at a folder; each
test checks the refusal names the link and says to remove it, and that nothing outside changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.links_support import KINDS, OUTSIDE_TEXT, Outside, says_remove_the_link
from tmops_core.agents.io import AgentIO
from tmops_core.store import STORE_NAME, SQLiteStore
from tmops_core.workspace.layout import (
    Layout,
    atomic_write,
    ensure_private_dir,
    locked,
    open_dir,
    open_file,
    read_text_checked,
)
from tmops_core.workspace.project_files import FeatureLine, read_features, write_feature_line
from tmops_hookspecs import WorkspaceError


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    root = tmp_path / "project"
    (root / ".tmops").mkdir(parents=True)
    return Layout(root.resolve())


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    return Outside.make(tmp_path / "outside")


def refused(action: Callable[[], object], link: Path) -> str:
    with pytest.raises(WorkspaceError) as caught:
        action()
    message = str(caught.value)
    assert says_remove_the_link(message, link), message
    return message


# -- a link at the file itself ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_atomic_write_refuses_a_link_at_the_file(
    layout: Layout, outside: Outside, kind: str
) -> None:
    link = outside.plant(layout.tmops_dir / "run" / "metrics.json", kind)
    refused(lambda: atomic_write(link, "{}"), link)
    assert os.path.islink(link)
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_reading_refuses_a_link_at_the_file(layout: Layout, outside: Outside, kind: str) -> None:
    link = outside.plant(layout.tmops_dir / "f" / "TASK_SPEC.md", kind)
    refused(lambda: read_text_checked(link), link)


@pytest.mark.parametrize("kind", KINDS)
def test_a_lock_file_that_is_a_link_is_refused(layout: Layout, outside: Outside, kind: str) -> None:
    link = outside.plant(layout.tmops_dir / ".init.lock", kind)

    def lock() -> None:
        with locked(link):
            pass

    refused(lock, link)
    assert outside.unchanged()


# -- a link on a folder on the way ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_atomic_write_refuses_a_linked_folder_on_the_way(
    layout: Layout, outside: Outside, kind: str
) -> None:
    link = outside.plant(layout.tmops_dir / "auth-api", kind)
    target = link / "runs" / "initial" / "checkpoints" / "004-impl-trigger.md"
    refused(lambda: atomic_write(target, "trigger"), link)
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_reading_through_a_linked_folder_is_refused(
    layout: Layout, outside: Outside, kind: str
) -> None:
    (outside.folder / "TASK_SPEC.md").write_text(OUTSIDE_TEXT)
    outside.before = outside.snapshot()
    link = outside.plant(layout.tmops_dir / "auth-api", kind)
    refused(lambda: read_text_checked(link / "TASK_SPEC.md"), link)


@pytest.mark.parametrize("kind", KINDS)
def test_creating_a_folder_under_a_linked_one_is_refused(
    layout: Layout, outside: Outside, kind: str
) -> None:
    link = outside.plant(layout.tmops_dir / "logs", kind)
    refused(lambda: ensure_private_dir(link / "sub"), link)
    refused(lambda: open_dir(link / "a" / "b", create=True), link)
    assert outside.unchanged()


def test_a_linked_tmops_folder_is_refused(layout: Layout, outside: Outside) -> None:
    layout.tmops_dir.rmdir()
    link = outside.plant(layout.tmops_dir, "folder")
    refused(lambda: atomic_write(layout.features_file, "x"), link)
    assert outside.unchanged()


def test_the_project_root_itself_may_be_reached_through_a_link(
    tmp_path: Path, layout: Layout
) -> None:
    # The project root is where the user works; only what is below it is tmops's to check.
    alias = tmp_path / "alias"
    alias.symlink_to(layout.project_root)
    atomic_write(alias / ".tmops" / "FEATURES.txt", "ok\n")
    assert layout.features_file.read_text() == "ok\n"


def test_a_fifo_is_refused_without_blocking(layout: Layout) -> None:
    fifo = layout.tmops_dir / "FEATURES.txt"
    os.mkfifo(fifo)
    with pytest.raises(WorkspaceError, match="not a regular file"):
        os.close(open_file(fifo, os.O_RDONLY))


def test_folders_made_on_the_way_are_private(layout: Layout) -> None:
    os.close(open_dir(layout.tmops_dir / "a" / "b", create=True))
    for folder in (layout.tmops_dir / "a", layout.tmops_dir / "a" / "b"):
        assert (folder.stat().st_mode & 0o777) == 0o700


# -- FEATURES.txt --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_features_txt_that_is_a_link_is_neither_read_nor_written(
    layout: Layout, outside: Outside, kind: str
) -> None:
    link = outside.plant(layout.features_file, kind)
    refused(lambda: read_features(layout), link)
    line = FeatureLine("auth-api", "initialized", "2026-01-01T00:00:00Z", "feature/auth-api")
    refused(lambda: write_feature_line(layout, line, replace=True), link)
    assert outside.unchanged()


# -- the store -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", [STORE_NAME, f"{STORE_NAME}-wal", f"{STORE_NAME}-shm"])
def test_the_store_is_not_opened_through_a_link(
    layout: Layout, outside: Outside, kind: str, name: str
) -> None:
    link = outside.plant(layout.tmops_dir / name, kind)
    refused(lambda: SQLiteStore(layout.tmops_dir / STORE_NAME), link)
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_a_reader_refuses_a_linked_store_rather_than_ignoring_it(
    layout: Layout, outside: Outside, kind: str
) -> None:
    link = outside.plant(layout.tmops_dir / STORE_NAME, kind)
    refused(lambda: SQLiteStore.open_existing(link), link)
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_the_store_is_not_created_in_a_linked_tmops(
    tmp_path: Path, outside: Outside, kind: str
) -> None:
    root = (tmp_path / "p").resolve()
    root.mkdir()
    link = outside.plant(root / ".tmops", kind)
    refused(lambda: SQLiteStore(link / STORE_NAME), link)
    assert outside.unchanged()


# -- agent and gate logs -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_an_agent_log_in_a_linked_logs_folder_is_refused(
    layout: Layout, outside: Outside, kind: str
) -> None:
    logs = layout.logs_dir("auth-api", "initial")
    logs.parent.mkdir(parents=True)
    link = outside.plant(logs, kind)
    agent_io = AgentIO(link / "tester.log", on_line=lambda _line: None, stdin=None)
    refused(agent_io.open_log, link)
    assert outside.unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_an_agent_log_that_is_a_link_is_refused(
    layout: Layout, outside: Outside, kind: str
) -> None:
    link = outside.plant(layout.logs_dir("auth-api", "initial") / "gate-tester.log", kind)
    agent_io = AgentIO(link, on_line=lambda _line: None, stdin=None)
    refused(agent_io.open_log, link)
    assert outside.unchanged()
