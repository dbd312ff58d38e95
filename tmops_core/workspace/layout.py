"""The on-disk layout of tmops, compatible with the upstream TeamOps v6 workflow.

Owns names (feature and run), paths under ``.tmops/`` and their safety, file modes (0700
directories, 0600 files), the TASK_SPEC.md template, FEATURES.txt and lock files. It never calls
git and never starts a process.

Safety: every file or folder tmops opens or creates under ``.tmops/`` (and under a worktrees
folder inside the project) is reached from the project root one component at a time, each
opened relative to its parent's descriptor with ``O_NOFOLLOW`` (:func:`open_dir`,
:func:`open_file`). A symlink anywhere on the way, or a file where a folder belongs, is refused
with a :class:`~tmops_hookspecs.WorkspaceError` naming it and saying to remove it; nothing is
ever read or written through a link. The project root itself (resolved when the
:class:`Layout` is made) is trusted. The only link tmops makes is ``<feature>/current``, and it
reads that one without following it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import stat
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs

from tmops_hookspecs import FeatureError, WorkspaceError

__all__ = [
    "FEATURE_NAME",
    "RUN_NAME",
    "TMOPS_DIR",
    "Layout",
    "atomic_write",
    "check_run_paths",
    "check_worktree",
    "ensure_private_dir",
    "lstat_checked",
    "make_private",
    "open_dir",
    "open_file",
    "read_checked",
    "read_text_checked",
    "rename_checked",
    "shown",
    "validate_feature_name",
    "validate_run_name",
]

FEATURE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,18}[a-z0-9]")
RUN_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
RUN_SUBDIRS = ("checkpoints", "logs")
DOC_SUBDIRS = ("internal", "external", "archive", "images")
DIR_MODE = 0o700
FILE_MODE = 0o600
#: The folder of a project that holds everything tmops keeps.
TMOPS_DIR = ".tmops"


#: The most characters of a bad value an error quotes: a 1 MB argument must not come back whole.
SHOWN_CHARS = 64


def shown(value: object) -> str:
    """``value`` as an error quotes it: its repr, at most :data:`SHOWN_CHARS` characters of it,
    and its length when it was cut."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 3]}..."


def validate_feature_name(name: object) -> str:
    """Return ``name`` if it is a valid feature name, else raise a :class:`FeatureError`."""
    if not isinstance(name, str) or not FEATURE_NAME.fullmatch(name):
        raise FeatureError(
            f"invalid feature name {shown(name)}: a feature name is 3 to 20 characters of "
            "lowercase letters a-z, digits 0-9 and '-', starting and ending with a letter or "
            "digit (e.g. 'auth-api')"
        )
    return name


