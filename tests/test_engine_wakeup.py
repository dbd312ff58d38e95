"""The engine waits on events, never on a fixed interval: a run queued by another process rings
the doorbell and is admitted at once; a lost ring is made up for by the safety timeout; an idle
engine and a waiting attempt do not wake up unless something happened (counted, not timed)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.engine_support import (
    WAIT_S,
    ended,
    file_service,
    new_feature,
    open_store,
    scripted_config,
    wait_for,
    write_config,
)
from tmops_core.checkpoints.watch import Arrivals, CheckpointWatcher
from tmops_core.orchestration.daemon import Engine
from tmops_core.orchestration.executor import LocalExecutor
from tmops_core.orchestration.wakeup import DOORBELL, Flag, ring_doorbell, subscribe_all
from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import (
    AgentEvent,
    AgentRequest,
    AgentResult,
    AttemptSpec,
    Invocation,
    Outcome,
)

TMOPS = str(Path(sys.executable).with_name("tmops"))


class _Served:
    def __init__(self, engine: Engine, thread: threading.Thread, service: Service) -> None:
        self.engine = engine
        self.thread = thread
        self.service = service

    @property
    def wakeups(self) -> int:
        return self.engine.scheduler.wakeup.wakeups


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    root = create_demo_project(tmp_path / "p").path
    data = scripted_config(tmp_path / "state", default_phases=["orchestrator"])
    return root, write_config(tmp_path / "tmops.yaml", data)


def _serve(root: Path, config: Path, *, safety_wake_s: float) -> Iterator[_Served]:
    service = file_service(config)
    new_feature(service, root)
    store = open_store(root)
    engine = Engine(
        config=service.config, plugins=service.plugins, events=service.events, store=store,
        layout=Layout(root),
    )  # fmt: skip
    engine.scheduler.safety_wake_s = safety_wake_s
    thread = threading.Thread(target=engine.serve, kwargs={"idle_exit_s": 3600.0}, daemon=True)
    thread.start()
    doorbell = root / ".tmops" / DOORBELL
    deadline = time.monotonic() + WAIT_S
    while not doorbell.exists():  # made before the engine's first read of the queue
        assert time.monotonic() < deadline, "the engine never listened on its doorbell"
        time.sleep(0.01)
    try:
        yield _Served(engine, thread, service)
    finally:
        engine.request_stop()
        thread.join(WAIT_S)
        store.close()
        service.close()
    assert not thread.is_alive()


@pytest.fixture
def served(project: tuple[Path, Path]) -> Iterator[_Served]:
    """An engine serving the project in this process; nothing but a ring wakes it (its idle
    exit and its safety timeout are an hour away)."""
    yield from _serve(*project, safety_wake_s=3600.0)


def test_the_doorbell_is_a_private_fifo(project: tuple[Path, Path], served: _Served) -> None:
    root, _ = project
    info = os.lstat(root / ".tmops" / DOORBELL)
    assert stat.S_ISFIFO(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(root / ".tmops" / DOORBELL.parent).st_mode) == 0o700


def test_a_run_queued_by_another_process_rings_the_engine_awake(
    project: tuple[Path, Path], served: _Served
) -> None:
    root, config = project
    before = served.wakeups
    done = subprocess.run(
        [TMOPS, "--config", str(config), "start", DEMO_FEATURE, "--workspace", str(root)],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    final = wait_for(served.service, DEMO_FEATURE, root, done=ended, timeout=WAIT_S)
    assert final["status"] == "completed"
    # Woken by the ring and by the driver's end; never by a timer (both are an hour away).
    assert 1 <= served.wakeups - before <= 4
    store = open_store(root)
    try:
        run = store.run(DEMO_FEATURE, "initial")
    finally:
        store.close()
    assert run is not None
    assert run.engine_pid == os.getpid()  # this engine took it: `start` spawned none


def test_an_idle_engine_does_not_wake_up(served: _Served) -> None:
    before = served.wakeups
    time.sleep(0.5)  # a 20 ms poll would wake 25 times meanwhile
    assert served.wakeups == before


def test_a_ring_without_a_listener_is_not_an_error(tmp_path: Path) -> None:
    (tmp_path / ".tmops").mkdir()
    assert ring_doorbell(tmp_path / ".tmops") is False
    (tmp_path / ".tmops" / "engine").mkdir()
    os.mkfifo(tmp_path / ".tmops" / DOORBELL, 0o600)
    assert ring_doorbell(tmp_path / ".tmops") is False  # nobody holds it open: ENXIO


def test_a_link_is_never_rung(tmp_path: Path) -> None:
    (tmp_path / ".tmops" / "engine").mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / ".tmops" / DOORBELL).symlink_to(target)
    assert ring_doorbell(tmp_path / ".tmops") is False
    assert target.read_text() == ""


def test_a_lost_ring_is_made_up_for_by_the_safety_timeout(project: tuple[Path, Path]) -> None:
    root, config = project
    for served in _serve(root, config, safety_wake_s=0.2):
        # Queued without ringing (spawn=False): only the safety timeout brings it in.
        served.service.start(DEMO_FEATURE, workspace=root, spawn=False)
        final = wait_for(served.service, DEMO_FEATURE, root, done=ended, timeout=WAIT_S)
        assert final["status"] == "completed"


# -- one attempt's wait ---------------------------------------------------------------------------


class _Provider:
    def __init__(self, script: str) -> None:
        self.script = script

    def build_invocation(self, request: AgentRequest) -> Invocation:
        return Invocation(argv=(sys.executable, "-c", self.script))

    def parse_line(self, line: str) -> list[AgentEvent]:
        return []

    def finish(self, returncode: int, events: object, stderr: str) -> AgentResult:
        return AgentResult(outcome=Outcome.SUCCEEDED if returncode == 0 else Outcome.FAILED)


class _Hooks:
    """The run's side of the seam, on the real checkpoint watcher and cancel flag."""

    def __init__(self, arrivals: Arrivals, completion: str, cancel: Flag) -> None:
        self.arrivals, self.completion, self.cancel = arrivals, completion, cancel

    def started(self, pid: int, start_time: int, mark: str | None) -> None:
        return None

    def session(self, session_id: str) -> None:
        return None

    def event(self, event: AgentEvent) -> None:
        return None

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def checkpoint_seen(self) -> bool:
        return self.arrivals.seen_at(self.completion) is not None

    def on_change(self, wake: Callable[[], None]) -> Callable[[], None]:
        return subscribe_all(wake, self.arrivals, self.cancel)


