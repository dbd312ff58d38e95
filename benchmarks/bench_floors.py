"""The floors of the handoff: an inotify event and a Python process spawn.

Also the informative measures the handoff's profile sets beside them: the same spawn with
the flags of tmops' supervisor, and a child's exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench_stats import ms


def measure_inotify(samples: int, folder: Path) -> list[float]:
    """write+close a file in a watched folder -> the watchdog native observer's callback (ms)."""
    from watchdog.events import FileClosedEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    folder.mkdir(parents=True, exist_ok=True)
    arrived: dict[str, int] = {}
    condition = threading.Condition()

    class Handler(FileSystemEventHandler):
        def on_closed(self, event: Any) -> None:
            now = time.perf_counter_ns()
            with condition:
                arrived.setdefault(os.path.basename(os.fsdecode(event.src_path)), now)
                condition.notify_all()

    observer = Observer()
    observer.schedule(Handler(), str(folder), recursive=False, event_filter=[FileClosedEvent])
    observer.start()
    latencies: list[float] = []
    try:
        time.sleep(0.05)
        for index in range(samples):
            name = f"{index:04d}-probe.md"
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, b"# probe\n**Feature:** x\n")
            os.close(fd)
            closed = time.perf_counter_ns()
            with condition:
                if not condition.wait_for(lambda n=name: n in arrived, timeout=5):
                    raise RuntimeError("the inotify observer reported nothing in 5 s")
                latencies.append(ms(arrived[name] - closed))
            time.sleep(0.005)
    finally:
        observer.stop()
        observer.join()
    return latencies


_CHILD_CODE = "import time,sys; sys.stdout.write(str(time.time_ns()))"


def _spawn_samples(samples: int, **popen: Any) -> tuple[list[float], list[float], list[float]]:
    """Popen(python -c ...) -> the child's first statement (ms), and its two parts: Popen
    returning (fork + exec) and the child interpreter's start-up to its first statement."""
    total: list[float] = []
    fork_exec: list[float] = []
    interpreter: list[float] = []
    for _ in range(samples):
        before = time.time_ns()
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE], stdout=subprocess.PIPE, **popen
        )
        returned = time.time_ns()
        out, _ = child.communicate()
        first = int(out)
        total.append(ms(first - before))
        fork_exec.append(ms(returned - before))
        interpreter.append(ms(first - returned))
    return total, fork_exec, interpreter


def measure_spawn(samples: int) -> list[float]:
    """The floor as the brief defines it: plain Popen -> the child's first statement (ms)."""
    return _spawn_samples(samples)[0]


def measure_spawn_like_tmops(samples: int) -> tuple[list[float], list[float], list[float]]:
    """Informative: the same child spawned with the flags of tmops' supervisor (``preexec_fn``,
    a new session, pipes, the allowlisted env), from this process but outside the engine."""
    from tmops_core.agents.env import build_env
    from tmops_core.agents.spawner import _child_setup

    return _spawn_samples(
        samples,
        env=build_env({}),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
        close_fds=True,
        start_new_session=True,
        preexec_fn=_child_setup(os.getpid()),
    )


_EXITING_CHILD = "import time,sys; sys.stdout.write(str(time.time_ns())); sys.stdout.flush()"


def measure_exit(samples: int) -> list[float]:
    """Informative: a child's last statement -> the parent sees it exited (waitpid), in ms;
    what a minimal agent costs between closing its checkpoint and being gone."""
    latencies: list[float] = []
    for _ in range(samples):
        child = subprocess.Popen([sys.executable, "-c", _EXITING_CHILD], stdout=subprocess.PIPE)
        out = child.stdout.read() if child.stdout else b"0"
        child.wait()
        latencies.append(ms(time.time_ns() - int(out)))
        if child.stdout:
            child.stdout.close()
    return latencies