def validate_run_name(name: object) -> str:
    """Return ``name`` if it is a valid run name (``initial``, ``retry-2``...), else raise."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise FeatureError(
            f"invalid run name {shown(name)}: a run name is 1 to 63 characters of lowercase "
            "letters a-z, digits 0-9 and '-', starting with a letter or digit (e.g. 'initial')"
        )
    return name


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Layout:
    """Where everything of a project lives; ``project_root`` is absolute and resolved.

    The paths are computed once per layout (status builds them on every poll)."""

    project_root: Path

    @property
    @functools.lru_cache(maxsize=64)  # noqa: B019 - layouts are few, frozen and long-lived
    def tmops_dir(self) -> Path:
        return self.project_root / TMOPS_DIR

    @property
    def features_file(self) -> Path:
        return self.tmops_dir / "FEATURES.txt"

    @property
    def backups_dir(self) -> Path:
        return self.tmops_dir / ".backups"

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - see tmops_dir
    def feature_dir(self, feature: str) -> Path:
        return self.tmops_dir / validate_feature_name(feature)

    def runs_dir(self, feature: str) -> Path:
        return self.feature_dir(feature) / "runs"

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - see tmops_dir
    def run_dir(self, feature: str, run: str) -> Path:
        return self.runs_dir(feature) / validate_run_name(run)

    def checkpoint_dir(self, feature: str, run: str) -> Path:
        return self.run_dir(feature, run) / "checkpoints"

    def logs_dir(self, feature: str, run: str) -> Path:
        return self.run_dir(feature, run) / "logs"

    def task_spec(self, feature: str, run: str) -> Path:
        return self.run_dir(feature, run) / "TASK_SPEC.md"

    def docs_dir(self, feature: str) -> Path:
        return self.feature_dir(feature) / "docs"

    def current_link(self, feature: str) -> Path:
        return self.feature_dir(feature) / "current"

    def lock_path(self, feature: str, kind: str) -> Path:
        return self.tmops_dir / f"{validate_feature_name(feature)}.{kind}.lock"

    def current_run(self, feature: str) -> str | None:
        """The run ``current`` points at, read without following the link."""
        link = self.current_link(feature)
        try:
            target = os.readlink(link)
        except OSError:
            return None
        parts = Path(target).parts
        if len(parts) == 2 and parts[0] == "runs" and RUN_NAME.fullmatch(parts[1]):
            return parts[1]
        return None

    def runs(self, feature: str) -> list[str]:
        """The runs of a feature (its ``runs/`` entries that are real folders)."""
        try:
            fd = open_dir(self.runs_dir(feature))
        except (FileNotFoundError, NotADirectoryError):
            return []
        try:
            with os.scandir(fd) as entries:
                return sorted(
                    entry.name
                    for entry in entries
                    if RUN_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
                )
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# Opening without following links
# --------------------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _trusted_root(path: Path) -> Path:
    """Where the walk to ``path`` starts: the folder holding its last ``.tmops`` (the project
    root); outside any ``.tmops`` (a log kept elsewhere), the deepest folder that exists."""
    parts = path.parts
    if TMOPS_DIR in parts:
        index = len(parts) - 1 - parts[::-1].index(TMOPS_DIR)
        return Path(*parts[:index])
    folder = path.parent
    while not os.path.isdir(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _link_error(path: Path) -> WorkspaceError:
    return WorkspaceError(
        f"{path} is a symlink; tmops never follows links under .tmops or the worktrees folder",
        hint=f"remove the link (`rm {path}`) and run the command again",
    )


def _not_writable(path: Path) -> WorkspaceError:
    return WorkspaceError(
        f"cannot write in {path}: permission denied",
        hint=f"make it writable for your user, e.g. `chmod u+w {path}` or "
        f"`sudo chown -R $(id -un) {path}`",
    )


def _refusal(parent: int, path: Path, exc: OSError, *, want_dir: bool) -> WorkspaceError:
    """Why ``path`` (a name in the folder ``parent``) could not be opened as it should."""
    try:
        mode = os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return _link_error(path)
    if want_dir and mode and not stat.S_ISDIR(mode):
        return WorkspaceError(
            f"{path} exists and is not a directory", hint=f"move {path} away and try again"
        )
    if not want_dir and stat.S_ISDIR(mode):
        return WorkspaceError(f"{path} is a directory", hint=f"move {path} away and try again")
    return WorkspaceError(f"cannot open {path}: {exc.strerror}")


def _child_dir(parent: int, path: Path, *, create: bool) -> tuple[int, bool]:
    """Open (creating it 0700 if asked and missing) the folder ``path.name`` in ``parent``."""
    try:
        return os.open(path.name, _DIR_FLAGS, dir_fd=parent), False
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        raise _refusal(parent, path, exc, want_dir=True) from exc
    try:
        os.mkdir(path.name, DIR_MODE, dir_fd=parent)
        made = True
    except FileExistsError:
        made = False  # made meanwhile by another process: opened (and checked) below
    except PermissionError as exc:
        raise _not_writable(path.parent) from exc
    try:
        fd = os.open(path.name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _refusal(parent, path, exc, want_dir=True) from exc
    if made:
        os.fchmod(fd, DIR_MODE)  # mkdir's mode is filtered by the umask
    return fd, made


def _walk(path: Path, root: Path | None, *, create: bool) -> tuple[int, bool]:
    """A descriptor of the folder ``path`` reached from ``root`` without following a link, and
    whether its last component was created. ``FileNotFoundError`` if missing and not created."""
    path = _absolute(path)
    root = _trusted_root(path) if root is None else _absolute(root)
    # Names as strings, Paths only for an error: status walks here on every poll.
    names = path.relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    made = False
    try:
        for index, name in enumerate(names):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                made = False
            except OSError:
                child, made = _child_dir(fd, root.joinpath(*names[: index + 1]), create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, made


def open_dir(path: Path, *, create: bool = False, root: Path | None = None) -> int:
    """A descriptor (the caller closes it) of the folder ``path``, every component from the
    project root (or ``root``) down opened without following a link; with ``create``, missing
    folders are made 0700.

    :raises WorkspaceError: a component is a symlink or not a folder, or cannot be opened.
    :raises FileNotFoundError: a component is missing (and ``create`` is false).
    """
    return _walk(path, root, create=create)[0]


def ensure_private_dir(path: Path, *, root: Path | None = None) -> bool:
    """Create the folder ``path`` (0700) unless it exists; its parent must exist.

    :return: whether it was created.
    :raises WorkspaceError: a link or a non-folder on the way, or the parent is not writable.
    """
    path = _absolute(path)
    parent = open_dir(path.parent, root=root)
    try:
        fd, made = _child_dir(parent, path, create=True)
    finally:
        os.close(parent)
    os.close(fd)
    return made


def open_file(
    path: Path,
    flags: int,
    *,
    mode: int = FILE_MODE,
    create_dirs: bool = False,
    root: Path | None = None,
) -> int:
    """A descriptor of the regular file ``path`` opened with ``flags`` (``O_CREAT`` makes it
    ``mode``), its folder reached as :func:`open_dir` does and the file itself opened with
    ``O_NOFOLLOW``; a FIFO or a device is refused without blocking on it.

    :raises WorkspaceError: a link or a non-regular file on the way, or permission denied.
    :raises FileNotFoundError: it (or a folder on the way) is missing and not to be created.
    """
    path = _absolute(path)
    parent = open_dir(path.parent, create=create_dirs, root=root)
    try:
        open_flags = flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(path.name, open_flags, mode, dir_fd=parent)
    except FileNotFoundError:
        raise
    except PermissionError as exc:
        if flags & os.O_CREAT:
            raise _not_writable(path.parent) from exc
        raise WorkspaceError(f"cannot open {path}: permission denied") from exc
    except OSError as exc:
        raise _refusal(parent, path, exc, want_dir=False) from exc
    finally:
        os.close(parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WorkspaceError(f"{path} is not a regular file", hint=f"move {path} away")
    os.set_blocking(fd, True)
    return fd


def lstat_checked(path: Path, *, root: Path | None = None) -> os.stat_result | None:
    """``lstat`` of ``path`` reached without a link (else :class:`WorkspaceError`); ``None`` if
    it is missing. A link at ``path`` itself is refused too."""
    path = _absolute(path)
    try:
        parent = open_dir(path.parent, root=root)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        info = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(parent)
    if stat.S_ISLNK(info.st_mode):
        raise _link_error(path)
    return info


def read_checked(path: Path, *, limit: int | None = None, root: Path | None = None) -> bytes | None:
    """The bytes of the regular file ``path`` (at most ``limit``), read without following a
    link; ``None`` if it is missing."""
    try:
        fd = open_file(path, os.O_RDONLY, root=root)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read() if limit is None else handle.read(limit)


def read_text_checked(path: Path, *, root: Path | None = None) -> str | None:
    """:func:`read_checked` decoded as UTF-8 (undecodable bytes replaced)."""
    data = read_checked(path, root=root)
    return None if data is None else data.decode("utf-8", errors="replace")


def atomic_write(path: Path, data: str | bytes, *, root: Path | None = None) -> None:
    """Write ``data`` to ``path`` (mode 0600) through a temporary file and a rename, in a folder
    reached without following a link; a link at ``path`` itself is refused, not replaced."""
    path = _absolute(path)
    parent = open_dir(path.parent, root=root)
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise _link_error(path)
        temp = f".{path.name}.{os.urandom(6).hex()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, FILE_MODE, dir_fd=parent)
        except PermissionError as exc:
            raise _not_writable(path.parent) from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path.name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=parent)
            raise
    finally:
        os.close(parent)


def rename_checked(source: Path, target: Path, *, root: Path | None = None) -> None:
    """Rename ``source`` to ``target`` (a missing name), both folders reached without links."""
    source, target = _absolute(source), _absolute(target)
    source_dir = open_dir(source.parent, root=root)
    try:
        target_dir = open_dir(target.parent, root=root)
        try:
            if lstat_checked(target, root=root) is not None:
                raise WorkspaceError(f"{target} exists already", hint=f"move {target} away")
            os.rename(source.name, target.name, src_dir_fd=source_dir, dst_dir_fd=target_dir)
        finally:
            os.close(target_dir)
    finally:
        os.close(source_dir)


def make_private(path: Path) -> bool:
    """Make the regular file ``path`` mode 0600, through its own descriptor.

    The file is opened without following a link (``O_NOFOLLOW``) or blocking on a FIFO
    (``O_NONBLOCK``) and changed with ``fchmod`` only once ``fstat`` shows a regular file, so a
    name swapped for a link between a check and the chmod can never redirect it.

    :return: whether the file is now 0600; False for a link, a FIFO, anything but a regular
        file, or a file that cannot be opened or changed (validators report those).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        if stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def point_current(layout: Layout, feature: str, run: str) -> None:
    """Point ``<feature>/current`` at ``runs/<run>``, atomically."""
    link = layout.current_link(feature)
    folder = open_dir(link.parent)
    try:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISLNK(os.stat(link.name, dir_fd=folder, follow_symlinks=False).st_mode):
                raise WorkspaceError(
                    f"{link} exists and is not a symlink",
                    hint=f"move {link} away and run init again",
                )
        temp = f".current.{os.urandom(6).hex()}"
        os.symlink(f"runs/{run}", temp, dir_fd=folder)
        os.replace(temp, link.name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created 0600) for the duration of the block."""
    fd = open_file(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def backup(layout: Layout, feature: str, source: Path) -> Path:
    """Copy ``source`` into ``.tmops/.backups/<YYYYmmdd-HHMMSS>-<feature>/`` before it changes."""
    data = read_checked(source) or b""
    ensure_private_dir(layout.backups_dir)
    folder = layout.backups_dir / f"{utc_now():%Y%m%d-%H%M%S}-{feature}"
    ensure_private_dir(folder)
    target = folder / source.name
    atomic_write(target, data)
    return target


def check_worktree(layout: Layout, worktree: Path) -> None:
    """Refuse a worktree reached through a link: inside the project every component from the
    project root down, elsewhere (an absolute ``features.worktree_root``) the feature's folder.

    :raises WorkspaceError: a link or a non-folder, or the worktree is missing.
    """
    worktree = _absolute(worktree)
    if worktree == layout.project_root:
        return
    try:
        if worktree.is_relative_to(layout.project_root):
            os.close(open_dir(worktree, root=layout.project_root))
        else:
            os.close(open_dir(worktree, root=worktree.parent))
    except FileNotFoundError as exc:
        raise WorkspaceError(
            f"the worktree {worktree} is missing",
            hint="run `tmops init <feature>` again to restore it",
        ) from exc


def check_run_paths(
    layout: Layout,
    feature: str,
    run: str,
    worktree: Path,
    *,
    logs: Iterable[str] = (),
    checkpoints: Iterable[str] = (),
) -> None:
    """Before a run hands its paths to an agent: the run's folders, TASK_SPEC.md (a regular
    file), the files named in ``logs`` and ``checkpoints`` (if there) and the worktree, all
    reached without a link (the checkpoint and log folders are created if missing).

    :raises WorkspaceError: naming the link (or the missing spec) and what to do.
    """
    for folder in (layout.checkpoint_dir(feature, run), layout.logs_dir(feature, run)):
        os.close(open_dir(folder, create=True))
    spec = layout.task_spec(feature, run)
    try:
        os.close(open_file(spec, os.O_RDONLY))
    except FileNotFoundError as exc:
        raise WorkspaceError(
            f"{spec} is missing, so there is no task for the agents",
            hint=f"write the spec there (`tmops init {feature} --run {run}` makes a template)",
        ) from exc
    for name in logs:
        lstat_checked(layout.logs_dir(feature, run) / name)
    for name in checkpoints:
        lstat_checked(layout.checkpoint_dir(feature, run) / name)
    check_worktree(layout, worktree)
