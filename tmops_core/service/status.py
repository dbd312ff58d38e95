"""Reading the state of features: ``list`` and ``status``.

Reads the store and the files of ``.tmops/`` only (and ``/proc``, to judge whether the engine
of a run is alive): never git, never a subprocess, so it stays fast enough to be polled. A
checkpoint written by hand counts exactly like an agent's. It never changes anything: taking
over a run whose engine died is :class:`~tmops_core.service.operations.Service`'s.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from tmops_core.lifecycle import LIVE_ATTEMPT_STATES, PauseReason, PhaseState, RunState, phase_state
from tmops_core.orchestration.liveness import engine_running, run_engine_alive
from tmops_core.orchestration.providers import providers_label
from tmops_core.orchestration.summary import attempt_row
from tmops_core.store import AttemptRecord, RunRecord, Store, held_providers, since_reset
from tmops_core.workspace.layout import FEATURE_NAME, Layout, iso, open_dir, shown
from tmops_core.workspace.project_files import FeatureLine, read_features
from tmops_hookspecs import CHECKPOINT_NAME_PATTERN, FeatureError, PhaseSpec, WorkspaceError

__all__ = [
    "CheckpointInfo",
    "PhaseProgress",
    "feature_status",
    "find_project_root",
    "list_features",
    "project_cost",
]

NEXT_ACTION_NEW = "edit TASK_SPEC.md, then start"
#: a run (None: one not started) -> phase -> the provider it runs with
PlannedProviders = Callable[[RunRecord | None], Mapping[str, str]]
#: the fields of a feature in ``list``
_ROW_KEYS = (
    "feature", "branch", "run", "status", "queue_position", "current_phase", "updated",
    "elapsed_s", "cost_usd", "resume_at", "held_until",
)  # fmt: skip
#: a phase of the workflow that no installed plugin provides
_UNAVAILABLE = "unavailable"


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` with a ``.tmops`` (else a ``.git``) in it."""
    start = start.resolve()
    candidates = [start, *start.parents]
    for folder in candidates:
        if (folder / ".tmops").is_dir():
            return folder
    for folder in candidates:
        dot_git = folder / ".git"
        if dot_git.is_file():
            main = _main_worktree(dot_git)
            if main is not None and (main / ".tmops").is_dir():
                return main
        if dot_git.exists():
            return folder
    return start


def _main_worktree(dot_git: Path) -> Path | None:
    """The main working tree of a linked worktree, read from its ``.git`` file (no git call)."""
    try:
        text = dot_git.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.startswith("gitdir: "):
        return None
    # gitdir: <main>/.git/worktrees/<name>
    git_dir = (dot_git.parent / text[len("gitdir: ") :].strip()).resolve()
    if git_dir.parent.name != "worktrees" or git_dir.parent.parent.name != ".git":
        return None
    return git_dir.parent.parent.parent


@attrs.frozen
class CheckpointInfo:
    name: str
    status: str
    timestamp: str
    size: int


@attrs.frozen
class PhaseProgress:
    phase: str
    role: str
    status: str
    completion_checkpoint: str | None


def read_checkpoints(folder: Path) -> list[CheckpointInfo]:
    """The checkpoint files of a run, by name; links and odd names are not checkpoints, and a
    folder reached through a link has none (the run refuses it with the reason)."""
    try:
        fd = open_dir(folder)
    except (OSError, WorkspaceError):
        return []
    files: list[tuple[str, os.stat_result]] = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                if CHECKPOINT_NAME_PATTERN.fullmatch(entry.name):
                    # stat before the folder's descriptor closes: the entry is relative to it
                    with contextlib.suppress(FileNotFoundError):
                        files.append((entry.name, entry.stat(follow_symlinks=False)))
    finally:
        os.close(fd)
    found = []
    for name, info in files:
        if not stat.S_ISREG(info.st_mode):
            continue
        kind = "summary" if name == "SUMMARY.md" else name[:-3].rsplit("-", 1)[-1]
        found.append(
            CheckpointInfo(
                name=name,
                status=kind,
                timestamp=iso(datetime.fromtimestamp(info.st_mtime, UTC)),
                size=info.st_size,
            )
        )
    return sorted(found, key=lambda c: c.name)


