"""Asking a program its version (``tmops doctor``): one short run, an argv list, the agents'
environment allowlist, a timeout, no stdin; nothing else of the program is ever run here."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

__all__ = ["PROBE_TIMEOUT_S", "program_version"]

#: how long a program may take to say its version
PROBE_TIMEOUT_S = 15.0
#: the most characters of its answer kept
_ANSWER_CHARS = 200


def program_version(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str | None, str]:
    """Run ``argv`` (the program, then its version arguments); ``(version, "")`` from the first
    line it printed, or ``(None, why)`` when it failed, hung or printed nothing."""
    try:
        done = subprocess.run(
            list(argv), env=dict(env), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, errors="replace", timeout=PROBE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"it did not answer in {PROBE_TIMEOUT_S:g} s"
    except OSError as exc:
        return None, f"it cannot be run: {exc.strerror}"
    lines = [line.strip() for line in (done.stdout or done.stderr).splitlines() if line.strip()]
    if done.returncode != 0:
        tail = f": {lines[-1][:_ANSWER_CHARS]}" if lines else ""
        return None, f"it exited with code {done.returncode}{tail}"
    if not lines:
        return None, "it printed nothing"
    return lines[0][:_ANSWER_CHARS], ""
