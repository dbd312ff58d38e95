"""Creating a feature: validation, the upstream tree, the branch, the worktree, the store row.

Every name is checked before anything is touched. The new tree is built in a staging folder
and moved into place with one rename; each git change registers its undo, so a failure
part-way leaves nothing half-made behind. A second init of the same run changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from tmops_core.config import Config
from tmops_core.git import Git
from tmops_core.lifecycle import RunState
from tmops_core.store import FeatureRecord, RunRecord, Store
from tmops_core.workspace.layout import (
    DOC_SUBDIRS,
    RUN_SUBDIRS,
    Layout,
    atomic_write,
    backup,
    ensure_private_dir,
    iso,
    locked,
    lstat_checked,
    open_dir,
    point_current,
    read_text_checked,
    rename_checked,
    shown,
    utc_now,
    validate_feature_name,
    validate_run_name,
)
from tmops_core.workspace.project_files import (
    FeatureLine,
    is_preflight_spec,
    read_features,
    task_spec_template,
    write_feature_line,
)
from tmops_core.workspace.worktree_files import copy_into_worktree
from tmops_hookspecs import FeatureError, WorkspaceError

__all__ = ["RUN_TYPES", "InitRequest", "InitResult", "exclude_tmops", "init_feature"]

RUN_TYPES = ("initial", "retry")
_STDERR_TAIL = 2000


@attrs.frozen(kw_only=True)
class InitRequest:
    feature: str
    run_type: str = "initial"
    run: str | None = None
    branch: str | None = None
    use_current_branch: bool = False
    workspace: Path | None = None


@attrs.frozen(kw_only=True)
class InitResult:
    feature: str
    run: str
    branch: str
    workspace: Path
    task_spec: Path
    worktree: Path
    run_dir: Path
    checkpoint_dir: Path
    created: bool
    changes: tuple[str, ...]
    timestamp: str
    execution_time_ms: float
    next_steps: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The structured answer of an init, as the CLI's --json and the MCP tool give it."""
        return {
            "feature": self.feature,
            "run": self.run,
            "branch": self.branch,
            "workspace": str(self.workspace),
            "task_spec": str(self.task_spec),
            "worktree": str(self.worktree),
            "checkpoint_dir": str(self.checkpoint_dir),
            "created": self.created,
            "changes": list(self.changes),
            "timestamp": self.timestamp,
            "execution_time_ms": self.execution_time_ms,
            "next_steps": list(self.next_steps),
        }

    @property
    def message(self) -> str:
        if not self.created:
            return (
                f"Feature '{self.feature}' run '{self.run}' is already initialised; "
                f"nothing changed (branch {self.branch}, worktree {self.worktree})"
            )
        return (
            f"Initialised feature '{self.feature}' run '{self.run}' on branch {self.branch} "
            f"in {self.worktree}; edit {self.task_spec}, then start"
        )


def _check_request(request: InitRequest) -> tuple[str, str | None]:
    """Validate every name of the request before anything is touched."""
    feature = validate_feature_name(request.feature)
    if request.run_type not in RUN_TYPES:
        raise FeatureError(
            f"invalid run type {request.run_type!r}: use 'initial' or 'retry'",
        )
    run = validate_run_name(request.run) if request.run is not None else None
    if request.branch is not None:
        if request.use_current_branch:
            raise FeatureError("--branch and --use-current-branch exclude each other; pick one")
        if not isinstance(request.branch, str) or request.branch.startswith("-"):
            raise FeatureError(f"invalid branch name {shown(request.branch)}")
    return feature, run


def _next_retry_run(layout: Layout, feature: str) -> str:
    existing = set(layout.runs(feature))
    if "retry" not in existing:
        return "retry"
    number = 2
    while f"retry-{number}" in existing:
        number += 1
    return f"retry-{number}"


class _Undo:
    """Undo steps registered as changes are made, run in reverse when a later step fails."""

    def __init__(self) -> None:
        self._steps: list[Callable[[], None]] = []

    def push(self, step: Callable[[], None]) -> None:
        self._steps.append(step)

    def run(self) -> None:
        for step in reversed(self._steps):
            with contextlib.suppress(Exception):
                step()


