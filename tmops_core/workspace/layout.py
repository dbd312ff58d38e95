"""The on-disk layout of tmops, compatible with the upstream TeamOps v6 workflow.

Owns names (feature and run), paths under ``.tmops/`` and their safety (resolved, inside the
project, never through a symlink), file modes (0700 directories, 0600 files), the TASK_SPEC.md
template, FEATURES.txt and lock files. It never calls git and never starts a process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs

from tmops_hookspecs import FeatureError, WorkspaceError

__all__ = [
    "FEATURE_NAME",
    "PREFLIGHT_MARKERS",
    "RUN_NAME",
    "FeatureLine",
    "Layout",
    "atomic_write",
    "ensure_private_dir",
    "make_private",
    "read_features",
    "task_spec_template",
    "validate_feature_name",
    "validate_run_name",
    "write_feature_line",
]

FEATURE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,18}[a-z0-9]")
RUN_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
PREFLIGHT_MARKERS = ("Created by preflight workflow", "Refined by preflight")
RUN_SUBDIRS = ("checkpoints", "logs")
DOC_SUBDIRS = ("internal", "external", "archive", "images")
DIR_MODE = 0o700
FILE_MODE = 0o600


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_feature_name(name: object) -> str:
    """Return ``name`` if it is a valid feature name, else raise a :class:`FeatureError`."""
    if not isinstance(name, str) or not FEATURE_NAME.fullmatch(name):
        raise FeatureError(
            f"invalid feature name {_shown(name)}: a feature name is 3 to 20 characters of "
            "lowercase letters a-z, digits 0-9 and '-', starting and ending with a letter or "
            "digit (for example 'auth-api')"
        )
    return name


def validate_run_name(name: object) -> str:
    """Return ``name`` if it is a valid run name (``initial``, ``retry-2``...), else raise."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise FeatureError(
            f"invalid run name {_shown(name)}: a run name is 1 to 63 characters of lowercase "
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
    """Where everything of a project lives; ``project_root`` is absolute and resolved."""

    project_root: Path

    @property
    def tmops_dir(self) -> Path:
        return self.project_root / ".tmops"

    @property
    def features_file(self) -> Path:
        return self.tmops_dir / "FEATURES.txt"

    @property
    def backups_dir(self) -> Path:
        return self.tmops_dir / ".backups"

    def feature_dir(self, feature: str) -> Path:
        return self.tmops_dir / validate_feature_name(feature)

    def runs_dir(self, feature: str) -> Path:
        return self.feature_dir(feature) / "runs"

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
        runs_dir = self.runs_dir(feature)
        if not _is_real_dir(runs_dir):
            return []
        return sorted(
            entry.name
            for entry in os.scandir(runs_dir)
            if RUN_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        )

    def inside(self, path: Path) -> Path:
        """``path`` resolved, refused unless it stays inside the project root."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.project_root):
            raise WorkspaceError(f"{path} resolves to {resolved}, outside {self.project_root}")
        return resolved


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def ensure_private_dir(path: Path) -> bool:
    """Create ``path`` with mode 0700 unless it exists; refuse a symlink or a non-directory.

    :return: whether the directory was created.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        try:
            os.mkdir(path, DIR_MODE)
        except PermissionError as exc:
            raise _not_writable(path.parent) from exc
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
        return True
    if stat.S_ISLNK(info.st_mode):
        raise WorkspaceError(
            f"{path} is a symlink; tmops does not follow links inside .tmops",
            hint=f"remove the link (`rm {path}`) and run the command again",
        )
    if not stat.S_ISDIR(info.st_mode):
        raise WorkspaceError(f"{path} exists and is not a directory", hint=f"move {path} away")
    return False


