"""A run's folder on the shared remote, so an engine on another machine can carry the run on.

With a distributed executor (``executor.name`` other than ``local``) the store is shared and
the engine's lease moves to whichever engine is alive; but a run's folder
(``.tmops/<feature>/runs/<run>/``) and the feature's worktree live on the disk of the engine
that drove it. So the engine publishes both to ``executor.remote``: the feature branch, and
the folder as a commit on ``refs/tmops/<feature>/<run>/folder`` (built with a private index:
the worktree and the user's index never move), whenever it hands out an attempt, commits a
phase and ends a run. An engine that takes a run over on a machine without its folder fetches
that ref and the branch, restores the folder (files 0600, folders 0700, nothing through a
link, nothing outside the run's folder) and adds the worktree, then drives the run on.

What travels: every file of the run's folder (checkpoints, the task spec, SUMMARY.md,
metrics.json, set-aside reviews...), but of each log only its last :data:`LOG_CAP` bytes: logs
are the record of attempts already judged, may grow to many megabytes per attempt, and would
be pushed again at every handoff; the end of a log is where a dying attempt's story is.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from tmops_core.config import Config
from tmops_core.git import Git
from tmops_core.log import logger
from tmops_core.workspace.layout import (
    Layout,
    atomic_write,
    lstat_checked,
    open_dir,
    point_current,
    read_checked,
    rename_checked,
)
from tmops_hookspecs import TmopsError, WorkspaceError

__all__ = ["LOG_CAP", "MANIFEST", "RunMirror", "folder_ref", "run_mirror"]

#: the most of one log that travels (its end)
LOG_CAP = 256 * 1024
#: a file of the run's folder larger than this does not travel (the folder holds notes)
_MAX_FILE_BYTES = 8 << 20
#: what the mirror says about itself, at the root of its tree (never restored as a file)
MANIFEST = ".tmops-mirror.json"
_VERSION = 1
_CUT = "[tmops: the beginning of this log stayed on the machine that wrote it]\n"


def folder_ref(feature: str, run: str) -> str:
    return f"refs/tmops/{feature}/{run}/folder"


def run_mirror(config: Config, layout: Layout, feature: str, run: str) -> RunMirror | None:
    """The run's mirror when its attempts run away from the engine; None for ``local``."""
    if config.executor.name == "local":
        return None
    return RunMirror(layout, config.executor.remote, feature, run)