def _attempt(tmp_path: Path, script: str, *, cancel: Flag | None = None) -> tuple[str | None, int]:
    """Run one attempt of ``script``; its stop reason and how often the executor woke up."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    request = AgentRequest(
        feature="f", run="r", phase="p", role_instructions="", prompt="", working_dir=tmp_path,
        extra_dirs=(folder,),
    )  # fmt: skip
    spec = AttemptSpec(
        feature="f", run="r", phase="p", attempt=1, fencing=1, provider="test",
        request=request, checkpoint=folder / "001-done.md", log_path=tmp_path / "agent.log",
        checkpoint_grace_s=0.3,
    )  # fmt: skip
    arrivals = Arrivals()
    executor = LocalExecutor()
    with CheckpointWatcher(folder, arrivals):
        outcome = executor.execute(
            spec, _Provider(script), _Hooks(arrivals, "001-done.md", cancel or Flag())
        )
    return outcome.stop_reason, executor.wakeups


def test_an_attempt_wakes_once_when_its_agent_exits(tmp_path: Path) -> None:
    reason, wakeups = _attempt(tmp_path, "import time; time.sleep(1)")
    assert reason is None
    assert wakeups == 1  # a 5 ms poll wakes 200 times


def test_an_attempt_wakes_for_its_checkpoint_and_the_end_of_the_grace(tmp_path: Path) -> None:
    script = (
        f"import time; open({str(tmp_path / 'checkpoints' / '001-done.md')!r}, 'w').write('x');"
        " time.sleep(60)"
    )
    reason, wakeups = _attempt(tmp_path, script)
    assert reason == "stopped"
    assert wakeups <= 3  # the arrival, the grace's end (and a spurious one at most)


def test_an_attempt_wakes_when_the_engine_cancels(tmp_path: Path) -> None:
    cancel = Flag()
    threading.Timer(0.5, cancel.set).start()
    reason, wakeups = _attempt(tmp_path, "import time; time.sleep(60)", cancel=cancel)
    assert reason == "cancelled"
    assert wakeups == 1  # the cancel woke it; it stopped the agent
