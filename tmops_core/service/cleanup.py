"""Which feature worktrees ``tmops cleanup`` may remove, and removing them.

A worktree goes only when nothing can be lost and nobody works in it:

- the feature's current run has ended (``completed``, ``cancelled``, ``failed``), no run of the
  feature is queued or running and no attempt is live (an agent may be alive): a paused run, a
  run waiting for a person (``needs_review``) or one not started keeps its worktree;
- its head is merged (an ancestor of ``features.base_branch``, else of the branch checked out
  in the project root) or pushed (a remote-tracking branch contains it);
- nothing is left uncommitted: a snapshot of the worktree (tracked and untracked files, build
  artefacts and ignored files aside, as the rollback's backup takes it) is its head.

Anything else is skipped with the reason unless ``force``; forced, a backup ref
``refs/tmops/<feature>/<run>/backup-<stamp>`` points at that snapshot before anything goes. The
worktree folder goes whole, caches in it included (``.venv``, ``node_modules``,
``__pycache__``...), measured first; the branch always stays.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import attrs

from tmops_core.config import Config
from tmops_core.git import Git
from tmops_core.lifecycle import ACTIVE_RUN_STATES, ENDED_RUN_STATES, LIVE_ATTEMPT_STATES, RunState
from tmops_core.store import FeatureRecord, Store
from tmops_core.workspace.disk import tree_bytes
from tmops_core.workspace.layout import Layout, check_worktree, shown
from tmops_hookspecs import FeatureError, TmopsError, WorkspaceError

__all__ = ["CleanupItem", "Removal", "base_of", "plan_cleanup", "remove_worktree", "why_kept"]

#: what a run in each unfinished state is waiting for, so its worktree stays
_KEPT_BECAUSE = {
    RunState.INITIALIZED: "its run has not started yet",
    RunState.QUEUED: "its run is queued: an engine is about to work in it",
    RunState.RUNNING: "its run is running: an engine and its agents work in it",
    RunState.PAUSED: "its run is paused and resumable (`tmops resume`)",
    RunState.NEEDS_REVIEW: "its run waits for a person to decide (needs_review)",
}


@attrs.frozen(kw_only=True)
class CleanupItem:
    """One feature's worktree: what cleanup does (or would do) with it, and why."""

    feature: str
    run: str | None
    status: str | None
    worktree: str
    branch: str
    #: ``remove`` (planned), ``removed``, ``skipped`` or ``failed``
    action: str
    reason: str
    head: str | None = None
    merged: bool = False
    #: the remote-tracking branches that contain the head
    pushed: tuple[str, ...] = ()
    uncommitted: bool = False
    #: the disk the folder takes (what removing it frees)
    bytes: int = 0
    #: the snapshot a forced removal backs up first, and the ref that will point at it
    snapshot: str | None = None
    backup_ref: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, filter=lambda field, _: field.name != "snapshot")
        data["pushed"] = list(self.pushed)
        return data


@attrs.frozen
class Removal:
    """The base a feature must be merged into, and the stamp of this cleanup's backup refs."""

    base: str
    base_commit: str | None
    stamp: str


def base_of(config: Config, git: Git) -> tuple[str, str | None]:
    """The branch features are merged into, and its commit (``None``: no such branch)."""
    configured = config.features.base_branch
    name = configured or git.current_branch()
    if name is None:  # a detached HEAD in the project root: its commit is the base
        return "HEAD", git.head()
    commit = git.rev(f"refs/heads/{name}")
    if commit is None and configured:
        raise FeatureError(
            f"features.base_branch names {shown(configured)}, which is not a branch of {git.cwd}",
            hint="set it to the branch features are merged into (e.g. main), or remove it to "
            "use the branch checked out in the project root",
        )
    return name, commit


