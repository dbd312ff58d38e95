"""Every git call tmops makes.

Calls are argv lists (never a shell), refs and paths come after ``--end-of-options`` or ``--``,
repository hooks are switched off for tmops' own calls (``core.hooksPath=/dev/null``), and git
never prompts. Errors become :class:`~tmops_hookspecs.WorkspaceError` with git's own message.
The commits tmops makes never hold build artefacts (:mod:`tmops_core.artefacts`); it never
edits the repository's ignore files to get there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import attrs

from tmops_core.artefacts import (
    VENV_MARKER,
    artefact_pathspecs,
    exclude_pathspecs,
    exclude_patterns,
    is_artefact,
    venv_roots,
)
from tmops_hookspecs import WorkspaceError

__all__ = ["BranchMoved", "Git", "Worktree", "find_git"]

_TIMEOUT_S = 60
_NO_COMMIT = "0" * 40


class BranchMoved(WorkspaceError):
    """The feature branch is not where tmops left it: someone else moved it."""

    def __init__(self, branch: str, expected: str | None, found: str | None) -> None:
        self.branch, self.expected, self.found = branch, expected, found
        super().__init__(
            f"the branch {branch} moved: tmops left it at {(expected or 'nothing')[:12]}, "
            f"it is now at {(found or 'nothing')[:12]}",
            hint="check what moved it; continue from the new head with "
            "`tmops start FEATURE --resume --accept-branch`, or put the branch back first",
        )


def find_git() -> str:
    """The git executable, or a clear error when it is missing."""
    git = shutil.which("git")
    if git is None:
        raise WorkspaceError(
            "git is not installed or not on PATH; tmops needs it for branches and worktrees",
            hint="install git (e.g. `apt install git`) and try again",
        )
    return git


@attrs.frozen
class Worktree:
    path: Path
    branch: str | None
    head: str | None


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        GIT_CONFIG_NOSYSTEM="1",
    )
    # A caller's GIT_DIR or GIT_WORK_TREE would point every call at another repository.
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        env.pop(name, None)
    return env


def _check_commit_id(commit: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        raise WorkspaceError(f"not a commit id: {commit[:80]!r}")


class Git:
    """git commands run in one directory."""

    def __init__(self, cwd: Path, *, executable: str | None = None) -> None:
        self.cwd = cwd
        self._git = executable or find_git()
        self._env = _git_env()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self._git, "-c", "core.hooksPath=/dev/null", *args]
        try:
            result = subprocess.run(
                argv,
                cwd=self.cwd,
                env=self._env,
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise WorkspaceError(f"git {args[0]} did not finish in {_TIMEOUT_S} s") from exc
        except OSError as exc:
            raise WorkspaceError(f"cannot run git in {self.cwd}: {exc.strerror}") from exc
        if check and result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise WorkspaceError(
                f"git {args[0]} failed in {self.cwd}: {message[-1] if message else 'no output'}"
            )
        return result

    # -- repository --------------------------------------------------------------------------

    def toplevel(self) -> Path:
        """The root of the working tree containing ``cwd``."""
        result = self.run("rev-parse", "--show-toplevel", check=False)
        if result.returncode != 0:
            raise WorkspaceError(
                f"{self.cwd} is not inside a git repository",
                hint="run tmops from your project's git repository, or `git init` one first",
            )
        return Path(result.stdout.strip()).resolve()

    def main_root(self) -> Path:
        """The main working tree of the repository, also when ``cwd`` is in a linked worktree."""
        top = self.toplevel()
        common = self.git_dir()
        if common.name == ".git" and common.parent != top:
            return common.parent
        return top

    def head(self) -> str | None:
        """The commit HEAD points at, or ``None`` in a repository with no commits yet."""
        result = self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def current_branch(self) -> str | None:
        result = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def git_dir(self) -> Path:
        """The common git directory (shared by all worktrees)."""
        raw = self.run("rev-parse", "--git-common-dir").stdout.strip()
        return (self.cwd / raw).resolve()

    def check_ref_format(self, ref: str) -> bool:
        """Whether ``ref`` (a full ``refs/...`` name, so never option-like) is a valid ref."""
        if not ref.startswith("refs/"):
            return False
        return self.run("check-ref-format", ref, check=False).returncode == 0

    def is_dirty(self) -> bool:
        return bool(self.run("status", "--porcelain", "--untracked-files=no").stdout.strip())

    # -- branches ----------------------------------------------------------------------------

    def branch_exists(self, branch: str) -> bool:
        ref = f"refs/heads/{branch}"
        result = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", ref, check=False)
        return result.returncode == 0

    def create_branch(self, branch: str, start: str) -> None:
        """Create ``branch`` at ``start`` without touching the checkout or the index."""
        self.run("branch", "--no-track", "--end-of-options", branch, start)

    def delete_branch(self, branch: str) -> None:
        self.run("branch", "-D", "--end-of-options", branch)

    def switch(self, branch: str) -> None:
        self.run("switch", "--no-guess", "--end-of-options", branch)

    # -- worktrees ---------------------------------------------------------------------------

    def worktrees(self) -> list[Worktree]:
        """``git worktree list``, parsed from its porcelain form."""
        output = self.run("worktree", "list", "--porcelain", "-z").stdout
        found: list[Worktree] = []
        for record in output.split("\0\0"):
            fields = dict(
                [*line.split(" ", 1), ""][:2] for line in record.split("\0") if line.strip()
            )
            if "worktree" not in fields:
                continue
            branch = fields.get("branch")
            found.append(
                Worktree(
                    path=Path(fields["worktree"]),
                    branch=branch.removeprefix("refs/heads/") if branch else None,
                    head=fields.get("HEAD") or None,
                )
            )
        return found

    def add_worktree(self, path: Path, branch: str) -> None:
        self.run("worktree", "add", "--end-of-options", str(path), branch)

    def remove_worktree(self, path: Path) -> None:
        self.run("worktree", "remove", "--force", "--end-of-options", str(path))

    def prune_worktrees(self) -> None:
        """Forget the bookkeeping of worktrees whose folder is gone."""
        self.run("worktree", "prune")

    def admin_dir(self) -> Path:
        """This worktree's own git directory (``.git/worktrees/<name>`` for a linked one):
        what lives there goes when the worktree is removed."""
        return Path(self.run("rev-parse", "--absolute-git-dir").stdout.strip())

    def remote_refs_containing(self, commit: str) -> list[str]:
        """The remote-tracking branches (``origin/main``...) that contain ``commit``: pushed."""
        output = self.run(
            "for-each-ref", "--format=%(refname:short)", f"--contains={commit}", "refs/remotes/"
        ).stdout
        return [ref for ref in output.splitlines() if ref and not ref.endswith("/HEAD")]

    # -- a shared remote (the workers of a distributed executor) --------------------------------

    def fetch(self, remote: str, refspec: str) -> None:
        """Fetch ``refspec`` (``+src:dst``) from ``remote``, without tags."""
        self.run("fetch", "--no-tags", "--quiet", "--end-of-options", remote, refspec)

    def push(self, remote: str, refspec: str) -> None:
        """Push ``refspec`` (``+commit:refs/...`` forces) to ``remote``."""
        self.run("push", "--quiet", "--end-of-options", remote, refspec)

    def commit_files(self, ref: str, files: Mapping[str, bytes], message: str) -> str:
        """A commit of ``files`` (tree path to content, all plain files) on top of what ``ref``
        (a full ``refs/tmops/...`` name) names, if anything, and ``ref`` moved to it; made with
        a private index, so neither the worktree, the user's index nor any other ref moves."""
        fd, index = tempfile.mkstemp(prefix="tmops-index-", dir=self.git_dir())
        os.close(fd)
        os.unlink(index)  # git makes it afresh: an empty file is not an index
        try:
            private = Git(self.cwd, executable=self._git)
            private._env["GIT_INDEX_FILE"] = index
            entries = b"".join(
                b"100644 " + self._output(b"hash-object", b"-w", b"--stdin", data=data).strip()
                + b"\t" + os.fsencode(path) + b"\0"
                for path, data in sorted(files.items())
            )  # fmt: skip
            private._output(b"update-index", b"--add", b"-z", b"--index-info", data=entries)
            tree = private.run("write-tree").stdout.strip()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(index)
        identity: list[str] = []
        if self.run("config", "--get", "user.email", check=False).returncode != 0:
            identity = ["-c", "user.name=tmops", "-c", "user.email=tmops@localhost"]
        parent = self.rev(ref)
        parents = ["-p", parent] if parent else []
        commit = self.run(*identity, "commit-tree", tree, *parents, "-m", message).stdout.strip()
        self.set_ref(ref, commit)
        return commit

    def tree_entries(self, commit: str) -> list[tuple[str, str, str, str]]:
        """``(mode, type, object, path)`` of every entry of ``commit``'s tree, recursively."""
        _check_commit_id(commit)
        output = self._output(b"ls-tree", b"-r", b"-z", b"--full-tree", commit.encode())
        entries = []
        for record in output.split(b"\0"):
            if record:
                meta, _, path = record.partition(b"\t")
                mode, kind, name = meta.decode().split()
                entries.append((mode, kind, name, os.fsdecode(path)))
        return entries

    def blob(self, name: str) -> bytes:
        """The content of the blob ``name`` (an object id)."""
        _check_commit_id(name)  # an object id, so never an option
        return self._output(b"cat-file", b"blob", name.encode())

    def _output(self, *args: bytes, data: bytes | None = None) -> bytes:
        """:meth:`run` for bytes in and out (blobs, NUL-separated lists)."""
        argv = [os.fsencode(self._git), b"-c", b"core.hooksPath=/dev/null", *args]
        try:
            result = subprocess.run(
                argv, cwd=self.cwd, env=self._env, capture_output=True, timeout=_TIMEOUT_S,
                check=False, input=data if data is not None else b"",
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            what = args[0].decode()
            raise WorkspaceError(f"git {what} did not finish in {_TIMEOUT_S} s") from exc
        except OSError as exc:
            raise WorkspaceError(f"cannot run git in {self.cwd}: {exc.strerror}") from exc
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip().splitlines()
            raise WorkspaceError(
                f"git {args[0].decode()} failed in {self.cwd}: "
                f"{message[-1] if message else 'no output'}"
            )
        return result.stdout

    def fast_forward(self, commit: str) -> None:
        """Move the checked-out branch and its files on to ``commit``, which must contain it
        (a worker's commits on top of the head it was given)."""
        _check_commit_id(commit)
        self.run("merge", "--ff-only", "--quiet", commit)  # a commit id: no option

    def check_out(self, path: Path, branch: str, commit: str) -> None:
        """``branch`` at ``commit`` in the worktree ``path`` (added if missing), its files
        exactly the commit's: what was left there is a worker's stale copy."""
        if not path.exists():
            self.run("worktree", "add", "--force", "-B", branch, "--end-of-options", str(path),
                     commit)  # fmt: skip
            return
        _check_commit_id(commit)
        here = Git(path, executable=self._git)
        here.run("checkout", "--force", "-B", branch, commit)  # a commit id: no option, no path
        here.run("clean", "-fd", "--quiet", "--exclude=.tmops")

    # -- the workflow's commits --------------------------------------------------------------

    def set_ref(self, ref: str, commit: str) -> None:
        """Point ``ref`` (a full ``refs/tmops/...`` name) at ``commit``: a phase-start marker."""
        self.run("update-ref", "--no-deref", ref, commit)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``descendant`` contains ``ancestor`` (equal commits count)."""
        result = self.run(
            "merge-base", "--is-ancestor", "--end-of-options", ancestor, descendant, check=False
        )
        return result.returncode == 0

    def commit_work(
        self,
        message: str,
        *,
        branch: str,
        expected: str | None,
        guard: Callable[[], AbstractContextManager[object]],
    ) -> tuple[str | None, str | None]:
        """Commit everything left in the worktree onto ``branch``; return (HEAD, new commit).

        ``expected`` is the head tmops last left the branch at: the branch may have moved on
        from it (the agent's own commits) but not away from it (a reset, a rewrite), else
        :class:`BranchMoved`. The branch is moved with a compare-and-swap inside ``guard()``
        (the store's fenced transaction), so a run that lost its fencing token never moves it.
        One ``git status`` answers "is anything left?" and "where is HEAD?" on the handoff path.

        The commit never holds a build artefact (:meth:`_stage_work`); with nothing but
        artefacts left, nothing is committed.
        """
        output = self.run("status", "--porcelain=v2", "--branch").stdout
        head = next(
            (line.split()[2] for line in output.splitlines() if line.startswith("# branch.oid ")),
            None,
        )
        if head == "(initial)":
            head = None
        if expected and head != expected and (head is None or not self.is_ancestor(expected, head)):
            raise BranchMoved(branch, expected, head)
        if not any(line and not line.startswith("#") for line in output.splitlines()):
            return head, None
        if not self._stage_work(head):
            return head, None
        tree = self.run("write-tree").stdout.strip()
        identity: list[str] = []
        if self.run("config", "--get", "user.email", check=False).returncode != 0:
            identity = ["-c", "user.name=tmops", "-c", "user.email=tmops@localhost"]
        parents = ["-p", head] if head else []
        commit = self.run(*identity, "commit-tree", tree, *parents, "-m", message).stdout.strip()
        with guard():
            moved = self.run(
                "update-ref", "-m", message, f"refs/heads/{branch}", commit, head or _NO_COMMIT,
                check=False,
            )  # fmt: skip
        if moved.returncode != 0:
            raise BranchMoved(branch, head, self.rev(f"refs/heads/{branch}"))
        return commit, commit

    def _stage_work(self, head: str | None) -> bool:
        """Stage what is left in the worktree but build artefacts; whether anything is staged.

        Artefacts (:mod:`tmops_core.artefacts`: byte code, tool caches, virtual environments,
        coverage data, egg-info, node_modules) are left out whether or not a .gitignore names
        them, tracked or not, and one the agent staged itself is unstaged (it stays on disk):
        this commit is tmops' own. What the agent committed itself is its own commit.
        """
        # Virtual environments are known by their pyvenv.cfg, wherever they are and whatever
        # their name: tracked, staged or untracked (not ignored: git add skips those anyway).
        markers = self.run(
            "ls-files", "-z", "--cached", "--others", "--exclude-standard",
            *(f"--exclude={pattern}" for pattern in exclude_patterns()),
            "--", f":(glob)**/{VENV_MARKER}",
        ).stdout  # fmt: skip
        venvs = venv_roots(markers.split("\0"))
        self.run("add", "--all", "--", ".", *exclude_pathspecs(venvs))
        staged = self.run("diff", "--cached", "--name-only", "--no-renames", "-z").stdout
        paths = [path for path in staged.split("\0") if path]
        if any(is_artefact(path, venvs) for path in paths):
            # staged by the agent itself: out of the index, left on disk
            if head is None:
                self.run("rm", "-r", "--cached", "--quiet", "--ignore-unmatch", "--",
                         *artefact_pathspecs(venvs))  # fmt: skip
            else:
                self.run("reset", "--quiet", "--", *artefact_pathspecs(venvs))
            paths = [path for path in paths if not is_artefact(path, venvs)]
        return bool(paths)

    # -- rollbacks ---------------------------------------------------------------------------

    def snapshot(self, message: str) -> str | None:
        """A commit of the worktree as it is (tracked and untracked files, no artefacts) on top
        of HEAD, made through a private index: neither the index nor any ref moves. HEAD
        itself when nothing is left uncommitted; ``None`` in a repository with no commit."""
        head = self.head()
        if head is None:
            return None
        fd, index = tempfile.mkstemp(prefix="tmops-index-", dir=self.git_dir())
        os.close(fd)
        try:
            private = Git(self.cwd, executable=self._git)
            private._env["GIT_INDEX_FILE"] = index
            private.run("read-tree", head)
            private._stage_work(head)
            tree = private.run("write-tree").stdout.strip()
        finally:
            os.unlink(index)
        if tree == self.run("rev-parse", f"{head}^{{tree}}").stdout.strip():
            return head
        identity: list[str] = []
        if self.run("config", "--get", "user.email", check=False).returncode != 0:
            identity = ["-c", "user.name=tmops", "-c", "user.email=tmops@localhost"]
        return self.run(*identity, "commit-tree", tree, "-p", head, "-m", message).stdout.strip()

    def changed_paths(self, old: str, new: str) -> list[str]:
        """The repository paths whose content differs between two commits."""
        output = self.run("diff", "--name-only", "--no-renames", "-z", old, new, "--").stdout
        return [path for path in output.split("\0") if path]

    def paths_in(self, commit: str, paths: Sequence[str]) -> set[str]:
        """Which of ``paths`` exist in ``commit``."""
        if not paths:
            return set()
        output = self.run(
            "--literal-pathspecs", "ls-tree", "-r", "-z", "--name-only", commit, "--", *paths
        ).stdout
        return {path for path in output.split("\0") if path}

    def reset_branch(self, branch: str, target: str, *, expected: str) -> None:
        """Move ``branch`` (checked out here) back to ``target`` and make the worktree match it:
        tracked files reset, untracked ones removed (artefacts, ignored files and ``.tmops``
        stay). A compare-and-swap against ``expected``: a branch moved meanwhile is refused.
        The caller has taken a :meth:`snapshot` first: nothing removed here is lost."""
        moved = self.run(
            "update-ref", "-m", f"tmops: rollback to {target}", f"refs/heads/{branch}", target,
            expected, check=False,
        )  # fmt: skip
        if moved.returncode != 0:
            raise BranchMoved(branch, expected, self.rev(f"refs/heads/{branch}"))
        self.run("reset", "--hard", "--quiet", target)
        untracked = self.run(
            "ls-files", "-z", "--others", "--exclude-standard",
            *(f"--exclude={pattern}" for pattern in exclude_patterns()), "--", ".",
            ":(exclude).tmops",
        ).stdout  # fmt: skip
        venvs = venv_roots(path for path in untracked.split("\0") if path.endswith(VENV_MARKER))
        doomed = [p for p in untracked.split("\0") if p and not is_artefact(p, venvs)]
        for start in range(0, len(doomed), 500):  # argv stays short
            self.run("--literal-pathspecs", "clean", "-f", "-q", "--", *doomed[start : start + 500])

    def restore_paths(self, source: str, paths: Sequence[str]) -> None:
        """Make ``paths`` in the worktree what they are in ``source`` (deleted where absent
        there), leaving the change uncommitted for the next phase to commit."""
        present = self.paths_in(source, paths)
        known = present | self.paths_in("HEAD", paths)
        wanted = [path for path in paths if path in known]
        for start in range(0, len(wanted), 500):
            self.run(
                "--literal-pathspecs", "restore", f"--source={source}", "--worktree", "--",
                *wanted[start : start + 500],
            )  # fmt: skip

    def delete_ref(self, ref: str) -> None:
        """Delete a ``refs/tmops/...`` marker (no error when it is already gone)."""
        self.run("update-ref", "-d", ref, check=False)

    def rev(self, ref: str) -> str | None:
        """The commit ``ref`` names, or ``None`` if it names none."""
        result = self.run(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False
        )
        return result.stdout.strip() if result.returncode == 0 else None

    def refs(self, prefix: str) -> dict[str, str]:
        """Every ref under ``prefix`` (a full ``refs/...`` name) with the commit it names."""
        output = self.run("for-each-ref", "--format=%(refname)%00%(objectname)", prefix).stdout
        return dict(line.split("\0", 1) for line in output.splitlines() if "\0" in line)

    # -- backups -----------------------------------------------------------------------------

    def version(self) -> str:
        """git's version, as ``git --version`` says it (``2.39.5``)."""
        return self.run("--version").stdout.strip().removeprefix("git version ")

    def create_bundle(self, path: Path, refs: Sequence[str]) -> None:
        """Write a bundle of ``refs`` (full names) and all their history to ``path``."""
        self.run("bundle", "create", str(path), *refs)

    def fetch_bundle(self, path: Path, refs: Sequence[str]) -> None:
        """Copy ``refs`` (full names) from the bundle at ``path`` to the same names here,
        forced: the caller has checked (and kept aside) what they replace."""
        for start in range(0, len(refs), 200):  # argv stays short
            self.run(
                "fetch", "--quiet", "--no-tags", "--", str(path),
                *(f"+{ref}:{ref}" for ref in refs[start : start + 200]),
            )  # fmt: skip

    def stale_worktrees(self) -> list[str]:
        """What ``git worktree prune`` would remove: git's lines, one per worktree it lost."""
        done = self.run("worktree", "prune", "--dry-run", "--verbose")
        lines = (done.stdout + done.stderr).splitlines()  # git says it on stderr
        return [line.strip() for line in lines if line.strip()]

    def log(
        self, since: str | None, *, until: str = "HEAD", limit: int = 50
    ) -> list[tuple[str, str]]:
        """``(sha, subject)`` of the commits after ``since`` up to ``until``, newest first."""
        span = [f"{since}..{until}"] if since else [until]
        output = self.run("log", f"--max-count={limit}", "--format=%H%x00%s", *span, "--").stdout
        entries = []
        for line in output.splitlines():
            sha, _, subject = line.partition("\0")
            entries.append((sha, subject))
        return entries