def _progress_by_hand(
    workflow: Sequence[str], phases: Mapping[str, PhaseSpec], present: set[str]
) -> list[PhaseProgress]:
    """Phases of a run tmops has not started: what the files written by hand show. A
    completion checkpoint nobody has checked yet is ``written``, never ``completed``."""
    progress = []
    for name in workflow:
        spec = phases.get(name)
        if spec is None:
            progress.append(PhaseProgress(name, name, _UNAVAILABLE, None))
            continue
        if spec.completion_checkpoint in present:
            state = PhaseState.WRITTEN
        elif spec.trigger_checkpoint and spec.trigger_checkpoint in present:
            state = PhaseState.IN_PROGRESS
        else:
            state = PhaseState.PENDING
        progress.append(PhaseProgress(name, spec.role, state, spec.completion_checkpoint))
    return progress


def _progress_from_store(
    workflow: Sequence[str],
    phases: Mapping[str, PhaseSpec],
    attempts: Sequence[AttemptRecord],
    run: RunState,
) -> list[PhaseProgress]:
    """Phases of a run tmops drives: projected from the store's attempts, never from files."""
    progress = []
    for name in workflow:
        spec = phases.get(name)
        states = [a.state for a in attempts if a.phase == name]
        state = phase_state(states, run=run)
        if spec is None:
            progress.append(PhaseProgress(name, name, _UNAVAILABLE, None))
            continue
        progress.append(PhaseProgress(name, spec.role, state, spec.completion_checkpoint))
    return progress


def feature_status(
    layout: Layout,
    store: Store | None,
    feature: str,
    *,
    workflow: Sequence[str],
    phases: Mapping[str, PhaseSpec],
    include_sessions: bool = True,
    include_checkpoints: bool = True,
    feature_lines: Mapping[str, FeatureLine] | None = None,
    queue: Mapping[tuple[str, str], int] | None = None,
    holds: Mapping[str, str] | None = None,
    auto_resume: bool = True,
    providers: PlannedProviders | None = None,
) -> dict[str, Any]:
    """The upstream status shape of one feature; unknown features are a FeatureError.

    ``feature_lines`` (FEATURES.txt), ``queue`` (the queue positions) and ``holds`` (the
    providers a usage limit holds back, :func:`usage_holds`) may be read once by a caller that
    asks about every feature, so that listing stays linear. ``auto_resume``:
    ``features.resume_after_usage_limit``. ``providers``: phase -> the provider it runs with,
    for a run (what the config and its ``start`` chose), to show a phase no agent ran yet.

    The state of a run tmops has started is the store's, so ``completed`` appears only once
    the run record says so (after SUMMARY.md and metrics.json exist). For a run it has not
    started, the checkpoints written by hand show how far a person got.
    """
    if not isinstance(feature, str) or not FEATURE_NAME.fullmatch(feature):
        raise FeatureError(f"no feature named {shown(feature)}: not a valid feature name")
    record = store.feature(feature) if store else None
    # FEATURES.txt speaks only for a feature the store does not know (a status poll of a
    # tracked feature does not read it).
    line = None
    if record is None:
        line = (read_features(layout) if feature_lines is None else feature_lines).get(feature)
    run = layout.current_run(feature) or (record.current_run if record else None)
    if record is None and line is None and run is None:
        raise FeatureError(
            f"no feature named '{feature}' in {layout.project_root}",
            hint="`tmops list` shows the features; `tmops init <feature>` creates one",
        )
    checkpoints = read_checkpoints(layout.checkpoint_dir(feature, run)) if run else []
    run_record = store.run(feature, run) if store and run else None
    attempts = store.attempts(feature, run) if store and run and run_record else []
    state = RunState(run_record.status) if run_record else RunState.INITIALIZED
    if state is RunState.INITIALIZED:
        progress = _progress_by_hand(workflow, phases, {c.name for c in checkpoints})
    else:
        progress = _progress_from_store(workflow, phases, attempts, state)
    completed = sum(p.status == PhaseState.COMPLETED for p in progress)
    current = next((p for p in progress if p.status != PhaseState.COMPLETED), None)
    branch = _branch(record, line, feature)
    if state is RunState.INITIALIZED:
        status, current_phase, next_action = _by_hand(feature, progress)
    else:
        assert run_record is not None  # noqa: S101 - state comes from it
        status = state.value
        current_phase = (
            None if state is RunState.COMPLETED
            else run_record.current_phase or (current.phase if current else None)
        )  # fmt: skip
        next_action = _next_action(
            feature, state, run_record, current, branch, layout.checkpoint_dir(feature, run or "")
        )
    queue_position = _queue_position(store, run_record, queue)
    engine = _engine(layout, store, run_record)
    by_phase = _phase_providers(run_record, attempts, providers)
    next_phase = current_phase or next(iter(workflow), "")
    held_provider = by_phase.get(next_phase) or (run_record.provider if run_record else None)
    held_until = _held_until(store, run_record, holds, held_provider)
    next_action = (
        _usage_limit_action(run_record, held_until, auto_resume, held_provider) or next_action
    )
    if engine == "dead":
        next_action = f"its engine stopped: `tmops start {feature}` takes the run over"
    elif engine == "none":
        next_action = f"no engine serves the project: `tmops start {feature}` starts one"
    result: dict[str, Any] = {
        "feature": feature,
        "status": status,
        "current_phase": current_phase,
        "run": run,
        "branch": branch,
        "worktree": record.worktree if record else None,
        "task_spec": str(layout.task_spec(feature, run)) if run else None,
        "phase_progress": {
            "completed": completed,
            "total": len(progress),
            "phases": [attrs.asdict(p) for p in progress],
        },
        "next_action": next_action,
        "updated": _updated(record, line, checkpoints),
        "run_id": run_record.run_id if run_record else None,
        "provider": providers_label(by_phase) if by_phase else None,
        "cost_usd": round(run_record.cost_usd, 6) if run_record else 0.0,
        "resume_at": run_record.resume_at if run_record else None,
        "held_until": held_until,
        "last_error": run_record.last_error if run_record else None,
        "pause_reason": run_record.pause_reason if run_record else None,
        "queue_position": queue_position,
        "engine": engine,
        "elapsed_s": _elapsed(run_record),
    }
    for phase in result["phase_progress"]["phases"]:
        phase["cost_usd"] = round(sum(a.cost_usd or 0.0 for a in attempts
                                      if a.phase == phase["phase"]), 6)  # fmt: skip
        phase["provider"] = by_phase.get(phase["phase"])
    if include_sessions:
        result["sessions"] = {p.role: _session(p, attempts) for p in progress}
        result["attempts"] = [_attempt(a) for a in attempts]
    if include_checkpoints:
        result["checkpoints"] = [attrs.asdict(c) for c in checkpoints]
    return result


