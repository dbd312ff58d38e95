"""OS processes found through ``/proc``: start times, trees, marks, signals and orphans.

This module owns everything tmops knows about a process it did not spawn itself: reading
``/proc/<pid>/stat`` (state, ppid, process group, start time), the boot a start time belongs
to (:func:`boot_id`, and :func:`boot_clock`, a clock every process of one boot shares), walking
descendants through
ppid links, finding processes by the agent mark in their environment (:data:`MARK_ENV`),
signalling through pidfds after a start-time check, and terminating whole trees
(:func:`kill_process_tree`, :func:`reap_orphans`, and the sweep the supervisor runs when an
agent ends).

Stopping a tree sends SIGTERM (then SIGCONT, so a stopped process can act on it) to the process
group AND to every descendant found through ``/proc/*/stat`` ppid links, collected BEFORE the
first signal (once the parent is gone, its children are re-parented and can no longer be found
by ppid). Claude Code's Bash tool runs each command in a session of its own, which ``killpg``
alone would miss. After the grace period whatever is left gets SIGKILL. Every agent carries a
random mark in its environment (:data:`MARK_ENV`); processes that inherited it are found even
after they were re-parented (a double-forked daemon, or the Bash-tool commands of an agent that
PDEATHSIG killed), by the same sweep and by :func:`reap_orphans` at the next start-up.

It must never signal a pid without checking its start time first (a recycled pid belongs to
someone else), never signal tmops itself, its ancestors, init or kthreadd, and never start a
process: spawning agents is :mod:`tmops_core.agents.supervisor`'s job.

Linux only: it needs ``/proc`` and pidfds (kernel 5.3 or later; without pidfds signals are
checked by start time only).
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Collection, Iterable, Mapping
from typing import NamedTuple, cast

from tmops_core.log import logger

__all__ = [
    "MARK_ENV",
    "boot_clock",
    "boot_id",
    "kill_process_tree",
    "process_alive",
    "process_start_time",
    "reap_orphans",
]

#: The variable carrying an agent's mark; its descendants inherit it, so they can be found.
MARK_ENV = "TMOPS_AGENT_MARK"

_KILL_WAIT_S = 2.0
#: How long a sweep waits for processes in the middle of exec to show their environment.
_EXEC_SETTLE_S = 0.2
_SIGKILL = int(signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------


#: the kernel's flag of a task that has begun to exit (include/linux/sched.h)
_PF_EXITING = 0x4


class _Stat(NamedTuple):
    pid: int
    state: str
    ppid: int
    pgid: int
    start_time: int
    flags: int = 0

    @property
    def alive(self) -> bool:
        # An exiting process may have closed its files (released its locks) a moment before
        # it turns zombie: it is dead for whoever waits for those locks.
        return self.state not in ("Z", "X", "x") and not self.flags & _PF_EXITING


def _read_stat(pid: int) -> _Stat | None:
    try:
        # nosemgrep: tmops-open-through-layout -- /proc of the kernel, nothing under .tmops/
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the LAST ")".
    end = data.rfind(b")")
    fields = data[end + 2 :].split()
    try:
        # fields[0] is field 3 (state): field N of proc(5) is fields[N - 3].
        return _Stat(
            pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19]),
            int(fields[6]),
        )  # fmt: skip
    except (IndexError, ValueError):
        return None


def _all_stats() -> dict[int, _Stat]:
    stats: dict[int, _Stat] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return stats
    for name in names:
        if name.isdigit():
            info = _read_stat(int(name))
            if info is not None:
                stats[info.pid] = info
    return stats


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, ``/proc/<pid>/stat`` field 22), or None."""
    info = _read_stat(pid)
    return info.start_time if info is not None else None


@functools.cache
def boot_id() -> str:
    """This boot of the machine (``/proc/sys/kernel/random/boot_id``).

    A pid and a start time name one process only within one boot: after a reboot both start
    again from zero, so a record from another boot names no process that runs now.
    """
    # nosemgrep: tmops-open-through-layout -- /proc of the kernel, nothing under .tmops/
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
        return file.read().strip()


