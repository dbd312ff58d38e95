"""Attempts run away from the engine: the :class:`~tmops_hookspecs.ExecutorHost` the core lends
an executor plugin (Temporal's, say), on both sides of its queue.

The engine turns an :class:`~tmops_hookspecs.AttemptSpec` into a *job* (JSON data: paths
relative to the project root, the run's checkpoints and task spec as text, the fencing token)
after publishing the feature branch to the shared remote. A worker, in its own clone, checks
the branch out at that commit, runs the agent with :class:`LocalExecutor` (the same supervisor,
limits and checkpoint grace), commits what the agent left and pushes it to a ref of that
attempt's own, ``refs/tmops/<feature>/<run>/work/<phase>-<n>-f<token>-<lease>``. The engine settles
the *result* its executor accepted: its branch fast-forwarded to that ref (as an agent's own
commits land in a local run; the run's fenced commit and transition follow), the checkpoints
into the run's folder. So a worker that lost its
attempt (killed, timed out, retried elsewhere) can push only to a ref nobody reads, and every
store write and branch move stays the engine's, under the run's token. Workers need no store.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from tmops_core.checkpoints.watch import Arrivals, CheckpointWatcher
from tmops_core.config import Config, provider_settings
from tmops_core.git import Git
from tmops_core.orchestration.executor import LocalExecutor
from tmops_core.orchestration.run_mirror import RunMirror
from tmops_core.plugins import Plugins
from tmops_core.workspace.layout import Layout, atomic_write, open_dir, read_text_checked
from tmops_hookspecs import (
    AgentEvent,
    AgentRequest,
    AgentResult,
    AttemptHooks,
    AttemptOutcome,
    AttemptSpec,
    Outcome,
    TmopsError,
)

__all__ = ["JOB_VERSION", "RemoteAttempts"]

JOB_VERSION = 2  # 2: attempt_id, the run as one workflow
#: a checkpoint or task spec larger than this does not travel in a job (they are notes)
_MAX_FILE_BYTES = 1 << 20
_LEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RemoteAttempts:
    """The core's side of a distributed executor, for the engine and for a worker alike."""

    def __init__(self, config: Config, plugins: Plugins, layout: Layout) -> None:
        self.config = config
        self.plugins = plugins
        self.layout = layout
        self.remote = config.executor.remote

    @property
    def workspace_id(self) -> str:
        return self.config.server.workspace_id

    @property
    def max_retries(self) -> int:
        return self.config.features.max_retries

    # -- the engine's side -------------------------------------------------------------------

    def job(self, spec: AttemptSpec) -> dict[str, Any]:
        root = self.layout.project_root
        git = Git(spec.request.working_dir)
        branch, head = git.current_branch(), git.head()
        if branch is None or head is None:
            raise TmopsError(f"{spec.request.working_dir} has no branch checked out to publish")
        git.push(self.remote, f"+{head}:refs/heads/{branch}")  # the engine's head is the truth
        # the run's folder too: an engine on another machine can carry the run on from here
        RunMirror(self.layout, self.remote, spec.feature, spec.run).save(
            spec.request.working_dir, branch
        )
        files = {
            _relative(path, root): text
            for path in (*_files(spec.checkpoint.parent), self.layout.task_spec(spec.feature,
                                                                                spec.run))
            if (text := _small_text(path, root)) is not None
        }  # fmt: skip
        request = spec.request
        return {
            "version": JOB_VERSION, "workspace": self.workspace_id, "root": str(root),
            "feature": spec.feature, "run": spec.run, "phase": spec.phase,
            "attempt": spec.attempt, "attempt_id": spec.attempt_id, "fencing": spec.fencing,
            "provider": spec.provider,
            "branch": branch, "base": head,
            "worktree": _relative(request.working_dir, root),
            "checkpoint": _relative(spec.checkpoint, root), "log": _relative(spec.log_path, root),
            "extra_dirs": [_relative(path, root) for path in request.extra_dirs],
            "prompt": request.prompt, "role_instructions": request.role_instructions,
            "resume_session_id": request.resume_session_id, "max_turns": request.max_turns,
            "allowed_tools": list(request.allowed_tools),
            "max_budget_usd": request.max_budget_usd, "env_allow": list(spec.env_allow),
            "wall_clock_s": spec.wall_clock_s, "idle_s": spec.idle_s,
            "checkpoint_grace_s": spec.checkpoint_grace_s, "files": files,
        }  # fmt: skip

    def settle(
        self, spec: AttemptSpec, result: Mapping[str, Any], hooks: AttemptHooks
    ) -> AttemptOutcome:
        if result.get("fencing") != spec.fencing:  # an answer to another run's attempt
            raise TmopsError(f"a worker answered for fencing token {result.get('fencing')!r}")
        root = self.layout.project_root
        for event in result.get("events", ()):
            hooks.event(_event(event))
        session = result.get("session_id")
        if session and session != spec.request.resume_session_id:
            hooks.session(session)
        ref, commit = result.get("ref"), result.get("commit")
        if ref and commit:
            git = Git(spec.request.working_dir)
            git.fetch(self.remote, f"+{ref}:{ref}")
            if git.rev(ref) != commit:
                raise TmopsError(f"the remote's {ref} is not the worker's commit {commit}")
            head = git.head()
            if head is not None and not git.is_ancestor(head, commit):
                raise TmopsError(f"the worker's {commit} does not build on the branch's {head}")
            if hooks.cancelled():  # taken from this engine: its branch is the new owner's
                raise TmopsError("the run was taken from this attempt")
            # As the agent's own commits land in a local run; the run's commit and transition
            # (fenced) follow, and the next engine's branch guard checks what it finds.
            git.fast_forward(commit)
        for name, text in result.get("files", {}).items():
            path = (root / name).resolve()
            if path.parent != spec.checkpoint.parent.resolve():
                raise TmopsError(f"a worker sent a file outside the run's checkpoints: {name}")
            atomic_write(path, text, root=root)
        return AttemptOutcome(
            result=_agent_result(result["result"]),
            checkpoint_present=spec.checkpoint.exists(),
            session_id=session,
            stop_reason=result.get("stop_reason"),
            returncode=result.get("returncode"),
        )

    # -- a worker's side ---------------------------------------------------------------------

    def run_job(self, job: Mapping[str, Any], hooks: AttemptHooks) -> dict[str, Any]:
        if job.get("version") != JOB_VERSION:
            raise TmopsError(
                f"a job of version {job.get('version')!r}; this worker reads {JOB_VERSION}: "
                "run the same tmops on the engine and the workers"
            )
        if job["workspace"] != self.workspace_id:
            raise TmopsError(f"a job of workspace {job['workspace']!r} reached a worker of "
                             f"{self.workspace_id!r}")  # fmt: skip
        lease = str(job.get("lease", "a1"))
        if not _LEASE.match(lease):
            raise TmopsError(f"a job's lease {lease[:64]!r} is not a ref name part")
        root = self.layout.project_root
        spec = self._local_spec(job)
        git = Git(root)
        branch = str(job["branch"])
        if branch.startswith("-") or not git.check_ref_format(f"refs/heads/{branch}"):
            raise TmopsError(f"a job names the branch {branch[:80]!r}, not a branch name")
        tracking = f"refs/tmops/{spec.feature}/{spec.run}/published"
        git.fetch(self.remote, f"+refs/heads/{job['branch']}:{tracking}")
        if git.rev(tracking) != job["base"]:
            raise TmopsError(f"the remote's {job['branch']} is not at {job['base']}: the engine "
                             "published another head since")  # fmt: skip
        if spec.request.working_dir != root:  # .tmops/worktrees: 0700, not git's 0755
            os.close(open_dir(spec.request.working_dir.parent, root=root, create=True))
        git.check_out(spec.request.working_dir, job["branch"], job["base"])
        sent = self._write_files(job, spec.checkpoint.parent)
        registered = self.plugins.providers().get(spec.provider)
        if registered is None:
            raise TmopsError(f"this worker has no provider named {spec.provider!r}")
        settings = provider_settings(self.config, spec.provider)
        provider = registered.spec.factory(settings)
        spec = attrs.evolve(spec, env=settings.get("env", {}))
        arrivals = Arrivals()
        with CheckpointWatcher(spec.checkpoint.parent, arrivals):
            local = _WorkerHooks(hooks, arrivals, spec.checkpoint.name,
                                 paths=(str(root), str(job["root"])))  # fmt: skip
            outcome = LocalExecutor().execute(spec, provider, local)
        worktree = Git(spec.request.working_dir)
        head, _ = worktree.commit_work(
            f"tmops({spec.feature}): {spec.phase} work left uncommitted (worker)",
            branch=job["branch"], expected=job["base"], guard=lambda: _Unless(hooks.cancelled),
        )  # fmt: skip
        ref = (  # the token too: a taken-over run numbers its attempts afresh
            f"refs/tmops/{spec.feature}/{spec.run}/work/"
            f"{spec.phase}-{spec.attempt}-f{spec.fencing}-{lease}"
        )
        if head is not None and not hooks.cancelled():
            worktree.push(self.remote, f"+{head}:{ref}")
        return {
            "fencing": job["fencing"], "lease": lease, "ref": ref if head else None,
            "commit": head,
            "result": _data(outcome.result), "session_id": outcome.session_id,
            "stop_reason": outcome.stop_reason, "returncode": outcome.returncode,
            "events": [_data(event) for event in local.events],
            "files": self._changed_files(spec.checkpoint.parent, sent),
        }  # fmt: skip

    def _local_spec(self, job: Mapping[str, Any]) -> AttemptSpec:
        """The job's attempt with this clone's paths (the prompt names the engine's)."""
        root = self.layout.project_root
        here = _inside(root)

        def local(text: str) -> str:
            return text.replace(str(job["root"]), str(root))

        request = AgentRequest(
            feature=job["feature"], run=job["run"], phase=job["phase"],
            role_instructions=local(job["role_instructions"]), prompt=local(job["prompt"]),
            working_dir=here(job["worktree"]),
            extra_dirs=tuple(here(path) for path in job["extra_dirs"]),
            resume_session_id=job["resume_session_id"], max_turns=job["max_turns"],
            allowed_tools=tuple(job["allowed_tools"]), max_budget_usd=job["max_budget_usd"],
        )  # fmt: skip
        return AttemptSpec(
            feature=job["feature"], run=job["run"], phase=job["phase"], attempt=job["attempt"],
            attempt_id=int(job["attempt_id"]), fencing=job["fencing"], provider=job["provider"],
            request=request,
            checkpoint=here(job["checkpoint"]), log_path=here(job["log"]),
            env_allow=tuple(job["env_allow"]), wall_clock_s=job["wall_clock_s"],
            idle_s=job["idle_s"], checkpoint_grace_s=job["checkpoint_grace_s"],
        )  # fmt: skip

    def _write_files(self, job: Mapping[str, Any], checkpoints: Path) -> dict[str, str]:
        """The run's files as the engine has them: the checkpoints folder mirrored."""
        root = self.layout.project_root
        here = _inside(root)
        for folder in (checkpoints, here(job["log"]).parent):
            os.close(open_dir(folder, root=root, create=True))  # 0700, no link on the way
        sent: dict[str, str] = {}
        for name, text in job["files"].items():
            path = here(name)
            os.close(open_dir(path.parent, root=root, create=True))
            atomic_write(path, text, root=root)
            sent[name] = text
        for path in _files(checkpoints):
            if _relative(path, root) not in sent:
                path.unlink()  # set aside or gone on the engine: not the agent's to read
        return sent

    def _changed_files(self, checkpoints: Path, sent: Mapping[str, str]) -> dict[str, str]:
        root = self.layout.project_root
        changed = {}
        for path in _files(checkpoints):
            name = _relative(path, root)
            text = _small_text(path, root)
            if text is not None and sent.get(name) != text:
                changed[name] = text
        return changed


