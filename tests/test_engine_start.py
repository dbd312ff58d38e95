"""``start`` and the background engine: errors and repeats of ``start``, the queue, a spawned
engine, an engine that shuts down or is killed while a run needs it.

The agent is the scripted stand-in for ``claude -p`` (``tmops-scripted-agent``). Runs that
several tests read are module-scoped and run once; each test checks one behaviour. The helpers
are in ``engine_support.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import (
    PHASES,
    SHORT_WORKFLOW,
    WAIT_S,
    by_phase,
    ended,
    file_service,
    in_memory_service,
    new_feature,
    open_store,
    run_workflow,
    scripted_config,
    wait_for,
    write_config,
)
from tmops_core.orchestration.daemon import Engine, engine_running
from tmops_core.service.demo_project import DEMO_FEATURE, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import FeatureError

# -- 1. start: errors and repeats ----------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    """An initialised demo feature that nothing drives (no engine runs)."""
    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state"))
    new_feature(service, root)
    yield service, root
    service.close()


def test_start_of_an_unknown_feature_is_a_feature_error(fresh: tuple[Service, Path]) -> None:
    service, root = fresh
    with pytest.raises(FeatureError, match="'nothing-here' was not initialised"):
        service.start("nothing-here", workspace=root, spawn=False)


def test_start_with_an_unknown_provider_is_a_feature_error(fresh: tuple[Service, Path]) -> None:
    service, root = fresh
    with pytest.raises(FeatureError, match="no provider named 'no-such-agent'") as caught:
        service.start(DEMO_FEATURE, workspace=root, spawn=False, provider="no-such-agent")
    assert "claude-code" in (caught.value.hint or "")
    assert service.status(DEMO_FEATURE, workspace=root)["status"] == "initialized"


def test_a_second_start_while_queued_returns_the_same_run(fresh: tuple[Service, Path]) -> None:
    service, root = fresh
    first = service.start(DEMO_FEATURE, workspace=root, spawn=False)
    second = service.start(DEMO_FEATURE, workspace=root, spawn=False)
    assert second["run_id"] == first["run_id"]
    assert second["status"] == "queued"
    assert "already queued" in second["message"]


def test_resume_of_a_completed_run_is_refused(tmp_path: Path) -> None:
    data = scripted_config(tmp_path / "state", default_phases=SHORT_WORKFLOW)
    finished = run_workflow(tmp_path, data)
    try:
        assert finished.status()["status"] == "completed"
        with pytest.raises(FeatureError, match="has completed"):
            finished.service.start(
                finished.feature, workspace=finished.root, spawn=False, resume=True
            )
        assert finished.status()["status"] == "completed"
    finally:
        finished.close()


def test_start_with_a_disabled_provider_is_a_feature_error(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    data = scripted_config(tmp_path / "state", provider={"enabled": False})
    service = in_memory_service(data)
    try:
        new_feature(service, root)
        with pytest.raises(FeatureError, match="claude-code"):
            service.start(DEMO_FEATURE, workspace=root, spawn=False)
    finally:
        service.close()


def test_a_second_start_naming_another_provider_reports_the_runs_provider(
    fresh: tuple[Service, Path],
) -> None:
    service, root = fresh
    service.start(DEMO_FEATURE, workspace=root, spawn=False)
    second = service.start(DEMO_FEATURE, workspace=root, spawn=False, provider="command")
    assert service.status(DEMO_FEATURE, workspace=root)["provider"] == "claude-code"
    assert second["provider"] == "claude-code"


# -- 2. the background engine --------------------------------------------------------------------


@dataclass
class Spawned:
    service: Service
    root: Path
    answer: dict[str, Any]
    #: the run's state as soon as ``start`` returned
    after_start: str
    status: dict[str, Any]
    #: what a second, in-process engine answered while the background one served the project
    second_engine: bool | None


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawned]:
    base = tmp_path_factory.mktemp("spawned")
    root = create_demo_project(base / "p").path
    service = file_service(
        write_config(base / "tmops.yaml", scripted_config(base / "state", max_retries=0))
    )
    new_feature(service, root)
    answer = service.start(DEMO_FEATURE, workspace=root)
    after_start = service.status(DEMO_FEATURE, workspace=root)["status"]
    layout = Layout(root)
    deadline = time.monotonic() + 10
    while not engine_running(layout) and time.monotonic() < deadline:
        time.sleep(0.02)
    second = (
        service.serve_engine(workspace=root, idle_exit_s=0.1) if engine_running(layout) else None
    )
    status = wait_for(service, DEMO_FEATURE, root, done=ended, timeout=WAIT_S)
    yield Spawned(service, root, answer, after_start, status, second)
    service.close()


def test_start_with_spawn_returns_before_the_run_ends(spawned: Spawned) -> None:
    # start waits for the engine to come up, never for the agents (the run takes seconds)
    assert spawned.after_start in {"queued", "running"}
    assert spawned.answer["status"] == "queued"


def test_the_background_engine_completes_the_run(spawned: Spawned) -> None:
    assert spawned.status["status"] == "completed", spawned.status["last_error"]
    assert spawned.status["run_id"] == spawned.answer["run_id"]
    assert (spawned.root / ".tmops" / "logs" / "engine.log").is_file()


def test_a_second_engine_does_not_serve_a_project_already_served(spawned: Spawned) -> None:
    assert spawned.second_engine is False
    store = open_store(spawned.root)
    try:
        attempts = store.attempts(DEMO_FEATURE, "initial")
    finally:
        store.close()
    assert by_phase(attempts) == dict.fromkeys(PHASES, 1)


def test_the_background_engine_exits_when_idle(spawned: Spawned) -> None:
    layout = Layout(spawned.root)
    deadline = time.monotonic() + 15
    while engine_running(layout) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not engine_running(layout)


def test_a_run_queued_while_the_engine_shuts_down_is_not_stranded(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    data = scripted_config(tmp_path / "state", default_phases=["orchestrator"])
    service = file_service(write_config(tmp_path / "tmops.yaml", data))
    new_feature(service, root)
    layout = Layout(root)
    store = open_store(root)
    try:
        engine = Engine(
            config=service.config,
            plugins=service.plugins,
            events=service.events,
            store=store,
            layout=layout,
        )
        answers: list[dict[str, Any]] = []

        def start_now() -> None:  # called each time the idle engine has decided to exit
            if not answers:
                answers.append(service.start(DEMO_FEATURE, workspace=root))

        assert engine.serve(idle_exit_s=0.1, on_idle=start_now)
        assert answers[0]["status"] == "queued"
        deadline = time.monotonic() + 3
        served = False
        while time.monotonic() < deadline and not served:
            state = service.status(DEMO_FEATURE, workspace=root)["status"]
            served = state != "queued" or engine_running(layout)
            time.sleep(0.1)
        assert served, "the run stays queued and no engine serves the project"
        final = wait_for(service, DEMO_FEATURE, root, done=ended, timeout=WAIT_S)
        assert final["status"] == "completed"
    finally:
        store.close()
        service.close()


def test_start_after_the_engine_was_killed_brings_the_run_back(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    data = scripted_config(tmp_path / "state", fault="tester:slow=2", default_phases=SHORT_WORKFLOW)
    service = file_service(write_config(tmp_path / "tmops.yaml", data))
    new_feature(service, root)
    store = open_store(root)
    try:
        service.start(DEMO_FEATURE, workspace=root)
        deadline = time.monotonic() + WAIT_S
        while not any(
            a.phase == "tester" and a.pid for a in store.attempts(DEMO_FEATURE, "initial")
        ):
            status = service.status(DEMO_FEATURE, workspace=root)
            assert not ended(status["status"]), status
            assert time.monotonic() < deadline, f"the tester never started: {status}"
            time.sleep(0.05)
        run = store.run(DEMO_FEATURE, "initial")
        assert run is not None
        assert run.engine_pid is not None
        os.kill(run.engine_pid, signal.SIGKILL)  # tmops killed while an agent runs
        layout = Layout(root)
        while engine_running(layout):
            time.sleep(0.05)
        again = service.start(DEMO_FEATURE, workspace=root)
        assert again["run_id"] == run.run_id
        deadline = time.monotonic() + 3
        while not engine_running(layout) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine_running(layout), "start() left the run with no engine to serve it"
        final = wait_for(service, DEMO_FEATURE, root, done=ended, timeout=WAIT_S)
        assert final["status"] == "completed"
    finally:
        store.close()
        service.close()
