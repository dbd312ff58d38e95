"""The scripted agent's ``detach`` fault: a daemon in a session of its own that outlives the
agent (a stand-in for what a real agent's Bash tool may leave behind), found only by the mark
in its environment. The tests of process-tree reaping use it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

__all__ = ["DETACHED_LIFETIME_S", "detach_daemon"]

#: How long the daemon of the ``detach`` fault sleeps when nobody kills it.
DETACHED_LIFETIME_S = 300
#: The daemon of the ``detach`` fault: a fresh interpreter (never a fork of the agent, which may
#: run inside a test process) that forks once more, so the middle process exits and the
#: daemon is re-parented; argv: pid file, seconds.
_DAEMON = """
import os, sys, time
if os.fork():
    os._exit(0)
path = sys.argv[1]
temp = path + ".tmp"
with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "w") as f:
    f.write(str(os.getpid()))
os.replace(temp, path)
time.sleep(float(sys.argv[2]))
"""


def detach_daemon(pid_file: Path) -> None:
    """Start the ``detach`` fault's daemon and wait until it has written its pid."""
    pid_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    middle = subprocess.Popen(
        [sys.executable, "-c", _DAEMON, str(pid_file), str(DETACHED_LIFETIME_S)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    middle.wait()
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    print(f"scripted agent: fault detach, daemon pid file {pid_file}", file=sys.stderr)
