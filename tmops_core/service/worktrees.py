"""The feature worktrees' disk: ``tmops cleanup`` and the budget ``list`` and ``status`` warn of.

A part of :class:`~tmops_core.service.operations.Service` (a mixin over its config, store and
layout). Which worktree may go and how is :mod:`tmops_core.service.cleanup`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from tmops_core.git import Git
from tmops_core.service.cleanup import (
    CleanupItem,
    Removal,
    base_of,
    plan_cleanup,
    remove_worktree,
    why_kept,
)
from tmops_core.service.rollback import stamp_now
from tmops_core.workspace.disk import GB, forget_sizes, human_bytes, worktrees_bytes
from tmops_core.workspace.layout import locked
from tmops_hookspecs import TmopsError

if TYPE_CHECKING:
    from tmops_core.config import Config
    from tmops_core.store import Store
    from tmops_core.workspace.layout import Layout

__all__ = ["Worktrees"]

#: the lock init holds while it makes worktrees: git's worktree bookkeeping is not safe to race
_INIT_LOCK = ".init.lock"


class Worktrees:
    """Cleaning up the worktrees of finished features; their disk against the budget."""

    config: Config

    if TYPE_CHECKING:

        def _layout(self, workspace: Path | None) -> Layout: ...

        def _store(self, layout: Layout, *, create: bool) -> Store | None: ...

        def _record(
            self, store: Store, feature: str, run: str, event_type: str, data: dict[str, Any],
            *, correlation_id: str | None = None,
        ) -> None: ...  # fmt: skip

    def cleanup(
        self, *, dry_run: bool = False, force: bool = False, workspace: Path | None = None
    ) -> dict[str, Any]:
        """Remove the worktrees of finished features whose work is merged or pushed (with
        ``force``, any finished feature's, after a backup ref); ``dry_run`` changes nothing.
        The branches stay."""
        layout = self._layout(workspace)
        store = self._store(layout, create=False)
        git = Git(layout.project_root)
        base, base_commit = base_of(self.config, git)
        removal = Removal(base, base_commit, stamp_now())
        if store is None:
            return _answer([], dry_run=dry_run, force=force, base=base)
        if dry_run:
            items = plan_cleanup(layout=layout, store=store, git=git, records=store.features(),
                                 removal=removal, force=force)  # fmt: skip
            return _answer(items, dry_run=True, force=force, base=base)
        with locked(layout.tmops_dir / _INIT_LOCK):
            items = plan_cleanup(layout=layout, store=store, git=git, records=store.features(),
                                 removal=removal, force=force)  # fmt: skip
            done = [self._remove(store, git, item) for item in items]
        forget_sizes(layout)
        return _answer(done, dry_run=False, force=force, base=base)

    def _remove(self, store: Store, git: Git, item: CleanupItem) -> CleanupItem:
        if item.action != "remove":
            return item
        record = store.feature(item.feature)
        # a run may have been resumed since the plan was made: checked again at the last moment
        unfinished = why_kept(store, record) if record else "the feature is gone"
        if unfinished is not None:
            return attrs.evolve(item, action="skipped", reason=unfinished)
        try:
            remove_worktree(git, item)
        except TmopsError as exc:
            return attrs.evolve(item, action="failed", reason=str(exc))
        assert item.run is not None  # noqa: S101 - a worktree to remove has an ended run
        self._record(
            store, item.feature, item.run, "orchestration.worktree.removed",
            {"run": item.run, "worktree": item.worktree, "bytes": item.bytes,
             "merged": item.merged, "pushed": list(item.pushed), "backup_ref": item.backup_ref},
        )  # fmt: skip
        return attrs.evolve(item, action="removed")

    def worktree_disk(
        self, *, workspace: Path | None = None, keep: bool = True
    ) -> dict[str, Any] | None:
        """The feature worktrees' disk against ``features.worktree_disk_budget_gb``, with a
        warning when over it; ``None`` (nothing measured) when no budget is set. ``keep=False``
        (a resource read, which writes nothing) does not keep the sizes it measured."""
        budget = self.config.features.worktree_disk_budget_gb
        if budget is None:
            return None
        layout = self._layout(workspace)
        store = self._store(layout, create=False)
        records = store.features() if store else []
        paths = [
            Path(r.worktree) for r in records
            if r.isolation == "worktree" and Path(r.worktree) != layout.project_root
        ]  # fmt: skip
        used = worktrees_bytes(layout, paths, keep=keep)
        over = used > budget * GB
        warning = None
        if over:
            warning = (
                f"the feature worktrees take {human_bytes(used)}, over "
                f"features.worktree_disk_budget_gb ({budget:g} GB): `tmops cleanup --dry-run` "
                "shows what cleanup would free"
            )
        return {"budget_gb": budget, "used_bytes": used, "over": over, "warning": warning}


def _answer(items: list[CleanupItem], *, dry_run: bool, force: bool, base: str) -> dict[str, Any]:
    acted = [i for i in items if i.action in {"remove", "removed"}]
    freed = sum(i.bytes for i in acted)
    verb = "would free" if dry_run else "freed"
    lines = [_line(item, dry_run=dry_run) for item in items]
    summary = (
        f"{len(acted)} worktree(s) {'would be removed' if dry_run else 'removed'}, {verb} "
        f"{human_bytes(freed)}; the branches stay"
    )
    return {
        "dry_run": dry_run,
        "force": force,
        "base": base,
        "freed_bytes": freed,
        "worktrees": [item.as_dict() for item in items],
        "message": "\n".join([*lines, summary]),
    }


def _line(item: CleanupItem, *, dry_run: bool) -> str:
    action = {"remove": "would remove"}.get(item.action, item.action) if dry_run else item.action
    size = f" ({human_bytes(item.bytes)})" if item.action in {"remove", "removed"} else ""
    backup = ""
    if item.backup_ref:
        backup = f"; {'backup ref' if not dry_run else 'would back up to'} {item.backup_ref}"
    kept = ""
    if item.action in {"remove", "removed"}:
        kept = f"; branch {item.branch} kept (`tmops init {item.feature} --run {item.run}` "
        kept += "makes the worktree again)"
    return f"{action} {item.feature}: {item.worktree}{size}: {item.reason}{backup}{kept}"