def _not_writable(path: Path) -> WorkspaceError:
    return WorkspaceError(
        f"cannot write in {path}: permission denied",
        hint=f"make it writable for your user, e.g. `chmod u+w {path}` or "
        f"`sudo chown -R $(id -un) {path}`",
    )


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) through a temporary file and a rename."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except PermissionError as exc:
        raise _not_writable(path.parent) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


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
    if os.path.lexists(link) and not os.path.islink(link):
        raise WorkspaceError(
            f"{link} exists and is not a symlink", hint=f"move {link} away and run init again"
        )
    temp = link.with_name(f".current.{secrets.token_hex(6)}")
    os.symlink(f"runs/{run}", temp)
    os.replace(temp, link)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created 0600) for the duration of the block."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except PermissionError as exc:
        raise _not_writable(path.parent) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def backup(layout: Layout, feature: str, source: Path) -> Path:
    """Copy ``source`` into ``.tmops/.backups/<YYYYmmdd-HHMMSS>-<feature>/`` before it changes."""
    ensure_private_dir(layout.backups_dir)
    folder = layout.backups_dir / f"{utc_now():%Y%m%d-%H%M%S}-{feature}"
    ensure_private_dir(folder)
    target = folder / source.name
    shutil.copy2(source, target, follow_symlinks=False)
    os.chmod(target, FILE_MODE)
    return target


# --------------------------------------------------------------------------------------------
# TASK_SPEC.md
# --------------------------------------------------------------------------------------------


def task_spec_template(feature: str, run: str, moment: datetime) -> str:
    return f"""# Task Specification: {feature}

<!-- Created by tmops init on {iso(moment)} for run {run}. Edit this file, then start. -->

## User Story
As a <role>, I want <capability>, so that <benefit>.

## Acceptance Criteria
- [ ] Given <context>, when <action>, then <outcome>.
- [ ] ...

## Technical Constraints
- Language, frameworks and versions:
- Where the code and the tests live:
- The command that runs the tests:

## Definition of Done
- [ ] Every acceptance criterion has a test that failed before the code was written.
- [ ] All tests pass on branch feature/{feature}.
- [ ] The verifier's review is recorded in 007-verify-complete.md.
"""


def is_preflight_spec(path: Path) -> bool:
    """Whether an existing TASK_SPEC.md says the preflight workflow created or refined it."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(64 * 1024)
    except OSError:
        return False
    return any(marker in head for marker in PREFLIGHT_MARKERS)


# --------------------------------------------------------------------------------------------
# FEATURES.txt: <feature>:<status>:<ISO-8601 time>:<branch>
# --------------------------------------------------------------------------------------------


@attrs.frozen
class FeatureLine:
    feature: str
    status: str
    updated: str
    branch: str

    def render(self) -> str:
        return f"{self.feature}:{self.status}:{self.updated}:{self.branch}"


def read_features(layout: Layout) -> dict[str, FeatureLine]:
    """The lines of FEATURES.txt by feature; lines that do not parse are skipped."""
    try:
        text = layout.features_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    found: dict[str, FeatureLine] = {}
    for line in text.splitlines():
        parts = line.strip().split(":")
        # The time holds colons itself; the feature and status come first, the branch last.
        if len(parts) < 4 or not FEATURE_NAME.fullmatch(parts[0]):
            continue
        found[parts[0]] = FeatureLine(parts[0], parts[1], ":".join(parts[2:-1]), parts[-1])
    return found


def write_feature_line(layout: Layout, line: FeatureLine, *, replace: bool) -> bool:
    """Add (or with ``replace``, update) the line of one feature; return whether it changed."""
    with locked(layout.tmops_dir / ".features.lock"):
        try:
            lines = layout.features_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        prefix = f"{line.feature}:"
        index = next((i for i, text in enumerate(lines) if text.startswith(prefix)), None)
        if index is not None and (not replace or lines[index] == line.render()):
            return False
        if index is None:
            lines.append(line.render())
        else:
            lines[index] = line.render()
        atomic_write(layout.features_file, "\n".join(lines) + "\n")
        return True