class _Unless:
    """A guard that refuses (raises) once ``cancelled()``: a worker told to stop commits
    nothing more."""

    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self._cancelled = cancelled

    def __enter__(self) -> None:
        if self._cancelled():
            raise TmopsError("the attempt was taken from this worker")

    def __exit__(self, *exc: object) -> None:
        return None


class _WorkerHooks:
    """The plugin's hooks (its heartbeat, its cancel) plus the checkpoint watch of this clone;
    keeps the agent's events for the result, this clone's paths in them told as the engine's
    (``paths``: this root, the engine's), so the trail reads as a local run's."""

    def __init__(
        self, outer: AttemptHooks, arrivals: Arrivals, completion: str, *, paths: tuple[str, str]
    ) -> None:
        self._paths = paths
        self._outer = outer
        self._arrivals = arrivals
        self._completion = completion
        self.events: list[AgentEvent] = []
        self._lock = threading.Lock()

    def started(self, pid: int, start_time: int, mark: str | None) -> None:
        self._outer.started(pid, start_time, mark)

    def session(self, session_id: str) -> None:
        self._outer.session(session_id)

    def event(self, event: AgentEvent) -> None:
        here, there = self._paths
        event = attrs.evolve(event, message=event.message.replace(here, there),
                             data=_replaced(event.data, here, there))  # fmt: skip
        with self._lock:
            self.events.append(event)
        self._outer.event(event)

    def cancelled(self) -> bool:
        return self._outer.cancelled()

    def checkpoint_seen(self) -> bool:
        return self._arrivals.seen_at(self._completion) is not None

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        stop_outer = self._outer.on_change(wake)
        stop_arrivals = self._arrivals.subscribe(wake)

        def stop() -> None:
            stop_outer()
            stop_arrivals()

        return stop