class RunMirror:
    """One run's folder and branch on the shared remote: published, and restored from it."""

    def __init__(self, layout: Layout, remote: str, feature: str, run: str) -> None:
        self.layout, self.remote = layout, remote
        self.feature, self.run = feature, run
        self.ref = folder_ref(feature, run)
        self.folder = layout.run_dir(feature, run)

    # -- publishing --------------------------------------------------------------------------

    def save(self, worktree: Path, branch: str) -> str:
        """Commit the run's folder to :attr:`ref` and push it; the commit."""
        root = self.layout.project_root
        if lstat_checked(self.folder, root=root) is None:  # never an empty mirror over a good one
            raise TmopsError(f"the run's folder {self.folder} is missing: nothing to mirror")
        git = Git(root)
        files, cut = self._files()
        where = "." if worktree == root else _relative_or_absolute(worktree, root)
        manifest = {"version": _VERSION, "feature": self.feature, "run": self.run,
                    "branch": branch, "worktree": where, "logs_cut": cut}  # fmt: skip
        files[MANIFEST] = json.dumps(manifest, indent=2).encode()
        commit = git.commit_files(self.ref, files, f"tmops({self.feature}): run {self.run} folder")
        git.push(self.remote, f"+{self.ref}:{self.ref}")
        return commit

    def publish(self, worktree: Path, branch: str) -> None:
        """The branch as the engine has it, then the folder: never fatal (the next handoff
        publishes again), but said in the log when it fails."""
        if lstat_checked(self.folder, root=self.layout.project_root) is None:
            return  # a run that could not be restored here: what the remote has stays
        try:
            head = Git(worktree).rev(f"refs/heads/{branch}")
            if head is not None:
                Git(worktree).push(self.remote, f"+{head}:refs/heads/{branch}")
            self.save(worktree, branch)
        except TmopsError as exc:
            logger.warning(
                "{}/{}: could not publish the run to the remote {} ({}); an engine on another "
                "machine could not carry it on from here", self.feature, self.run, self.remote,
                exc,
            )  # fmt: skip

    def _files(self) -> tuple[dict[str, bytes], list[str]]:
        """The folder's plain files by path inside it (logs cut to their end), and the logs
        cut; links and anything but plain files are left out."""
        root = self.layout.project_root
        files: dict[str, bytes] = {}
        cut: list[str] = []
        for path in _walk(self.folder, root):
            name = path.relative_to(self.folder).as_posix()
            info = lstat_checked(path, root=root)  # a link swapped in meanwhile: refused
            if info is None or not stat.S_ISREG(info.st_mode):
                continue
            if name.startswith("logs/") and info.st_size > LOG_CAP:
                data = read_checked(path, root=root) or b""
                files[name] = data[-LOG_CAP:]
                cut.append(name)
            elif info.st_size <= _MAX_FILE_BYTES:
                files[name] = read_checked(path, root=root) or b""
            else:
                logger.warning("{} is larger than {} bytes: not mirrored", path, _MAX_FILE_BYTES)
        return files, cut

    # -- restoring ---------------------------------------------------------------------------

    def restore(self, worktree: Path, branch: str) -> Path:
        """Make sure the run's folder and worktree are here; the worktree's path here.

        Nothing is fetched when both are. Otherwise the mirror and the branch come from the
        remote: the folder restored if missing, the worktree added if missing (at the place
        the mirror names inside this project, else where the store says).

        :raises TmopsError: naming what could not be restored and what to do.
        """
        root = self.layout.project_root
        have_folder = lstat_checked(self.folder, root=root) is not None
        if have_folder and os.path.lexists(worktree):
            return worktree
        self._fetch()
        commit = Git(root).rev(self.ref)
        assert commit is not None  # noqa: S101 - fetched just now
        manifest, files = self._read(commit)
        here = _worktree_here(manifest.get("worktree"), worktree, root)  # checked before writing
        if not have_folder:
            self._write_folder(files, manifest.get("logs_cut", []))
            logger.info("{}/{}: the run's folder restored from {} {}", self.feature, self.run,
                        self.remote, self.ref)  # fmt: skip
        if not os.path.lexists(here):
            self._add_worktree(here, branch)
        return here

    def _fetch(self) -> None:
        try:
            Git(self.layout.project_root).fetch(self.remote, f"+{self.ref}:{self.ref}")
        except WorkspaceError as exc:
            raise TmopsError(
                f"the run's folder {self.folder} is not on this machine and cannot be fetched "
                f"from the remote {self.remote} ({self.ref}: {exc}); the engine that drove the "
                "run did not mirror it there. Copy the folder from that machine (and the "
                f"feature's worktree), or start a new run: `tmops start {self.feature} --run "
                "<new>`"
            ) from exc

    def _read(self, commit: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The manifest and the files of the mirror ``commit``, every entry checked first:
        a link, a submodule, an absolute path or a ``..`` refuses the whole mirror."""
        git = Git(self.layout.project_root)
        entries = git.tree_entries(commit)
        for mode, kind, _, path in entries:
            parts = PurePosixPath(path).parts
            if kind != "blob" or mode not in ("100644", "100755"):
                raise self._hostile(commit, f"{path!r} is not a plain file (mode {mode})")
            if path.startswith("/") or any(part in ("", ".", "..") for part in parts):
                raise self._hostile(commit, f"the path {path!r} leaves the run's folder")
            if any(part.startswith(".") and part.endswith(".tmp") for part in parts):
                raise self._hostile(commit, f"the path {path!r} is a temporary file's")
        files = {path: git.blob(name) for _, _, name, path in entries}
        try:
            manifest = json.loads(files.pop(MANIFEST))
        except (KeyError, ValueError) as exc:
            raise self._hostile(commit, f"its {MANIFEST} is missing or not JSON") from exc
        if not isinstance(manifest, dict) or manifest.get("version") != _VERSION:
            raise self._hostile(commit, f"its {MANIFEST} is not of version {_VERSION}")
        return manifest, files

    def _hostile(self, commit: str, why: str) -> TmopsError:
        return TmopsError(
            f"the remote's {self.ref} ({commit[:12]}) is not a run folder tmops wrote: {why}; "
            f"nothing of it was restored. Delete that ref on the remote {self.remote} and copy "
            f"the run's folder from the machine that drove it, or start a new run of "
            f"{self.feature}"
        )

    def _write_folder(self, files: dict[str, bytes], cut: list[str]) -> None:
        """Write the files into a staging folder, then rename it into place: a folder that is
        there is whole."""
        root = self.layout.project_root
        runs = self.layout.runs_dir(self.feature)
        staging = runs / f".restore-{self.run}-{os.urandom(4).hex()}"
        os.close(open_dir(staging, create=True, root=root))
        for sub in ("checkpoints", "logs"):
            os.close(open_dir(staging / sub, create=True, root=root))
        for name, data in files.items():
            path = staging / name
            os.close(open_dir(path.parent, create=True, root=root))
            atomic_write(path, (_CUT.encode() + data) if name in cut else data, root=root)
        rename_checked(staging, self.folder, root=root)
        if not os.path.lexists(self.layout.current_link(self.feature)):
            point_current(self.layout, self.feature, self.run)

    def _add_worktree(self, path: Path, branch: str) -> None:
        """The feature's worktree at ``path``, on the branch as the remote has it."""
        root = self.layout.project_root
        git = Git(root)
        if path == root:
            raise TmopsError(
                f"the run works in the project itself on {branch}, and this clone does not "
                f"have it checked out: `git fetch {self.remote} {branch} && git switch {branch}`"
                f" here, then `tmops start {self.feature} --resume`"
            )
        fetched = f"refs/tmops/{self.feature}/{self.run}/restoring"
        try:
            git.fetch(self.remote, f"+refs/heads/{branch}:{fetched}")
        except WorkspaceError as exc:
            raise TmopsError(
                f"the feature branch {branch} cannot be fetched from the remote {self.remote} "
                f"({exc}), so the worktree {path} cannot be made; push the branch there from "
                "the machine that drove the run, then resume it"
            ) from exc
        remote_head, local_head = git.rev(fetched), git.rev(f"refs/heads/{branch}")
        git.delete_ref(fetched)
        assert remote_head is not None  # noqa: S101 - fetched just now
        # The remote's head unless this clone has the branch further on (or elsewhere): then
        # the run's branch guard, which knows the head the store names, decides.
        if local_head is None or git.is_ancestor(local_head, remote_head):
            git.set_ref(f"refs/heads/{branch}", remote_head)
        if path.is_relative_to(root):
            os.close(open_dir(path.parent, create=True, root=root))  # 0700, no link on the way
        else:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        git.prune_worktrees()  # a worktree whose folder went still holds its branch for git
        git.add_worktree(path, branch)
        logger.info("{}/{}: the worktree {} added on {} from {}", self.feature, self.run, path,
                    branch, self.remote)  # fmt: skip


def _relative_or_absolute(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _worktree_here(recorded: object, stored: Path, root: Path) -> Path:
    """The worktree's path on this machine: the mirror's place inside this project (the
    engine that wrote it had its own project path), else the store's."""
    if not isinstance(recorded, str) or not recorded:
        return stored
    if recorded == ".":
        return root
    path = PurePosixPath(recorded)
    if path.is_absolute():  # outside the project: the same path on every machine, or refused
        if Path(recorded) != stored:
            raise TmopsError(f"the run's mirror names the worktree {recorded[:80]!r}, but the "
                             f"store names {stored}: restore the worktree by hand")  # fmt: skip
        return stored
    if ".." in path.parts:
        raise TmopsError(f"the run's mirror names the worktree {recorded[:80]!r}, outside it")
    return root / path


def _walk(folder: Path, root: Path) -> list[Path]:
    """Every plain file below ``folder`` (no link followed nor kept; no temporary file)."""
    found: list[Path] = []
    try:
        fd = open_dir(folder, root=root)
    except FileNotFoundError:
        return found
    try:
        with os.scandir(fd) as entries:
            listed = [(entry.name, entry.is_dir(follow_symlinks=False),
                       entry.is_file(follow_symlinks=False)) for entry in entries]  # fmt: skip
    finally:
        os.close(fd)
    for name, is_dir, is_file in sorted(listed):
        path = folder / name
        if is_dir:
            found.extend(_walk(path, root))
        elif is_file and not name.endswith(".tmp"):
            found.append(path)
    return found
