"""The store as a file: an online copy, an integrity and schema report, and making a restored
copy this project's own.

SQLite only, like :mod:`tmops_core.store.sqlite` (these functions open their own connections
to a database file). Copies use SQLite's online backup API, which reads one consistent
snapshot while engines go on writing. Like the rest of the store package, this is the only
place with SQL for what it does.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import attrs

from tmops_core.lifecycle import (
    LIVE_ATTEMPT_STATES,
    AttemptState,
    EngineState,
    PauseReason,
    RunState,
    check_run_transition,
)
from tmops_core.secrets import redact_text
from tmops_core.store.sqlite import SQLiteStore, migrations
from tmops_core.store.workspace import recorded_workspace
from tmops_core.workspace.layout import lstat_checked, open_file
from tmops_hookspecs import WorkspaceError

__all__ = [
    "RESTORED_MESSAGE",
    "DatabaseReport",
    "Restored",
    "adopt_restored",
    "copy_database",
    "head_version",
    "inspect_database",
]


#: the migration that records the store's workspace (``0010_workspace.sql``)
_WORKSPACE_VERSION = 10


def head_version() -> int:
    """The schema version this tmops migrates a store to (its newest migration)."""
    return max((version for version, _name, _statements in migrations()), default=0)


@attrs.frozen
class DatabaseReport:
    """What :func:`inspect_database` found: ``integrity`` is empty for a sound file."""

    integrity: tuple[str, ...]
    version: int
    #: the workspace (``server.workspace_id``) the store was made for; None: it names none
    #: (older than migration 0010: the workspace that opens it first makes it its own)
    workspace: str | None = None

    @property
    def sound(self) -> bool:
        return not self.integrity


def _check_files(path: Path) -> None:
    # SQLite would follow a link at the database or at one of the files beside it.
    for suffix in ("", "-wal", "-shm", "-journal"):
        lstat_checked(path.with_name(path.name + suffix))


def copy_database(source: Path, target: Path) -> int:
    """Copy the database ``source`` to ``target`` (a new file, 0600) with the online backup
    API: one consistent snapshot, taken while engines write; return its schema version."""
    _check_files(source)
    os.close(open_file(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, root=target.parent))
    src = sqlite3.connect(source, timeout=10)
    try:
        src.execute("PRAGMA busy_timeout=10000")
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: all in one step, under one read snapshot
            row = dst.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise WorkspaceError(f"cannot copy the tmops store {source}: {exc}") from exc
    finally:
        src.close()
    return int(row[0] or 0)


def inspect_database(path: Path) -> DatabaseReport:
    """``PRAGMA integrity_check``, the schema version and the workspace of the database
    ``path``, read only: nothing is migrated or written."""
    _check_files(path)
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return DatabaseReport((f"cannot open it: {exc}",), 0)
    try:
        try:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return DatabaseReport((str(exc),), 0)
        problems = tuple(str(row[0]) for row in rows if row[0] != "ok")
        try:
            row = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            version = int(row[0] or 0)
        except sqlite3.DatabaseError:
            return DatabaseReport((*problems, "it has no schema_migrations table"), 0)
        try:
            workspace = recorded_workspace(db) if version >= _WORKSPACE_VERSION else None
        except sqlite3.DatabaseError:
            return DatabaseReport((*problems, "it has no store_workspace table"), version)
        return DatabaseReport(problems, version, workspace)
    finally:
        db.close()


@attrs.frozen
class Restored:
    """What :func:`adopt_restored` changed."""

    #: engines that served the project when the copy was taken, now recorded taken over
    engines: int
    #: attempts whose agents ran then, now recorded abandoned
    attempts: int
    #: runs that were running then, now paused (``tmops resume`` goes on)
    paused: tuple[tuple[str, str], ...]


#: why a run that was running when its backup was taken is paused after the restore
RESTORED_MESSAGE = "restored from a backup taken while it ran; `tmops resume` goes on"


def adopt_restored(store: SQLiteStore, *, worktrees: Mapping[str, str], now: str) -> Restored:
    """Make a restored copy of a store this project's, in one transaction.

    The engines of the copy (processes of the project it was taken from) are recorded taken
    over; the attempts that ran are recorded abandoned, so no engine here kills what they
    name (the other project's agents); a run that was running is paused (``requested``, a new
    fencing token, no engine), so it goes on when a person says ``tmops resume``, from its
    phase, and nothing starts a paid agent on its own; ``worktrees`` gives features their
    paths in this project.
    """
    message = redact_text(
        "restored from a backup taken while this attempt ran; the phase runs again on resume"
    )
    live = tuple(sorted(LIVE_ATTEMPT_STATES))
    with store.transaction() as db:
        engines = db.execute(
            "UPDATE engines SET state = ?, stopped_at = COALESCE(stopped_at, ?) WHERE state = ?",
            (EngineState.TAKEN_OVER, now, EngineState.SERVING),
        ).rowcount
        running = db.execute(
            "SELECT feature, run FROM runs WHERE status = ? ORDER BY queue_seq",
            (RunState.RUNNING,),
        ).fetchall()
        check_run_transition(RunState.RUNNING, RunState.PAUSED)
        for feature, run in running:
            db.execute(
                "UPDATE runs SET status = ?, pause_reason = ?, pause_requested = 0, "
                "fencing = fencing + 1, engine_id = NULL, engine_pid = NULL, last_error = ?, "
                "updated_at = ? WHERE feature = ? AND run = ?",
                (RunState.PAUSED, PauseReason.REQUESTED, RESTORED_MESSAGE, now, feature, run),
            )
            db.execute(
                "UPDATE features SET status = ?, updated_at = ? WHERE name = ?",
                (RunState.PAUSED, now, feature),
            )
        attempts = db.execute(
            "UPDATE attempts SET state = ?, outcome = 'restored', message = ?, "
            "finished_at = ? WHERE state IN (?, ?)",
            (AttemptState.ABANDONED, message, now, *live),
        ).rowcount
        for feature, path in worktrees.items():
            db.execute(
                "UPDATE features SET worktree = ?, updated_at = ? WHERE name = ?",
                (path, now, feature),
            )
    return Restored(engines, attempts, tuple((row[0], row[1]) for row in running))
