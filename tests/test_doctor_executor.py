"""``tmops doctor`` checks the executor the config names through its plugin's own check
(``ExecutorSpec.check``): for temporal, a real dev server and real ``tmops worker`` processes.
A server nobody polls for is a warning; a worker polling makes it ok; an unreachable or silent
address and an unknown namespace fail, fast. An executor without a check says so; one whose check
raises fails alone."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine_support import WAIT_S
from tests.takeover_support import Project, make_project, wait_until
from tests.temporal_support import DevServer, dev_server, free_port, make_fleet
from tmops_core.config import parse_config
from tmops_core.orchestration.executors import executor_settings
from tmops_core.orchestration.remote import RemoteAttempts
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.doctor import Check, run_doctor
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import ExecutorCheck, ExecutorSpec, hookimpl

#: what an unreachable server may cost the doctor at most (each call is bounded by 3 s)
FAST_S = 5.0
SERVER, WORKERS = "executor temporal server", "executor temporal workers"


def doctor(project: Project) -> tuple[int, dict[str, dict[str, Any]]]:
    done = project.cli("doctor", "--json")
    answer = json.loads(done.stdout)
    assert answer["ok"] is (done.returncode == 0), done.stderr
    return done.returncode, {check["name"]: check for check in answer["checks"]}


def with_executor(project: Project, **section: Any) -> None:
    data = yaml.safe_load(project.config.read_text())
    data["executor"] = {"name": "temporal", **section}
    project.config.write_text(yaml.safe_dump(data))


def timed_executor_checks(project: Project) -> tuple[float, dict[str, dict[str, Any]]]:
    """The executor's own check, run in this process as the doctor runs it, and how long it
    took; its findings named as the doctor names them."""
    from tests.engine_support import file_service

    service = file_service(project.config)
    try:
        config, plugins = service.config, service.plugins
        check = plugins.executors()["temporal"].spec.check
        assert check is not None
        host = RemoteAttempts(config, plugins, Layout(project.root))
        started = time.monotonic()
        found = check(executor_settings(config), host)
        took = time.monotonic() - started
    finally:
        service.close()
    named = [Check(f"executor temporal {c.name}", c.status, c.found, c.fix) for c in found]
    return took, {c.name: c.to_dict() for c in named}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DevServer]:
    with dev_server(tmp_path) as started:
        yield started


@pytest.mark.slow
def test_a_server_no_worker_polls_is_a_warning_and_a_polling_worker_makes_it_ok(
    tmp_path: Path, server: DevServer
) -> None:
    fleet = make_fleet(tmp_path, server)
    try:
        code, checks = doctor(fleet.project)
        assert code == 0  # a warning does not fail the doctor
        assert checks[SERVER]["status"] == "ok"
        assert checks[SERVER]["found"] == f"Temporal at {server.address} answers, namespace default"
        assert checks[WORKERS]["status"] == "warn"
        assert checks[WORKERS]["found"] == "no worker polls the task queue tmops-default"
        assert "`tmops worker --executor temporal`" in checks[WORKERS]["fix"]
        assert "a clone" in checks[WORKERS]["fix"]

        worker = fleet.worker(fleet.clone("w1"))

        def polled() -> dict[str, dict[str, Any]] | None:
            _, checks = doctor(fleet.project)
            return checks if checks[WORKERS]["status"] == "ok" else None

        checks = wait_until(polled, timeout=WAIT_S, what="the doctor to see the worker")
        assert checks[WORKERS]["found"] == (
            f"1 worker(s) poll the task queue tmops-default: {worker.pid}@{socket.gethostname()}"
        )
        text = fleet.project.cli("doctor")
        assert text.returncode == 0
        assert f"ok    {WORKERS}: 1 worker(s) poll" in text.stdout
    finally:
        fleet.close()


@pytest.mark.slow
def test_an_unknown_namespace_fails_naming_it_and_how_to_create_it(
    tmp_path: Path, server: DevServer
) -> None:
    project = make_project(tmp_path)
    try:
        with_executor(project, address=server.address, namespace="no-such-namespace")
        took, checks = timed_executor_checks(project)
        print(f"doctor's executor check, unknown namespace: {took:.2f} s")
        assert took < FAST_S
        assert list(checks) == [SERVER]
        assert checks[SERVER]["status"] == "fail"
        assert checks[SERVER]["found"] == (
            f"the Temporal server at {server.address} has no namespace 'no-such-namespace'"
        )
        assert checks[SERVER]["fix"].startswith(
            "create it: `temporal operator namespace create --namespace no-such-namespace "
            f"--address {server.address}`"
        )
        code, cli_checks = doctor(project)
        assert code == 1
        assert cli_checks[SERVER] == checks[SERVER]
    finally:
        project.close()


def test_an_unreachable_server_fails_fast_naming_the_address_and_how_to_start_one(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path)
    try:
        address = f"127.0.0.1:{free_port()}"  # nothing listens there
        with_executor(project, address=address)
        took, checks = timed_executor_checks(project)
        print(f"doctor's executor check, connection refused: {took:.2f} s")
        assert took < FAST_S
        assert list(checks) == [SERVER]
        assert checks[SERVER]["status"] == "fail"
        assert checks[SERVER]["found"].startswith(f"no Temporal server answers at {address}")
        assert "Connection refused" in checks[SERVER]["found"]
        port = address.rsplit(":", 1)[1]
        assert f"`temporal server start-dev --ip 127.0.0.1 --port {port} " in checks[SERVER]["fix"]
        assert "docs/scale-out.md" in checks[SERVER]["fix"]
        code, cli_checks = doctor(project)
        assert code == 1
        assert cli_checks[SERVER]["status"] == "fail"
        # the other checks ran and passed: only the executor fails the doctor
        assert {c["status"] for n, c in cli_checks.items() if n != SERVER} == {"ok"}
    finally:
        project.close()


def test_a_server_that_never_answers_fails_within_the_bound(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    # a socket that listens but never speaks: the TCP handshake succeeds, nothing follows
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        try:
            with_executor(project, address=address)
            took, checks = timed_executor_checks(project)
            print(f"doctor's executor check, silent server: {took:.2f} s")
            assert took < FAST_S
            assert checks[SERVER]["status"] == "fail"
            assert checks[SERVER]["found"].startswith(
                f"no Temporal server answers at {address} within 3 s"
            )
        finally:
            project.close()


def test_bad_executor_settings_fail_the_check_with_the_config_error(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    try:
        with_executor(project, max_concurrent_attempts=0)
        code, checks = doctor(project)
        assert code == 1
        assert checks["executor"]["status"] == "fail"
        assert "settings have 1 error(s)" in checks["executor"]["found"]
        assert checks["executor"]["fix"] == "see docs/scale-out.md for the executor section"
    finally:
        project.close()


def test_the_local_executor_adds_no_check(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    try:
        code, checks = doctor(project)
        assert code == 0
        assert not [name for name in checks if name.startswith("executor")]
    finally:
        project.close()


class _Executors:
    """A plugin registering the executors given, for the doctor's side of the seam."""

    def __init__(self, *specs: ExecutorSpec) -> None:
        self.specs = specs

    @hookimpl
    def tmops_register_executors(self) -> list[ExecutorSpec]:
        return list(self.specs)