def plan_cleanup(
    *, layout: Layout, store: Store, git: Git, records: list[FeatureRecord], removal: Removal,
    force: bool,
) -> list[CleanupItem]:  # fmt: skip
    """Every feature's worktree, with what cleanup does with it. Reads only (a snapshot commit
    may be written to the object store; no ref moves)."""
    registered = {w.path.resolve(): w for w in git.worktrees()}
    items = []
    for record in sorted(records, key=lambda r: r.name):
        try:
            items.append(_plan_one(layout, store, record, registered, removal, force=force))
        except TmopsError as exc:  # one broken worktree must not hide what the others free
            items.append(CleanupItem(
                feature=record.name, run=record.current_run, status=None,
                worktree=record.worktree, branch=record.branch, action="skipped",
                reason=f"could not be checked: {exc.message}",
            ))  # fmt: skip
    return items


def _plan_one(
    layout: Layout, store: Store, record: FeatureRecord, registered: dict[Path, Any],
    removal: Removal, *, force: bool,
) -> CleanupItem:  # fmt: skip
    run = store.run(record.name, record.current_run)
    item = CleanupItem(
        feature=record.name, run=record.current_run, status=run.status if run else None,
        worktree=record.worktree, branch=record.branch, action="skipped", reason="",
    )  # fmt: skip
    path = Path(record.worktree)
    if path == layout.project_root or record.isolation != "worktree":
        return attrs.evolve(item, reason="works in the project root itself, never removed")
    if path.resolve() not in registered:
        gone = not path.exists()
        why = "already removed" if gone else "not a git worktree of this project: left alone"
        return attrs.evolve(item, reason=why)
    unfinished = why_kept(store, record)
    if unfinished is not None:
        return attrs.evolve(item, reason=unfinished)
    check_worktree(layout, path)  # reached through a link: refused, never removed
    assert run is not None  # noqa: S101 - why_kept found it
    work = Git(path)
    head = work.head()
    snapshot = work.snapshot(f"tmops({record.name}): the worktree before cleanup")
    merged = bool(head and removal.base_commit and work.is_ancestor(head, removal.base_commit))
    pushed = tuple(work.remote_refs_containing(head)) if head else ()
    item = attrs.evolve(
        item, head=head, merged=merged, pushed=pushed, uncommitted=snapshot != head,
        bytes=tree_bytes(path), snapshot=snapshot,
    )  # fmt: skip
    risks = []
    if not merged and not pushed:
        risks.append(f"its branch is neither merged into {removal.base} nor pushed")
    if item.uncommitted:
        risks.append("it holds uncommitted changes")
    why = "merged into " + removal.base if merged else f"pushed ({', '.join(pushed)})"
    if not risks:
        return attrs.evolve(item, action="remove", reason=why)
    if not force:
        return attrs.evolve(item, reason="; ".join(risks) + " (--force removes it after a backup)")
    backup = f"refs/tmops/{record.name}/{run.run}/backup-{removal.stamp}"
    return attrs.evolve(
        item, action="remove", reason="forced: " + "; ".join(risks), backup_ref=backup
    )


def why_kept(store: Store, record: FeatureRecord) -> str | None:
    """Why the feature's worktree must stay because of its runs, or ``None`` if it may go."""
    run = store.run(record.name, record.current_run)
    if run is None:
        return "its run is not in the store"
    state = RunState(run.status)
    if state not in ENDED_RUN_STATES:
        return _KEPT_BECAUSE.get(state, f"its run is {state}")
    for other in store.runs(record.name):
        if other.status in ACTIVE_RUN_STATES:
            return f"its run '{other.run}' is {other.status}: an engine works in it"
    if any(a.state in LIVE_ATTEMPT_STATES for a in store.attempts(record.name, run.run)):
        return "an attempt of its run is still live: an agent may be alive"
    return None


def remove_worktree(git: Git, item: CleanupItem) -> None:
    """Back up (when forced), then remove the worktree folder whole and its bookkeeping."""
    path = Path(item.worktree)
    if item.backup_ref is not None:
        if item.snapshot is None:
            raise WorkspaceError(f"no snapshot of {path} to back up: nothing removed")
        git.set_ref(item.backup_ref, item.snapshot)
    try:
        git.remove_worktree(path)
    except TmopsError:
        # git refuses some (submodules inside); the checks above are what protect the work
        try:
            shutil.rmtree(path)  # never follows a link out of the folder, refuses one at it
        except OSError as exc:
            raise WorkspaceError(f"cannot remove {path}: {exc.strerror or exc}") from exc
    git.prune_worktrees()
