"""Named crash points: where the kill harness stops the engine dead to prove recovery.

``TMOPS_CRASH_AT=<name>`` (or ``<name>:<n>`` for the n-th time that point is reached) makes the
engine kill itself with SIGKILL at that point, exactly as a power cut or ``kill -9`` would. Unset,
a crash point costs one dictionary lookup. It must never be set outside tests and soaks.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["CRASH_ENV", "CRASH_POINTS", "crash_point"]

#: The variable naming the point (and its occurrence) to die at.
CRASH_ENV = "TMOPS_CRASH_AT"

#: Every crash point the engine passes, in the order a phase reaches them.
CRASH_POINTS = (
    "after-spawn",
    "checkpoint-detected",
    "during-gate",
    "before-commit",
    "after-commit",
    "before-transition",
    "after-transition",
    "during-summary",
)

_counts: dict[str, int] = {}
_lock = threading.Lock()


def _target() -> tuple[str, int] | None:
    raw = os.environ.get(CRASH_ENV, "")
    if not raw:
        return None
    name, _, nth = raw.partition(":")
    return name, int(nth) if nth.isdigit() else 1


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no clean-up at all) if ``TMOPS_CRASH_AT`` names this point."""
    target = _target()
    if target is None or target[0] != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        reached = _counts[name]
    if reached == target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
