"""What must hold after a run whose engine was killed and restarted, and what was found.

The invariants of the kill harness (``test_kill_harness.py``) and of the soak
(``benchmarks/soak.py``), for runs of the demo task played by the scripted agent with its
journal on (``TMOPS_SCRIPTED_JOURNAL``). Each broken invariant is a finding in one category:

- ``stuck``: the run is still queued or running (the caller waited long enough for it to end);
- ``failed``: the run ended, but not completed;
- ``lost``: work missing or uncommitted: a dirty worktree, a phase's commit or a checkpoint
  missing, a final file that is not what its phase wrote;
- ``miscredited``: work committed under another phase's name (a commit touching a file no phase
  of its name writes), a commit named for no phase, the tests committed after the code;
- ``duplicates``: two agents of one feature alive at once (overlapping attempts in the store, or
  an agent whose journal ``start`` line names another live one), or a phase's agent started
  again after the phase was accepted;
- ``orphans``: a process still carrying the mark of one of the run's agents, or an engine of the
  project still running;
- ``store``: ``PRAGMA integrity_check`` not ``ok``, an attempt never closed, FEATURES.txt not
  saying the run's end.

"Named for its phase": tmops titles its own commits ``tmops(<feature>): <phase> ...``; the
scripted tester commits ``tests/test_slug.py`` as ``test(slug): ...`` and the implementer
``slug.py`` as ``feat(slug): ...`` (the orchestrator and the verifier leave no files). So every
commit must be named for a phase, and each file it touches must be one that phase writes.

This module only reads (the store through a read-only connection and :class:`Store` queries,
git, files, the journal, ``/proc``); it never changes anything and never signals a process.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.engine_support import COMPLETIONS, TRIGGERS, git
from tmops_core.lifecycle import LIVE_ATTEMPT_STATES, RunState
from tmops_core.store import STORE_NAME, AttemptRecord, SQLiteStore, Store
from tmops_plugins.scripted_journal import MARK_ENV, read_journal
from tmops_plugins.scripted_roles import CODE_FILE, CODE_SOURCE, TEST_FILE, TEST_SOURCE

__all__ = [
    "CATEGORIES",
    "Findings",
    "Subject",
    "check_duplicates",
    "check_project",
    "engine_processes",
    "marked_processes",
    "process_state",
]

CATEGORIES = ("stuck", "failed", "lost", "miscredited", "duplicates", "orphans", "store")
#: The files each phase's work consists of (the others write only checkpoints).
PHASE_FILES: Mapping[str, str] = {TEST_FILE: "tester", CODE_FILE: "implementer"}
FINAL_TEXT: Mapping[str, str] = {TEST_FILE: TEST_SOURCE, CODE_FILE: CODE_SOURCE}
#: The subject prefixes of the scripted agent's own commits.
AGENT_SUBJECTS: Mapping[str, str] = {"test(": "tester", "feat(": "implementer"}
#: The store keeps times to the second: an agent counts as started after an acceptance only
#: when it started at least this long after the acceptance's recorded second.
_CLOCK_SLACK_S = 1.0


@dataclass
class Findings:
    """Broken invariants by category, each a sentence naming the run and what was seen."""

    by_category: dict[str, list[str]] = field(
        default_factory=lambda: {name: [] for name in CATEGORIES}
    )

    def add(self, category: str, message: str) -> None:
        self.by_category[category].append(message)

    def merge(self, other: Findings) -> None:
        for name, messages in other.by_category.items():
            self.by_category[name].extend(messages)

    def counts(self) -> dict[str, int]:
        return {name: len(messages) for name, messages in self.by_category.items()}

    def all(self) -> list[str]:
        return [f"{name}: {m}" for name, messages in self.by_category.items() for m in messages]

    def __bool__(self) -> bool:
        return any(self.by_category.values())


@dataclass(frozen=True)
class Subject:
    """One run to check, with where its files are."""

    feature: str
    run: str
    branch: str
    worktree: Path
    checkpoint_dir: Path
    run_dir: Path


# -- /proc --------------------------------------------------------------------------------------


def _proc_read(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as file:
            return file.read()
    except OSError:
        return b""


def _live_pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        stat = _proc_read(int(name), "stat")
        state = stat[stat.rfind(b")") + 2 :][:1]
        if stat and state not in (b"Z", b"X"):
            yield int(name)


def process_state(pid: int) -> str:
    """How ``pid`` is now, for a message: gone, a zombie, or what it runs."""
    stat = _proc_read(pid, "stat")
    if not stat:
        return "gone"
    if stat[stat.rfind(b")") + 2 :][:1] == b"Z":
        return "a zombie"
    argv = _proc_read(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
    return f"alive: {argv[:120]}"


def engine_processes(root: Path) -> list[int]:
    """The live ``tmops engine`` processes serving the project at ``root``."""
    wanted = str(root.resolve())
    found = []
    for pid in _live_pids():
        argv = _proc_read(pid, "cmdline").decode(errors="replace").split("\0")
        if "engine" in argv and "--workspace" in argv:
            workspace = argv[argv.index("--workspace") + 1 : argv.index("--workspace") + 2]
            if workspace and str(Path(workspace[0]).resolve()) == wanted:
                found.append(pid)
    return found


def marked_processes(marks: Iterable[str], *, under: Path | None = None) -> dict[int, str]:
    """Live processes whose environment carries one of the agent ``marks``, or any agent mark
    at all when they run in a folder ``under`` the given one: pid -> mark. (The folder finds an
    agent whose mark never reached the store or the journal.)"""
    needles = {f"{MARK_ENV}={mark}".encode(): mark for mark in marks if mark}
    prefix = f"{MARK_ENV}=".encode()
    inside = str(under.resolve()) if under is not None else None
    found: dict[int, str] = {}
    for pid in _live_pids():
        for entry in _proc_read(pid, "environ").split(b"\0"):
            if entry in needles:
                found[pid] = needles[entry]
            elif inside is not None and entry.startswith(prefix) and _cwd_under(pid, inside):
                found[pid] = entry[len(prefix) :].decode(errors="replace")
    return found


def _cwd_under(pid: int, folder: str) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd == folder or cwd.startswith(folder + os.sep)


# -- the checks ----------------------------------------------------------------------------------


def _when(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def _check_store(store: Store, subject: Subject, findings: Findings) -> list[AttemptRecord]:
    name = f"{subject.feature}/{subject.run}"
    run = store.run(subject.feature, subject.run)
    if run is None:
        findings.add("store", f"{name}: not in the store")
        return []
    if run.status in {RunState.QUEUED, RunState.RUNNING}:
        owner = ""
        if run.engine_pid:
            owner = f", engine {run.engine_pid} {process_state(run.engine_pid)}"
        findings.add("stuck", f"{name}: still {run.status} (phase {run.current_phase}{owner})")
    elif run.status != RunState.COMPLETED:
        findings.add("failed", f"{name}: ended {run.status}: {run.last_error}")
    attempts = store.attempts(subject.feature, subject.run)
    for attempt in attempts:
        if attempt.state in LIVE_ATTEMPT_STATES:
            findings.add(
                "store", f"{name}: attempt {attempt.id} ({attempt.phase}) is still {attempt.state}"
            )
    return attempts


def _check_overlaps(name: str, attempts: list[AttemptRecord], findings: Findings) -> None:
    """No two agent attempts of one run overlap, and none starts after its phase's acceptance."""
    agents = [a for a in attempts if a.pid is not None]
    for i, earlier in enumerate(agents):
        end = _when(earlier.finished_at)
        for later in agents[i + 1 :]:
            start = _when(later.started_at)
            if end is not None and start is not None and start < end:
                findings.add(
                    "duplicates",
                    f"{name}: attempt {later.id} ({later.phase}) started while attempt "
                    f"{earlier.id} ({earlier.phase}) still ran",
                )
    for accepted in (a for a in attempts if a.state == "completed"):
        again = [a for a in agents if a.phase == accepted.phase and a.id > accepted.id]
        for attempt in again:
            findings.add(
                "duplicates",
                f"{name}: {accepted.phase} ran again (attempt {attempt.id}) after attempt "
                f"{accepted.id} was accepted",
            )