def init_feature(
    request: InitRequest, config: Config, *, store_for: Callable[[Layout], Store]
) -> InitResult:
    """Create (or confirm) a feature and one run of it; see the module docstring."""
    started = time.perf_counter()
    feature, explicit_run = _check_request(request)
    git = Git((request.workspace or Path.cwd()).resolve())
    # From inside a feature's worktree, the project is still the main working tree.
    root = git.main_root()
    git = Git(root)
    head = git.head()
    if head is None:
        raise WorkspaceError(
            f"the repository {root} has no commits yet; tmops branches features from HEAD",
            hint='make a first commit, e.g. `git commit --allow-empty -m "initial commit"`',
        )
    if request.use_current_branch:
        current = git.current_branch()
        if current is None:
            raise WorkspaceError("HEAD is detached, so there is no current branch to use")
        branch = current
    else:
        branch = request.branch or f"feature/{feature}"
    if not git.check_ref_format(f"refs/heads/{branch}"):
        raise FeatureError(f"{shown(branch)} is not a valid git branch name")

    layout = Layout(root)
    ensure_private_dir(layout.tmops_dir)
    # One init at a time per repository: git's worktree bookkeeping is not safe to race.
    with locked(layout.tmops_dir / ".init.lock"):
        if request.run_type == "retry" and explicit_run is None:
            if not layout.runs(feature):
                raise FeatureError(
                    f"feature '{feature}' has no run to retry yet",
                    hint=f"initialise it first: tmops init {feature}",
                )
            run = _next_retry_run(layout, feature)
        else:
            run = explicit_run or "initial"
        worktree = _worktree_path(layout, config, feature, request)
        if config.paths.init_script:
            changes = _run_legacy_script(git, layout, config, feature, request)
            run = layout.current_run(feature) or run
        else:
            changes = _init_native(git, layout, config, feature, run, branch, worktree, head)
        moment = utc_now()
        store = store_for(layout)
        known = store.feature(feature)
        if changes or known is None or known.current_run != run:
            _record(store, feature, run, branch, worktree, config)
    checkpoint_dir = layout.checkpoint_dir(feature, run)
    task_spec = layout.task_spec(feature, run)
    return InitResult(
        feature=feature,
        run=run,
        branch=branch,
        workspace=root,
        task_spec=task_spec,
        worktree=worktree,
        run_dir=layout.run_dir(feature, run),
        checkpoint_dir=checkpoint_dir,
        created=bool(changes),
        changes=tuple(changes),
        timestamp=iso(moment),
        execution_time_ms=round((time.perf_counter() - started) * 1000, 1),
        next_steps=(
            f"Edit {task_spec}: user story, acceptance criteria, constraints, definition of done",
            f"Start the workflow: tmops start {feature} (MCP: tmops_start_orchestration)",
            f"Follow it: tmops status {feature} (MCP: tmops_get_status)",
        ),
    )


def _worktree_path(layout: Layout, config: Config, feature: str, request: InitRequest) -> Path:
    # The upstream script checks the branch out in the project root; so do `checkout` isolation
    # and --use-current-branch.
    legacy = bool(config.paths.init_script)
    if legacy or config.features.isolation == "checkout" or request.use_current_branch:
        return layout.project_root
    root = Path(config.features.worktree_root).expanduser()
    if not root.is_absolute():
        # Inside the project the root is not resolved: every component of it is checked (no
        # link) when the worktree is made and each time a run uses it.
        root = Path(os.path.normpath(layout.project_root / root))
        if root.is_relative_to(layout.project_root):
            return root / feature
    return root.resolve() / feature


def _init_native(
    git: Git,
    layout: Layout,
    config: Config,
    feature: str,
    run: str,
    branch: str,
    worktree: Path,
    head: str,
) -> list[str]:
    changes: list[str] = []
    undo = _Undo()
    staging = layout.tmops_dir / f".staging-{feature}-{secrets.token_hex(4)}"
    try:
        new_tree = _stage_tree(layout, staging, feature, run)
        _ensure_branch(git, config, branch, head, worktree, undo, changes)
        if worktree != layout.project_root and _ensure_worktree(
            git, layout, branch, worktree, undo, changes
        ):  # a new worktree gets the gitignored files the project needs (.env...)
            changes.extend(
                copy_into_worktree(layout.project_root, worktree, config.features.worktree_copy)
            )
        changes.extend(_place_tree(layout, staging, new_tree, feature, run, undo))
        previous_run = layout.current_run(feature)
        if previous_run != run:
            point_current(layout, feature, run)
            changes.append(f"current -> runs/{run}")
            if previous_run is None:
                undo.push(lambda: os.unlink(layout.current_link(feature)))
            else:
                undo.push(lambda: point_current(layout, feature, previous_run))
        exclude_tmops(git)
        line = FeatureLine(feature, RunState.INITIALIZED.value, iso(utc_now()), branch)
        if write_feature_line(layout, line, replace=False):
            changes.append("FEATURES.txt line")
    except BaseException:
        undo.run()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return changes