def _executor_checks(tmp_path: Path, spec: ExecutorSpec) -> list[Check]:
    plugins = create_plugin_manager(extra=[("executors", _Executors(spec))])
    config = parse_config({"executor": {"name": spec.name}})
    return [c for c in run_doctor(Layout(tmp_path), config, plugins) if c.name.startswith("exec")]


def test_an_executor_without_a_check_says_so_and_one_whose_check_raises_fails_alone(
    tmp_path: Path,
) -> None:
    def factory(settings: Any, host: Any) -> Any:
        raise AssertionError("the doctor never makes an executor")

    def broken(settings: Any, host: Any) -> list[ExecutorCheck]:
        raise KeyError("workspace")

    def answers(settings: Any, host: Any) -> list[ExecutorCheck]:
        assert host.workspace_id == "default"
        return [ExecutorCheck(name="queue", status="warn", found="nobody", fix="start one")]

    quiet = ExecutorSpec(name="quiet", factory=factory)
    assert _executor_checks(tmp_path, quiet) == [
        Check("executor quiet", "ok", "the executor names no check of its own")
    ]
    raising = ExecutorSpec(name="broken", factory=factory, check=broken)
    fix = "report it to the executor plugin's authors"
    assert _executor_checks(tmp_path, raising) == [
        Check("executor broken", "fail", "its check raised KeyError: 'workspace'", fix)
    ]
    answering = ExecutorSpec(name="x", factory=factory, check=answers)
    assert _executor_checks(tmp_path, answering) == [
        Check("executor x queue", "warn", "nobody", "start one")
    ]
    with pytest.raises(ValueError, match="'status' must be in"):
        ExecutorCheck(name="queue", status="fine", found="")