def _replaced(node: Any, old: str, new: str) -> Any:
    """``node`` (JSON data) with ``old`` replaced by ``new`` in every string of it."""
    if isinstance(node, str):
        return node.replace(old, new)
    if isinstance(node, Mapping):
        return {key: _replaced(value, old, new) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_replaced(item, old, new) for item in node]
    return node


def _inside(root: Path) -> Callable[[str], Path]:
    def here(relative: str) -> Path:
        path = Path(relative)
        if path.is_absolute() or ".." in path.parts:
            raise TmopsError(f"a job names a path outside the project: {relative[:80]!r}")
        return root / path

    return here


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError as exc:
        raise TmopsError(f"{path} is not inside the project {root}") from exc


def _files(folder: Path) -> list[Path]:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    return [Path(e.path) for e in entries if e.is_file(follow_symlinks=False)
            and not e.name.endswith(".tmp")]  # fmt: skip


def _small_text(path: Path, root: Path) -> str | None:
    try:
        if path.lstat().st_size > _MAX_FILE_BYTES:
            return None
    except FileNotFoundError:
        return None
    return read_text_checked(path, root=root)


def _data(record: AgentResult | AgentEvent) -> dict[str, Any]:
    data: dict[str, Any] = _plain(attrs.asdict(record, recurse=False))
    return data


def _plain(node: Any) -> Any:
    """JSON data: mappings as dicts, sequences as lists, an enum as its value."""
    if isinstance(node, Mapping):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(item) for item in node]
    if isinstance(node, Outcome):
        return node.value
    if isinstance(node, Path):
        return str(node)
    return node


def _agent_result(data: Mapping[str, Any]) -> AgentResult:
    known = {field.name for field in attrs.fields(AgentResult)}
    fields = {key: value for key, value in data.items() if key in known}
    return AgentResult(**{**fields, "outcome": Outcome(data["outcome"])})


def _event(data: Mapping[str, Any]) -> AgentEvent:
    known = {field.name for field in attrs.fields(AgentEvent)}
    return AgentEvent(**{key: value for key, value in data.items() if key in known})
