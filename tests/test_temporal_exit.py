"""Short-lived processes that used the Temporal SDK exit cleanly: the doctor's check, a worker
stopped by SIGTERM. With the SDK's default runtime, its threads could call into Python while
the interpreter finalized and abort the process (SIGABRT, temporalio/sdk-python#300): measured,
one doctor in twenty and one stopped worker in twelve; each test below failed 3 times out of 3
before the plugin gave its clients a runtime of their own, dropped before the process ends."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine_support import WAIT_S
from tests.takeover_support import wait_until
from tests.temporal_support import DevServer, dev_server

pytestmark = pytest.mark.slow

#: how many processes each test starts
CHECKS, WORKERS = 25, 12
_HOST = "class Host:\n    workspace_id = 'default'\n    max_retries = 1\n"
_SPEC = (
    "from tmops_plugins.temporal import tmops_register_executors\n"
    "[spec] = tmops_register_executors()\n"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DevServer]:
    with dev_server(tmp_path) as started:
        yield started


def test_a_process_that_ran_the_doctors_check_exits_cleanly(server: DevServer) -> None:
    code = (
        _HOST
        + _SPEC
        + (
            "import sys\n"
            "found = spec.check({'address': sys.argv[1]}, Host())\n"
            "print(' '.join(c.status for c in found))\n"
        )
    )
    codes = []
    for _ in range(CHECKS):
        done = subprocess.run([sys.executable, "-c", code, server.address], capture_output=True,
                              text=True, check=False, timeout=60)  # fmt: skip
        assert done.stdout == "ok warn\n", done.stderr
        codes.append(done.returncode)
    assert codes == [0] * CHECKS


def test_a_worker_stopped_by_sigterm_exits_cleanly(tmp_path: Path, server: DevServer) -> None:
    from tmops_core.config import parse_config
    from tmops_core.orchestration.remote import RemoteAttempts
    from tmops_core.plugins import create_plugin_manager
    from tmops_core.workspace.layout import Layout
    from tmops_plugins.temporal.doctor import check
    from tmops_plugins.temporal.settings import read_settings

    host = RemoteAttempts(parse_config({}), create_plugin_manager(), Layout(tmp_path))
    code = (
        _HOST
        + _SPEC
        + ("import sys\nspec.serve({'address': sys.argv[1], 'task_queue': sys.argv[2]}, Host())\n")
    )
    codes = []
    for number in range(WORKERS):
        # a queue of its own: the server still lists the pollers of the workers stopped before
        queue = f"exit{number}"
        settings = read_settings({"address": server.address, "task_queue": queue})
        worker = subprocess.Popen([sys.executable, "-c", code, server.address, queue],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            # it polls: its handlers are in place, its client and worker running
            wait_until(
                lambda: check(settings, host)[-1].status == "ok",  # noqa: B023
                timeout=WAIT_S, what="the worker to poll",
            )  # fmt: skip
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert worker.returncode in (0, -signal.SIGABRT), err
        codes.append(worker.returncode)
    assert codes == [0] * WORKERS