def boot_clock() -> float:
    """Seconds since boot (``CLOCK_BOOTTIME``): the same clock for every process of one boot,
    it never jumps with the wall clock and it goes on while the machine sleeps."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def process_alive(pid: int, start_time: int) -> bool:
    """Whether the process ``pid`` that started at ``start_time`` still runs (zombies do not).

    The start time makes this safe against pid reuse: a new process with the same pid has a
    different start time.
    """
    info = _read_stat(pid)
    return info is not None and info.start_time == start_time and info.alive


def _descendants(roots: Iterable[int], stats: Mapping[int, _Stat]) -> set[int]:
    children: dict[int, list[int]] = {}
    for info in stats.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _marked(
    marks: Collection[str], stats: Mapping[int, _Stat], since: int
) -> tuple[set[int], set[int]]:
    """Processes started at or after ``since`` whose environment carries one of ``marks``.

    Also returns the processes whose environment could not be judged yet: for a moment inside
    ``execve`` (after close-on-exec, before the new stack is set up) ``/proc/<pid>/environ``
    reads empty.
    """
    found: set[int] = set()
    unsettled: set[int] = set()
    if not marks:
        return found, unsettled
    needles = {f"{MARK_ENV}={mark}".encode() for mark in marks}
    for info in stats.values():
        if info.start_time < since or not info.alive or 2 in (info.pid, info.ppid):
            continue  # older than the agent, a zombie, or a kernel thread
        try:
            # nosemgrep: tmops-open-through-layout -- /proc of the kernel, nothing under .tmops/
            with open(f"/proc/{info.pid}/environ", "rb") as file:
                data = file.read()
        except OSError:
            continue  # gone, or another user's
        if not data:
            unsettled.add(info.pid)
        elif not needles.isdisjoint(data.split(b"\0")):
            found.add(info.pid)
    return found, unsettled


def _protected(stats: Mapping[int, _Stat]) -> set[int]:
    """tmops itself, its ancestors, init and kthreadd: never signalled by a sweep."""
    protected = {0, 1, 2}
    pid = os.getpid()
    while pid not in protected:
        protected.add(pid)
        info = stats.get(pid)
        if info is None:
            break
        pid = info.ppid
    return protected


# --------------------------------------------------------------------------------------------
# Signals and process trees
# --------------------------------------------------------------------------------------------


def _signal(pid: int, start_time: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``start_time``."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:  # pragma: no cover - kernels before 5.3
        if not process_alive(pid, start_time):
            return False
        try:
            os.kill(pid, sig)
        except OSError:
            return False
        return True
    try:
        # The pidfd pins the process: if the start time matches after opening it, the signal
        # cannot reach a newer process that reused the pid.
        pidfd = cast(int, pidfd_open(pid))
    except OSError:
        return False
    try:
        if not process_alive(pid, start_time):
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except OSError as exc:
        logger.debug("tmops supervisor: killpg({}, {}) failed: {}", pgid, sig, exc)


def _terminate(
    roots: Mapping[int, int],
    *,
    grace_s: float,
    groups: Collection[int] = (),
    use_killpg: bool = False,
    marks: Collection[str] = (),
    marks_since: int = 0,
) -> dict[int, int]:
    """TERM, grace, KILL: every process under ``roots`` (pid -> start time), in ``groups``,
    or carrying one of ``marks``. Returns every process found (pid -> start time).

    ``use_killpg`` also signals ``groups`` with ``killpg``, atomic against forks; only safe
    while the group id cannot be reused, i.e. while its leader is an unreaped child of ours.
    """
    known: dict[int, int] = {}
    exec_pending: set[int] = set()
    group_set = set(groups) - {0, 1, os.getpgrp()}

    def scan() -> dict[int, _Stat]:
        stats = _all_stats()
        anchors = [
            pid
            for pid, start in (*roots.items(), *known.items())
            if (info := stats.get(pid)) is not None and info.start_time == start
        ]
        found = set(anchors) | _descendants(anchors, stats)
        found |= {info.pid for info in stats.values() if info.pgid in group_set}
        marked, unsettled = _marked(marks, stats, marks_since)
        found |= marked
        exec_pending.clear()
        exec_pending.update(unsettled)
        for pid in found - _protected(stats):
            known[pid] = stats[pid].start_time
        return stats

    def alive(stats: Mapping[int, _Stat]) -> list[int]:
        return [
            pid
            for pid, start in known.items()
            if (info := stats.get(pid)) is not None and info.start_time == start and info.alive
        ]

    def send(sig: int, pids: Iterable[int]) -> None:
        if use_killpg:
            for pgid in group_set:
                _killpg(pgid, sig)
        for pid in pids:
            _signal(pid, known[pid], sig)

    # Collect first: once a parent is gone, its children cannot be found by ppid any more.
    stats = scan()
    settle_until = time.monotonic() + _EXEC_SETTLE_S
    while exec_pending and time.monotonic() < settle_until:
        time.sleep(0.002)  # a process in the middle of exec may carry a mark: look again
        stats = scan()
    living = alive(stats)
    if not living:
        return known
    logger.debug("tmops supervisor: terminating {} process(es): {}", len(living), living)
    send(signal.SIGTERM, living)
    send(signal.SIGCONT, living)  # a stopped process acts on SIGTERM only once continued
    for sig, wait_s in ((signal.SIGTERM, grace_s), (_SIGKILL, _KILL_WAIT_S)):
        deadline = time.monotonic() + wait_s
        delay = 0.002
        while True:
            # Rescan each round: children forked during the grace period are found too.
            living = alive(scan())
            if not living:
                return known
            if sig == _SIGKILL:
                send(_SIGKILL, living)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        if sig == signal.SIGTERM:
            logger.info(
                "tmops supervisor: {} process(es) still running {} s after SIGTERM, sending "
                "SIGKILL: {}",
                len(living),
                grace_s,
                living,
            )
            send(_SIGKILL, living)
    logger.warning("tmops supervisor: processes survived SIGKILL: {}", living)
    return known


def kill_process_tree(pid: int, *, grace_s: float = 5.0) -> None:
    """Terminate ``pid`` with its process group and every descendant (in any session).

    SIGTERM to all of them (descendants collected first, through ``/proc`` ppid links), up to
    ``grace_s`` for them to exit, then SIGKILL to the rest. Returns when they are gone.
    Nothing happens if ``pid`` does not exist. tmops itself and its ancestors are never hit.
    """
    info = _read_stat(pid)
    if info is None or not info.alive:
        return
    groups = (pid,) if info.pgid == pid else ()
    _terminate({pid: info.start_time}, grace_s=grace_s, groups=groups)


def reap_orphans(
    records: Iterable[tuple[int, int]],
    *,
    grace_s: float = 5.0,
    marks: Iterable[str] = (),
) -> list[int]:
    """Kill the agents a previous tmops process recorded that still run, with their trees.

    ``records`` are ``(pid, start_time)`` pairs; a pid that is gone, or now belongs to another
    process (a different start time), is left alone. ``marks`` are agent marks
    (:attr:`tmops_core.agents.supervisor.AgentProcess.mark`): every process still carrying one is
    killed too, which finds the re-parented descendants of an agent that is itself gone. All
    are terminated together (one grace period). Returns the recorded pids that were alive, then
    the pids found by mark.
    """
    roots: dict[int, int] = {}
    for pid, start_time in records:
        if pid not in roots and pid != os.getpid() and process_alive(pid, start_time):
            roots[pid] = start_time
    mark_set = frozenset(marks)
    if not roots and not mark_set:
        return []
    stats = _all_stats()
    groups = [pid for pid in roots if (info := stats.get(pid)) is not None and info.pgid == pid]
    marked = _marked(mark_set, stats, 0)[0] - _protected(stats) - set(roots)
    known = _terminate(roots, grace_s=grace_s, groups=groups, marks=mark_set)
    killed = [pid for pid in roots if pid in known] + sorted(marked & set(known))
    if killed:
        logger.info(
            "tmops supervisor: reaped {} orphaned agent process(es): {}", len(known), killed
        )
    return killed