def _by_hand(feature: str, progress: Sequence[PhaseProgress]) -> tuple[str, str | None, str]:
    """Status, current phase and next action of a run only a person has worked on."""
    written = [p for p in progress if p.status == PhaseState.WRITTEN]
    current = next((p for p in progress if p.status != PhaseState.WRITTEN), None)
    if all(p.status in {PhaseState.PENDING, _UNAVAILABLE} for p in progress):
        return RunState.INITIALIZED.value, None, f"{NEXT_ACTION_NEW} (tmops start {feature})"
    if current is None:
        return (
            "in_progress", None,
            f"tmops start {feature} checks the {len(written)} checkpoint(s) written by hand "
            "(validators, gates), commits them under their phases and finishes the run",
        )  # fmt: skip
    if current.completion_checkpoint is None:
        return "in_progress", current.phase, "check the workflow's phases in the config"
    return (
        "in_progress", current.phase,
        f"waiting for {current.completion_checkpoint} from the {current.role}",
    )  # fmt: skip


def _next_action(
    feature: str,
    state: RunState,
    run: RunRecord,
    current: PhaseProgress | None,
    branch: str,
    checkpoint_dir: Path,
) -> str:
    """What to do next about a run tmops has started, by its state."""
    if state is RunState.COMPLETED:
        return f"review and merge {branch}"
    if state is RunState.QUEUED:
        return "waiting for a free slot in the engine (features.concurrent_limit)"
    if state is RunState.RUNNING:
        if current is None or current.completion_checkpoint is None:
            return "finishing the run: SUMMARY.md and metrics.json"
        return f"waiting for {current.completion_checkpoint} from the {current.role}"
    if state is RunState.NEEDS_REVIEW:
        refused = (run.last_error or "").rpartition("; read ")[2].removesuffix(" and decide")
        name = Path(refused).name if refused else "the reviewer's checkpoint"
        return (
            f"read {name} and decide ({checkpoint_dir}): fix it and "
            f"`tmops start {feature} --resume`, or edit the verdict by hand and resume"
        )
    if state is RunState.PAUSED:
        if run.pause_reason == PauseReason.BRANCH_MOVED:
            return (
                f"`tmops resume {feature} --accept-branch` continues from the branch's new "
                f"head, or put the branch back (or `tmops rollback {feature} --phase P`) and "
                f"resume ({run.last_error})"
            )
        if run.pause_reason == PauseReason.AWAITING_APPROVAL:
            return (
                f"`tmops approve {feature}` lets {run.current_phase} start (or `tmops cancel "
                f"{feature}`)"
            )
        if run.pause_reason == PauseReason.BUDGET_EXHAUSTED:
            return str(run.last_error)  # spent against which limit, and how to go on
        return f"`tmops resume {feature}` goes on ({run.last_error})"
    by_hand = ""
    if current is not None:
        by_hand = (
            f", or do the {current.phase} by hand (`tmops prompt {feature} {current.phase}` "
            "says how) and resume"
        )
    return f"fix the problem, then `tmops resume {feature}`{by_hand}: {run.last_error}"


