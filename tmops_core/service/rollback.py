"""Rolling a run back to before one of its phases, by the phase's preserve rules.

A rollback of phase P sends P and every phase after it back: their checkpoints, SUMMARY.md and
metrics.json are set aside in a backup folder of the run, and the branch goes back to P's start
commit (the ``refs/tmops/<feature>/<run>/<P>-start`` marker) unless P's rules keep the code and
the tests. What P's :class:`~tmops_hookspecs.RollbackPolicy` preserves survives: the task spec
always (it lives in the run folder, outside the branch), the tests (the files the test-writing
phases changed, as they are now) left uncommitted for the phase that runs again, the code. First
of all a backup ref points at a snapshot of the worktree as it was, uncommitted work included,
so nothing is ever lost. ``dry_run`` computes the same plan and changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from tmops_core.config import Config
from tmops_core.git import Git
from tmops_core.lifecycle import ACTIVE_RUN_STATES, PauseReason, RunState
from tmops_core.plugins import Plugins
from tmops_core.store import FeatureRecord, RunRecord, Store, since_reset
from tmops_core.workspace.layout import (
    Layout,
    ensure_private_dir,
    lstat_checked,
    rename_checked,
    shown,
    utc_now,
)
from tmops_hookspecs import Artifact, FeatureError, Gate, PhaseSpec

__all__ = ["RollbackPlan", "apply_rollback", "plan_rollback", "stamp_now"]

#: what a finished run leaves: SUMMARY.md beside the checkpoints, metrics.json in the run folder
_SUMMARY, _METRICS = "SUMMARY.md", "metrics.json"


@attrs.frozen
class RollbackPlan:
    """What a rollback changes; every path is absolute, every commit a full sha."""

    feature: str
    run: str
    phase: str
    #: the phases sent back to pending: ``phase`` and every one after it
    phases: tuple[str, ...]
    preserve: tuple[str, ...]
    branch: str
    worktree: str
    #: where the branch is now, and where it goes (``None``: it stays)
    head: str
    target: str | None
    #: the worktree as it is, uncommitted work included (``head`` itself when clean)
    snapshot: str
    #: the commits the branch leaves behind (newest first) and the paths it changes
    undone: tuple[tuple[str, str], ...]
    reverted: tuple[str, ...]
    #: paths kept as they are now, by the preserve rules (left uncommitted)
    kept: tuple[str, ...]
    #: checkpoints and run outputs moved into ``backup_dir``
    set_aside: tuple[str, ...]
    backup_ref: str
    backup_dir: str

    def as_dict(self) -> dict[str, Any]:
        data = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in attrs.asdict(self).items()
        }
        data["undone"] = [{"commit": sha, "subject": subject} for sha, subject in self.undone]
        return data


def plan_rollback(
    *, config: Config, plugins: Plugins, layout: Layout, store: Store, record: FeatureRecord,
    run: RunRecord, phase: str, stamp: str,
) -> RollbackPlan:  # fmt: skip
    """What rolling ``run`` back to before ``phase`` would change, or an error saying why it
    cannot (the run is active, the phase is unknown or has not run, the branch is elsewhere)."""
    feature = record.name
    state = RunState(run.status)
    if state is RunState.INITIALIZED:
        raise FeatureError(
            f"run '{run.run}' of '{feature}' has not started: nothing to roll back",
            hint=f"`tmops start {feature}` starts it",
        )
    if state in ACTIVE_RUN_STATES:
        raise FeatureError(
            f"run '{run.run}' of '{feature}' is {state}: an engine is working on it",
            hint=f"stop it first with `tmops pause {feature} --now` (or `tmops cancel "
            f"{feature}`), then roll back",
        )
    workflow = list(config.features.default_phases)
    if phase not in workflow:
        raise FeatureError(
            f"{shown(phase)} is not a phase of the workflow",
            hint=f"the workflow: {', '.join(workflow)}",
        )
    installed = plugins.phases()
    specs = {name: installed[name].spec for name in workflow if name in installed}
    attempts = store.attempts(feature, run.run)
    if not since_reset(attempts, phase):
        raise FeatureError(
            f"{phase} has not run in run '{run.run}' of '{feature}' since it was last sent "
            "back: nothing to roll back",
            hint=f"`tmops status {feature}` shows which phases ran",
        )
    git = Git(Path(record.worktree))
    if git.current_branch() != record.branch:
        raise FeatureError(
            f"the worktree {record.worktree} does not have {record.branch} checked out",
            hint=f"check it out there (`git switch {record.branch}`), then roll back",
        )
    head = git.rev(f"refs/heads/{record.branch}")
    snapshot = git.snapshot(f"tmops({feature}): the worktree before a rollback of {phase}")
    if head is None or snapshot is None:
        raise FeatureError(f"the branch {record.branch} has no commit: nothing to roll back")
    spec = specs.get(phase)
    preserve = spec.rollback.preserve if spec else frozenset()
    phases = tuple(workflow[workflow.index(phase) :])
    target: str | None = None
    undone: list[tuple[str, str]] = []
    reverted: list[str] = []
    kept: list[str] = []
    if not {Artifact.CODE, Artifact.TESTS} <= preserve:
        target = _phase_start(git, feature, run.run, phase, attempts)
        undone = git.log(target, until=head, limit=1000)
        tests = _test_paths(git, feature, run.run, workflow, specs, attempts, snapshot)
        for path in git.changed_paths(target, snapshot):
            keep = Artifact.TESTS in preserve and path in tests
            (kept if keep else reverted).append(path)
    set_aside = [
        str(path)
        for path in _phase_files(layout, feature, run.run, [specs[n] for n in phases if n in specs])
        if lstat_checked(path, root=layout.project_root) is not None
    ]
    backup_dir = layout.run_dir(feature, run.run) / "backups" / f"rollback-{stamp}"
    return RollbackPlan(
        feature=feature, run=run.run, phase=phase, phases=phases,
        preserve=tuple(sorted(a.value for a in preserve)), branch=record.branch,
        worktree=record.worktree, head=head, target=target, snapshot=snapshot,
        undone=tuple(undone), reverted=tuple(reverted), kept=tuple(kept),
        set_aside=tuple(set_aside), backup_ref=f"refs/tmops/{feature}/{run.run}/backup-{stamp}",
        backup_dir=str(backup_dir),
    )  # fmt: skip


def apply_rollback(plan: RollbackPlan, *, layout: Layout, store: Store, now: str) -> None:
    """Do what ``plan`` says: the backup ref, the store (phases sent back, the run paused
    ``rolled_back``), the files set aside, the branch and the worktree; in that order, so a
    failure part-way leaves the backup and a run that a second rollback finishes."""
    git = Git(Path(plan.worktree))
    git.set_ref(plan.backup_ref, plan.snapshot)
    message = f"rolled back to before {plan.phase} by a person (backup ref {plan.backup_ref})"
    store.reset_phases(
        plan.feature, plan.run, plan.phases, message=message, now=now,
        branch_head=plan.target or plan.head, pause=PauseReason.ROLLED_BACK,
    )  # fmt: skip
    if plan.set_aside:
        backup = Path(plan.backup_dir)
        ensure_private_dir(backup.parent, root=layout.project_root)
        ensure_private_dir(backup, root=layout.project_root)
        for name in plan.set_aside:
            source = Path(name)
            rename_checked(source, backup / source.name, root=layout.project_root)
    if plan.target is None:
        return
    git.reset_branch(plan.branch, plan.target, expected=plan.head)
    if plan.kept:
        git.restore_paths(plan.snapshot, plan.kept)
    for name in plan.phases[1:]:  # their markers point into the history left behind
        git.delete_ref(f"refs/tmops/{plan.feature}/{plan.run}/{name}-start")


def _phase_start(git: Git, feature: str, run: str, phase: str, attempts: list[Any]) -> str:
    """Where ``phase`` started: its marker ref, else the start its attempts recorded."""
    marker = git.rev(f"refs/tmops/{feature}/{run}/{phase}-start")
    if marker:
        return marker
    for attempt in since_reset(attempts, phase):
        if attempt.start_commit:
            return str(attempt.start_commit)
    raise FeatureError(
        f"no start commit is recorded for {phase} (no refs/tmops/{feature}/{run}/{phase}-start)",
        hint="roll back an earlier phase, or move the branch by hand (git reset)",
    )


def _test_paths(
    git: Git, feature: str, run: str, workflow: list[str], specs: dict[str, PhaseSpec],
    attempts: list[Any], snapshot: str,
) -> set[str]:  # fmt: skip
    """The tests: what the test-writing phases (those gated on failing tests) changed, from
    their start to the start of the phase after them (or to the worktree as it is)."""
    tests: set[str] = set()
    for index, name in enumerate(workflow):
        spec = specs.get(name)
        if spec is None or Gate.TESTS_FAIL not in spec.gates or not since_reset(attempts, name):
            continue
        try:
            start = _phase_start(git, feature, run, name, attempts)
        except FeatureError:
            continue
        end = snapshot
        for later in workflow[index + 1 :]:
            if since_reset(attempts, later):
                try:
                    end = _phase_start(git, feature, run, later, attempts)
                except FeatureError:
                    continue
                break
        tests.update(git.changed_paths(start, end))
    return tests


def _phase_files(layout: Layout, feature: str, run: str, specs: list[PhaseSpec]) -> list[Path]:
    """The checkpoints the phases wrote, the triggers tmops wrote for all but the first (its
    own trigger is its input), and the run's outputs."""
    folder = layout.checkpoint_dir(feature, run)
    names = [spec.completion_checkpoint for spec in specs]
    names += [spec.trigger_checkpoint for spec in specs[1:] if spec.trigger_checkpoint]
    files = [folder / name for name in dict.fromkeys(names)]
    return [*files, folder / _SUMMARY, layout.run_dir(feature, run) / _METRICS]


def stamp_now() -> str:
    """A backup name: sortable, and unique to the microsecond."""
    return f"{utc_now():%Y%m%dT%H%M%S%fZ}"