def _stage_tree(layout: Layout, staging: Path, feature: str, run: str) -> str | None:
    """Build what is missing of the feature tree in ``staging``; say which level is new."""
    feature_dir = layout.feature_dir(feature)
    run_dir = layout.run_dir(feature, run)
    # A link planted in .tmops (say, committed in a cloned repository) must not redirect writes:
    # lstat_checked refuses one anywhere on the way.
    for path in (layout.runs_dir(feature), layout.docs_dir(feature)):
        lstat_checked(path)
    feature_exists = lstat_checked(feature_dir) is not None
    if feature_exists and lstat_checked(run_dir) is not None:
        return None
    ensure_private_dir(staging)
    if not feature_exists:
        top = staging / feature
        ensure_private_dir(top)
        ensure_private_dir(top / "docs")
        for sub in DOC_SUBDIRS:
            ensure_private_dir(top / "docs" / sub)
        ensure_private_dir(top / "runs")
        new_run = top / "runs" / run
        level = "feature"
    else:
        new_run = staging / run
        level = "run"
    ensure_private_dir(new_run)
    for sub in RUN_SUBDIRS:
        ensure_private_dir(new_run / sub)
    atomic_write(new_run / "TASK_SPEC.md", _initial_spec(layout, feature, run))
    return level


def _initial_spec(layout: Layout, feature: str, run: str) -> str:
    # A new run of an existing feature starts from the spec of the run it follows.
    previous = layout.current_run(feature)
    if previous and previous != run:
        text = read_text_checked(layout.task_spec(feature, previous))
        if text is not None:
            return text
    return task_spec_template(feature, run, utc_now())


def _place_tree(
    layout: Layout, staging: Path, level: str | None, feature: str, run: str, undo: _Undo
) -> list[str]:
    changes: list[str] = []
    if level == "feature":
        target = layout.feature_dir(feature)
        rename_checked(staging / feature, target)
        undo.push(lambda: shutil.rmtree(target))
        return [f".tmops/{feature}/ (runs/{run}, docs, TASK_SPEC.md)"]
    if level == "run":
        ensure_private_dir(layout.runs_dir(feature))
        target = layout.run_dir(feature, run)
        rename_checked(staging / run, target)
        undo.push(lambda: shutil.rmtree(target))
        previous = layout.current_run(feature)
        if previous and previous != run:
            atomic_write(layout.runs_dir(feature) / "PREVIOUS_RUN.txt", previous + "\n")
        changes.append(f".tmops/{feature}/runs/{run}/")
        changes.extend(_fill_docs(layout, feature))
        return changes
    # The feature and run exist (made by hand, by preflight, or a repeated init): fill gaps.
    changes.extend(_fill_docs(layout, feature))
    for folder in (layout.run_dir(feature, run) / sub for sub in RUN_SUBDIRS):
        if ensure_private_dir(folder):
            changes.append(str(folder.relative_to(layout.project_root)) + "/")
    changes.extend(_ensure_task_spec(layout, feature, run))
    return changes


def _fill_docs(layout: Layout, feature: str) -> list[str]:
    created = []
    for folder in (layout.docs_dir(feature) / sub for sub in ("", *DOC_SUBDIRS)):
        if ensure_private_dir(folder):
            created.append(str(folder.relative_to(layout.project_root)) + "/")
    return created


def _ensure_task_spec(layout: Layout, feature: str, run: str) -> list[str]:
    spec = layout.task_spec(feature, run)
    if lstat_checked(spec) is None:  # refuses a link
        atomic_write(spec, task_spec_template(feature, run, utc_now()))
        return ["TASK_SPEC.md"]
    # Kept: a spec from the preflight workflow, or one of a feature tmops already knows.
    if is_preflight_spec(spec) or feature in read_features(layout):
        return []
    saved = backup(layout, feature, spec)
    atomic_write(spec, task_spec_template(feature, run, utc_now()))
    return [f"TASK_SPEC.md (the old one saved to {saved})"]


def _ensure_branch(
    git: Git,
    config: Config,
    branch: str,
    head: str,
    worktree: Path,
    undo: _Undo,
    changes: list[str],
) -> None:
    if not git.branch_exists(branch):
        git.create_branch(branch, head)
        undo.push(lambda: git.delete_branch(branch))
        changes.append(f"branch {branch}")
    if worktree == git.cwd and config.features.isolation == "checkout":
        previous = git.current_branch()
        if previous != branch:
            git.switch(branch)
            if previous is not None:
                undo.push(lambda: git.switch(previous))
            changes.append(f"checked out {branch}")


