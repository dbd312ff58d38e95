"""Running tmops as a second user, for the tests of what another user may or may not do.

The user is ``nobody``, reached from root with ``setpriv``. It runs this venv's ``tmops``, so
it must be able to reach the venv: where a folder above the clone is private (``mktemp -d``
makes them 0700) it cannot, and the tests skip (the ``second_user`` fixture of conftest.py).
A plain module, not a conftest: it holds no fixture.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: The second user of the tests that run tmops as someone else: ``nobody``.
SECOND_USER = 65534
#: This venv's ``tmops``, the one the second user runs.
TMOPS_SCRIPT = str(Path(sys.executable).with_name("tmops"))


def as_second_user(*argv: str) -> list[str]:
    """``argv`` run as :data:`SECOND_USER` (no supplementary groups), through setpriv."""
    uid = str(SECOND_USER)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


@functools.cache
def why_no_second_user() -> str | None:
    """Why the tests cannot run tmops as :data:`SECOND_USER` here, or ``None`` if they can."""
    if os.getuid() != 0:
        return "needs root, to run tmops as a second user (nobody) with setpriv"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux), to run tmops as a second user (nobody)"
    probe = subprocess.run(
        as_second_user(TMOPS_SCRIPT, "plugins"),  # imports tmops and every plugin
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode == 0:
        return None
    said = (probe.stderr.strip().splitlines() or ["no output"])[-1]
    return (
        f"needs a second user (nobody) that can reach this venv, but it cannot run "
        f"{TMOPS_SCRIPT} ({said}): a folder above the clone is private, as `mktemp -d` makes "
        "them; clone into a folder every user may enter, and make the venv readable"
    )