def _accepted_at(attempts: list[AttemptRecord]) -> dict[str, float]:
    accepted: dict[str, float] = {}
    for attempt in attempts:
        when = _when(attempt.finished_at)
        if attempt.state == "completed" and when is not None:
            accepted.setdefault(attempt.phase, when)
    return accepted


def _check_journal(
    journal: list[dict[str, Any]],
    feature: str,
    run: str,
    attempts: list[AttemptRecord],
    findings: Findings,
) -> list[str]:
    """Agents alive alongside others, agents of an accepted phase; returns the agents' marks."""
    name = f"{feature}/{run}"
    accepted = _accepted_at(attempts)
    marks = []
    for line in journal:
        if line.get("event") != "start" or line.get("feature") != feature:
            continue
        if line.get("run") != run:
            continue
        role, pid = str(line.get("role")), line.get("pid")
        if line.get("mark"):
            marks.append(str(line["mark"]))
        for other in line.get("alongside") or []:
            findings.add(
                "duplicates",
                f"{name}: agent {pid} ({role}) started while agent {other['pid']} "
                f"({other['role']}) was alive",
            )
        started = float(str(line.get("time")))
        if role in accepted and started >= accepted[role] + _CLOCK_SLACK_S:
            findings.add(
                "duplicates", f"{name}: a {role} agent ({pid}) started after {role} was accepted"
            )
    return marks