def _ensure_worktree(
    git: Git, layout: Layout, branch: str, path: Path, undo: _Undo, changes: list[str]
) -> bool:
    """Make the feature's worktree unless it is there; whether it was made now."""
    inside = path.is_relative_to(layout.project_root)
    if inside:  # every folder from the project root down, a link refused (.tmops/worktrees...)
        os.close(open_dir(path.parent, create=True, root=layout.project_root))
        lstat_checked(path, root=layout.project_root)
    for worktree in git.worktrees():
        if worktree.path.resolve() == path:
            if worktree.branch != branch:
                raise WorkspaceError(
                    f"the worktree {path} has branch {worktree.branch} checked out, not {branch}",
                    hint=f"remove it (`git worktree remove {path}`) or set "
                    "features.worktree_root elsewhere",
                )
            return False
    if os.path.lexists(path):
        raise WorkspaceError(
            f"the worktree path {path} is taken by something else",
            hint=f"move {path} away, or set features.worktree_root to another folder",
        )
    if not inside:  # a folder the config names outside the project: made as asked
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(
                f"cannot create the worktree folder {path.parent}: {exc.strerror}",
                hint="make it a writable folder, or set features.worktree_root elsewhere",
            ) from exc
    git.add_worktree(path, branch)
    undo.push(lambda: git.remove_worktree(path))
    changes.append(f"worktree {path}")
    return True


def exclude_tmops(git: Git) -> None:
    """Keep ``.tmops/`` out of ``git status`` without editing the user's .gitignore."""
    exclude = git.git_dir() / "info" / "exclude"
    with contextlib.suppress(OSError):
        text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        if "/.tmops/" not in text.splitlines():
            exclude.parent.mkdir(parents=True, exist_ok=True)
            # nosemgrep: tmops-open-through-layout -- git's own info/exclude, not under .tmops/
            with open(exclude, "a", encoding="utf-8") as handle:
                handle.write(("" if text.endswith("\n") or not text else "\n") + "/.tmops/\n")


def _run_legacy_script(
    git: Git, layout: Layout, config: Config, feature: str, request: InitRequest
) -> list[str]:
    """Run a configured ``init_feature_multi.sh`` instead of the native init, then check it."""
    script = Path(config.paths.init_script or "").expanduser()
    if not script.is_absolute():
        script = layout.project_root / script
    if not script.is_file() or not os.access(script, os.X_OK):
        raise WorkspaceError(
            f"the configured init script {script} is not an executable file",
            hint=f"check paths.init_script, or `chmod u+x {script}`",
        )
    argv = [str(script), feature, request.run_type]
    if request.use_current_branch:
        argv.append("--use-current-branch")
    elif request.branch:
        argv += ["--branch", request.branch]
    before = set(read_features(layout)), layout.current_run(feature)
    # Its own session, so a timeout can kill the script with everything it started.
    with subprocess.Popen(
        argv,
        cwd=layout.project_root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            _, stderr = process.communicate(timeout=config.paths.init_timeout)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise WorkspaceError(
                f"the init script {script} did not finish within {config.paths.init_timeout} s",
                hint="raise paths.init_timeout or fix the script",
            ) from exc
    if process.returncode != 0:
        raise WorkspaceError(
            f"the init script {script} failed with exit code {process.returncode}: "
            f"{stderr.strip()[-_STDERR_TAIL:] or 'no error output'}"
        )
    run = layout.current_run(feature)
    missing = _missing_layout(git, layout, feature, run, request)
    if missing:
        raise WorkspaceError(
            f"the init script {script} exited 0 but did not create: {', '.join(missing)}",
            hint="fix the script or remove paths.init_script to use the native init",
        )
    return [f"ran {script.name}"] if (set(read_features(layout)), run) != before else []


def _missing_layout(
    git: Git, layout: Layout, feature: str, run: str | None, request: InitRequest
) -> list[str]:
    if run is None:
        return [f".tmops/{feature}/current -> runs/<run>"]
    expected = [
        layout.checkpoint_dir(feature, run),
        layout.logs_dir(feature, run),
        layout.task_spec(feature, run),
        *(layout.docs_dir(feature) / sub for sub in DOC_SUBDIRS),
    ]
    missing = [str(p.relative_to(layout.project_root)) for p in expected if not p.exists()]
    if feature not in read_features(layout):
        missing.append("a FEATURES.txt line")
    branch = request.branch or f"feature/{feature}"
    if not request.use_current_branch and not git.branch_exists(branch):
        missing.append(f"branch {branch}")
    return missing


def _record(
    store: Store, feature: str, run: str, branch: str, worktree: Path, config: Config
) -> None:
    stamp = iso(utc_now())
    existing = store.feature(feature)
    store.record_init(
        FeatureRecord(
            name=feature,
            branch=branch,
            worktree=str(worktree),
            isolation=config.features.isolation,
            current_run=run,
            status=existing.status if existing else RunState.INITIALIZED.value,
            created_at=existing.created_at if existing else stamp,
            updated_at=stamp,
        ),
        RunRecord(
            feature=feature,
            run=run,
            status=RunState.INITIALIZED.value,
            created_at=stamp,
            updated_at=stamp,
        ),
    )