def queue_positions(store: Store | None) -> dict[tuple[str, str], int]:
    """1-based place of every queued run, in the order the engine admits them (FIFO)."""
    if store is None:
        return {}
    return {(r.feature, r.run): place for place, r in enumerate(store.queued_runs(), start=1)}


def _queue_position(
    store: Store | None, run: RunRecord | None, queue: Mapping[tuple[str, str], int] | None
) -> int | None:
    """A queued run's place in the queue; None for a run that is not queued."""
    if store is None or run is None or run.status != RunState.QUEUED:
        return None
    return (queue_positions(store) if queue is None else queue).get((run.feature, run.run))


def _engine(layout: Layout, store: Store | None, run: RunRecord | None) -> str | None:
    """The engine of a queued or running run: ``alive``; ``dead`` (a running run whose engine
    died: no progress until another engine takes it over); ``none`` (a queued run and no
    engine serves the project). None for a run in any other state."""
    if store is None or run is None:
        return None
    if run.status == RunState.RUNNING:
        return "alive" if run_engine_alive(store, run) else "dead"
    if run.status == RunState.QUEUED:
        return "alive" if engine_running(layout, store) else "none"
    return None


def _session(progress: PhaseProgress, attempts: Sequence[AttemptRecord]) -> dict[str, Any]:
    # the attempts since a person last sent the phase back; its cost counts them all
    spent = sum(a.cost_usd or 0.0 for a in attempts if a.phase == progress.phase)
    mine = [a for a in since_reset(list(attempts), progress.phase) if a.outcome != "adopted"]
    if not mine:
        state = {"completed": "completed", "in_progress": "active"}.get(
            progress.status, "not_started"
        )
        return {"phase": progress.phase, "state": state, "session_id": None, "attempts": 0,
                "cost_usd": round(spent, 6), "pid": None}  # fmt: skip
    last = mine[-1]
    state = "active" if last.state in LIVE_ATTEMPT_STATES else last.state
    return {
        "phase": progress.phase,
        "state": state,
        "session_id": next((a.session_id for a in reversed(mine) if a.session_id), None),
        "attempts": len(mine),
        "cost_usd": round(spent, 6),
        "pid": last.pid if state == "active" else None,
    }


def _elapsed(run: RunRecord | None) -> float | None:
    """Seconds since the run was first admitted, to its end if it ended (None: never ran)."""
    if run is None or not run.started_at:
        return None
    end = None if run.active or not run.finished_at else run.finished_at
    try:
        started = datetime.fromisoformat(run.started_at)
        ended = datetime.fromisoformat(end) if end else datetime.now(UTC)
    except ValueError:
        return None
    return round(max(0.0, (ended - started).total_seconds()), 1)


def _attempt(attempt: AttemptRecord) -> dict[str, Any]:
    """One attempt as status shows it: what it cost, its tokens, how it ended."""
    return {**attempt_row(attempt), "started_at": attempt.started_at}


