"""Whose a store is: the workspace (``server.workspace_id``) that created or upgraded it.

Migration 0010 records it in ``store_workspace`` (one row) and stamps it on the rows already
there; the store writes it into every row it inserts. Opening a store of another workspace is
refused here, before anything is read or written: rows of two workspaces never mix in one store,
and none is read as another workspace's.
"""

from __future__ import annotations

from tmops_core.store.dialect import SQLConnection
from tmops_hookspecs import WorkspaceError

__all__ = ["check_workspace", "recorded_workspace"]


def recorded_workspace(db: SQLConnection) -> str | None:
    """The workspace a store migrated to 0010 or later records; None: its row is gone."""
    row = db.execute("SELECT workspace_id FROM store_workspace").fetchone()
    return None if row is None else str(row[0])


def check_workspace(db: SQLConnection, workspace: str, *, store: str, fix: str) -> None:
    """Refuse the store ``store`` (its name in a message) unless it is ``workspace``'s.

    :raises WorkspaceError: it records another workspace (``fix``, formatted with ``{recorded}``
        and ``{configured}``, says what to do), or none.
    """
    recorded = recorded_workspace(db)
    if recorded == workspace:
        return
    if recorded is None:
        raise WorkspaceError(
            f"{store} records no workspace: its store_workspace row is gone",
            hint="restore the last backup (`tmops restore ARCHIVE --force`)",
        )
    raise WorkspaceError(
        f"{store} was made for workspace {recorded!r}, and this config's server.workspace_id "
        f"is {workspace!r}",
        hint=fix.format(recorded=repr(recorded), configured=repr(workspace)),
    )