def _commit_phase(subject: str, feature: str) -> str | None:
    own = re.match(rf"tmops\({re.escape(feature)}\): ([a-z0-9_-]+) ", subject)
    if own:
        return own.group(1)
    return next((phase for prefix, phase in AGENT_SUBJECTS.items() if subject.startswith(prefix)),
                None)  # fmt: skip


def _commits(subject: Subject, base: str) -> list[tuple[str, str, list[str]]]:
    """(sha, subject, files) of the branch's own commits, oldest first."""
    out = git(subject.worktree, "log", "--reverse", "--format=%x01%H%x00%s", "--name-only",
              f"{base}..{subject.branch}", "--")  # fmt: skip
    commits = []
    for block in out.split("\x01")[1:]:
        head, _, rest = block.partition("\n")
        sha, _, title = head.partition("\0")
        commits.append((sha, title, [line for line in rest.splitlines() if line.strip()]))
    return commits


def _status(store: Store, subject: Subject) -> str | None:
    run = store.run(subject.feature, subject.run)
    return run.status if run else None


def _check_git(subject: Subject, base: str, findings: Findings, *, completed: bool) -> None:
    """Commits named for their phases, in order; for a completed run, nothing missing."""
    name = f"{subject.feature}/{subject.run}"
    dirty = git(subject.worktree, "status", "--porcelain").strip()
    if dirty and completed:
        findings.add("lost", f"{name}: the worktree is not clean: {dirty.splitlines()}")
    first_commit: dict[str, int] = {}
    commits = _commits(subject, base)
    for index, (sha, title, files) in enumerate(commits):
        phase = _commit_phase(title, subject.feature)
        if phase is None:
            findings.add("miscredited", f"{name}: commit {sha[:10]} {title!r} names no phase")
        for path in files:
            owner = PHASE_FILES.get(path)
            if owner is None or owner != phase:
                findings.add(
                    "miscredited",
                    f"{name}: {path} committed in {sha[:10]} {title!r}, not a commit of "
                    f"{owner or 'any phase'}",
                )
            elif path not in first_commit:
                first_commit[path] = index
    for path, owner in PHASE_FILES.items():
        if not completed:
            break
        if path not in first_commit:
            findings.add("lost", f"{name}: no {owner} commit holds {path}")
            continue
        shown = git(subject.worktree, "show", f"{subject.branch}:{path}")
        if shown != FINAL_TEXT[path]:
            findings.add("lost", f"{name}: {path} on {subject.branch} is not what {owner} wrote")
    if (
        TEST_FILE in first_commit
        and CODE_FILE in first_commit
        and first_commit[TEST_FILE] > first_commit[CODE_FILE]
    ):
        findings.add("miscredited", f"{name}: the tests were committed after the code")