def usage_holds(store: Store | None) -> dict[str, str]:
    """Provider -> until when a usage limit holds its queued runs back (ISO, UTC)."""
    if store is None:
        return {}
    return held_providers(store.usage_limited_runs(), iso(datetime.now(UTC)))


def _phase_providers(
    run: RunRecord | None, attempts: Sequence[AttemptRecord], planned: PlannedProviders | None
) -> dict[str, str]:
    """Phase -> provider: the one its last agent ran with, else the one it will run with;
    empty for a run tmops has not started."""
    if run is None or run.status == RunState.INITIALIZED:
        return {}
    found = dict(planned(run)) if planned is not None else {}
    if run.provider and not found:  # no resolver: the run's own choice
        found = dict.fromkeys({a.phase for a in attempts}, run.provider)
    for attempt in attempts:  # in order: the last one wins
        if attempt.provider != "none":  # a person's reset mark
            found[attempt.phase] = attempt.provider
    return found


def _held_until(
    store: Store | None, run: RunRecord | None, holds: Mapping[str, str] | None,
    provider: str | None,
) -> str | None:  # fmt: skip
    """For a queued run whose next phase's provider a usage limit holds back: until when;
    else None."""
    if run is None or run.status != RunState.QUEUED or provider is None:
        return None
    return (usage_holds(store) if holds is None else holds).get(provider)


def _usage_limit_action(
    run: RunRecord | None, held_until: str | None, auto_resume: bool, provider: str | None
) -> str | None:
    """The next action of a run a usage limit stopped: queued but held back by another run's
    limit, or paused by its own until it lifts; None for any other run."""
    if run is None:
        return None
    if held_until is not None:
        return (
            f"held back: provider {provider} is usage-limited until {held_until} (another "
            "run hit the limit); admitted then"
        )
    if run.status != RunState.PAUSED or run.resume_at is None:
        return None
    if run.pause_reason != PauseReason.USAGE_LIMITED:
        return None
    if auto_resume:
        return (
            f"paused: usage limit, resumes at {run.resume_at} by itself while an engine serves "
            f"the project (`tmops resume {run.feature}` goes on now)"
        )
    return (
        f"paused: usage limit, lifts at {run.resume_at}; `tmops resume {run.feature}` goes on "
        "(features.resume_after_usage_limit is off)"
    )


def _branch(record: Any, line: FeatureLine | None, feature: str) -> str:
    if record is not None:
        return str(record.branch)
    if line is not None:
        return line.branch
    return f"feature/{feature}"


def _updated(
    record: Any, line: FeatureLine | None, checkpoints: list[CheckpointInfo]
) -> str | None:
    stamps = [c.timestamp for c in checkpoints]
    if record is not None:
        stamps.append(record.updated_at)
    elif line is not None:
        stamps.append(line.updated)
    return max(stamps) if stamps else None


def project_cost(store: Store | None) -> float:
    """What every run of every feature of the project cost, in USD (earlier runs included)."""
    if store is None:
        return 0.0
    return round(sum(run.cost_usd for f in store.features() for run in store.runs(f.name)), 6)


def list_features(
    layout: Layout,
    store: Store | None,
    *,
    workflow: Sequence[str],
    phases: Mapping[str, PhaseSpec],
    auto_resume: bool = True,
    providers: PlannedProviders | None = None,
) -> list[dict[str, Any]]:
    """Every feature the store, FEATURES.txt or the ``.tmops`` folders know of."""
    lines = read_features(layout)  # once, and the queue once: the listing stays linear
    queue = queue_positions(store)
    holds = usage_holds(store)
    names = set(lines)
    if store is not None:
        names.update(record.name for record in store.features())
    with contextlib.suppress(OSError):
        names.update(
            entry.name
            for entry in os.scandir(layout.tmops_dir)
            if FEATURE_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        )
    rows = []
    for name in sorted(names):
        try:
            status = feature_status(
                layout,
                store,
                name,
                workflow=workflow,
                phases=phases,
                include_sessions=False,
                include_checkpoints=False,
                feature_lines=lines,
                queue=queue,
                holds=holds,
                auto_resume=auto_resume,
                providers=providers,
            )
        except FeatureError:
            continue
        rows.append({key: status[key] for key in _ROW_KEYS})
    return rows