def _check_files(subject: Subject, root: Path, findings: Findings) -> None:
    name = f"{subject.feature}/{subject.run}"
    for checkpoint in (*COMPLETIONS.values(), *TRIGGERS, "SUMMARY.md"):
        if not (subject.checkpoint_dir / checkpoint).is_file():
            findings.add("lost", f"{name}: checkpoint {checkpoint} is missing")
    try:
        metrics = json.loads((subject.run_dir / "metrics.json").read_text())
        phases = [p["phase"] for p in metrics["phases"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        findings.add("lost", f"{name}: metrics.json is missing or unreadable: {exc!r}")
    else:
        if phases != list(COMPLETIONS):
            findings.add("lost", f"{name}: metrics.json lists the phases {phases}")
    try:
        lines = (root / ".tmops" / "FEATURES.txt").read_text().splitlines()
    except OSError:
        lines = []
    if not any(line.startswith(f"{subject.feature}:completed:") for line in lines):
        findings.add("store", f"{name}: FEATURES.txt does not say completed: {lines}")


def _integrity(root: Path) -> str:
    uri = f"{(root / '.tmops' / STORE_NAME).as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    try:
        return ", ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


def check_project(root: Path, journal_dir: Path, subjects: Iterable[Subject], *,
                  base: str = "main") -> Findings:  # fmt: skip
    """Every invariant of every run in ``subjects`` of the project at ``root``."""
    findings = Findings()
    integrity = _integrity(root)
    if integrity != "ok":
        findings.add("store", f"PRAGMA integrity_check: {integrity}")
    journal = read_journal(journal_dir)
    store = SQLiteStore.open_existing(root / ".tmops" / STORE_NAME)
    assert store is not None, f"no store in {root}"
    marks: list[str] = []
    try:
        for subject in subjects:
            attempts = _check_store(store, subject, findings)
            _check_overlaps(f"{subject.feature}/{subject.run}", attempts, findings)
            marks += [a.mark for a in attempts if a.mark]
            marks += _check_journal(journal, subject.feature, subject.run, attempts, findings)
            # What a run has not done yet is not lost: a stuck or failed run is found as such.
            completed = _status(store, subject) == RunState.COMPLETED
            _check_git(subject, base, findings, completed=completed)
            if completed:
                _check_files(subject, root, findings)
    finally:
        store.close()
    for pid, mark in sorted(marked_processes(marks, under=root).items()):
        findings.add("orphans", f"process {pid} still carries the agent mark {mark}")
    for pid in engine_processes(root):
        findings.add("orphans", f"engine {pid} of {root} still runs")
    return findings


def check_duplicates(store: Store, journal_dir: Path, runs: Iterable[tuple[str, str]]) -> Findings:
    """The ``duplicates`` invariant alone, for runs whose agents ran on other machines' workers
    (their worktrees are not here): the store's attempt intervals of each run never overlap, and
    no agent's journal ``start`` line names a live agent of its feature."""
    findings = Findings()
    journal = read_journal(journal_dir)
    for feature, run in runs:
        attempts = store.attempts(feature, run)
        _check_overlaps(f"{feature}/{run}", attempts, findings)
        _check_journal(journal, feature, run, attempts, findings)
    return findings
