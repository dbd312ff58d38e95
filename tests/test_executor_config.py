"""The executor chosen by the config alone: ``local`` by default, the temporal plugin by
``executor.name: temporal``; every key checked where it is (``$.executor.<key>``), the
temporal executor's own keys by its plugin; no Temporal SDK imported unless it is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import in_memory_service
from tmops_core.config import parse_config, to_data
from tmops_core.orchestration.executor import LocalExecutor
from tmops_core.orchestration.executors import make_executor
from tmops_core.plugins import create_plugin_manager
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import ConfigError
from tmops_plugins.temporal.settings import read_settings, task_queue, workflow_id


def _problems(data: dict[str, Any]) -> list[str]:
    service = in_memory_service(data)
    try:
        with pytest.raises(ConfigError) as caught:
            service.check_config()
    finally:
        service.close()
    return list(caught.value.problems)


def test_the_default_executor_is_the_local_one(tmp_path: Path) -> None:
    config = parse_config({})
    assert (config.executor.name, config.executor.remote) == ("local", "origin")
    executor = make_executor(config, create_plugin_manager(), Layout(tmp_path))
    assert isinstance(executor, LocalExecutor)


def test_the_temporal_executor_is_chosen_by_config(tmp_path: Path) -> None:
    section = {"name": "temporal", "address": "127.0.0.1:7233", "namespace": "default",
               "task_queue": "tmops"}  # fmt: skip
    config = parse_config({"executor": section})
    executor = make_executor(config, create_plugin_manager(), Layout(tmp_path))
    assert type(executor).__name__ == "TemporalExecutor"
    assert executor.settings.address == "127.0.0.1:7233"  # type: ignore[attr-defined]
    # `tmops config show` prints the section as written, the plugin's keys beside the core's
    assert to_data(config)["executor"] == {"remote": "origin", **section}


def test_a_misspelt_or_bad_temporal_key_is_named_with_its_path() -> None:
    section = {"name": "temporal", "adress": "x:1", "address": "no port",
               "heartbeat_timeout_s": 0}  # fmt: skip
    problems = _problems({"executor": section})
    paths = sorted(problem.rsplit(" @ ", 1)[1] for problem in problems)
    assert paths == ["$.executor.address", "$.executor.adress", "$.executor.heartbeat_timeout_s"]
    assert any("unknown key 'adress'" in problem for problem in problems)


def test_a_timeout_left_empty_is_refused_with_its_path_not_a_crash() -> None:
    # `heartbeat_timeout_s:` with nothing after it is None in YAML
    assert _problems({"executor": {"name": "temporal", "heartbeat_timeout_s": None}}) == [
        "must be a number of seconds above 0, got None @ $.executor.heartbeat_timeout_s"
    ]


def test_a_workers_concurrency_is_a_whole_number_of_at_least_1() -> None:
    assert read_settings({}).max_concurrent_attempts == 4
    assert read_settings({"max_concurrent_attempts": 1}).max_concurrent_attempts == 1
    for bad in (0, -2, 1.5, "4", True, None):
        section = {"name": "temporal", "max_concurrent_attempts": bad}
        assert _problems({"executor": section}) == [
            f"must be a whole number of attempts of at least 1, got {bad!r} "
            "@ $.executor.max_concurrent_attempts"
        ], bad


def test_worker_concurrency_below_1_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from tests.takeover_support import TMOPS

    done = subprocess.run(
        [TMOPS, "worker", "--executor", "temporal", "--concurrency", "0",
         "--workspace", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Invalid value for '--concurrency': 0 is not in the range x>=1." in done.stderr


def test_an_unknown_executor_says_which_are_installed() -> None:
    problems = _problems({"executor": {"name": "kubernetes"}})
    assert len(problems) == 1
    assert problems[0].endswith("@ $.executor.name")
    assert "installed: local, temporal" in problems[0]


def test_the_local_executor_takes_no_settings() -> None:
    problems = _problems({"executor": {"address": "127.0.0.1:7233"}})
    assert problems == [
        "the local executor has no settings of its own (got address); name the executor "
        "plugin they are for @ $.executor.name"
    ]


def test_core_keys_of_the_section_are_checked_on_loading() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"executor": {"name": "Temporal!", "remote": "--upload-pack=x"}})
    assert sorted(p.rsplit(" @ ", 1)[1] for p in caught.value.problems) == [
        "$.executor.name", "$.executor.remote",
    ]  # fmt: skip


def test_the_workspace_is_in_the_task_queue_and_the_workflow_id() -> None:
    settings = read_settings({"task_queue": "tmops"})
    assert task_queue(settings, "team-a") == "tmops-team-a"
    assert task_queue(settings, "team-a") != task_queue(settings, "team-b")
    assert workflow_id("team-a", "slugify", "initial") == "tmops/team-a/slugify/initial"


def test_nothing_imports_the_temporal_sdk_unless_the_executor_is_temporal() -> None:
    code = (
        "import sys\n"
        "from tmops_core.config import parse_config\n"
        "from tmops_core.plugins import create_plugin_manager\n"
        "from tmops_core.service.operations import Service\n"
        "from tmops_core.config import LoadedConfig\n"
        "service = Service(LoadedConfig(parse_config({}), None), create_plugin_manager())\n"
        "service.check_config()\n"
        "print('temporalio' in sys.modules)\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)  # fmt: skip
    assert found.stdout.strip() == "False"


def test_an_unreachable_temporal_server_is_a_transient_error_the_run_retries(
    tmp_path: Path,
) -> None:
    from tests.temporal_support import free_port
    from tmops_hookspecs import AgentRequest, AttemptSpec, Outcome
    from tmops_plugins.temporal.activities import HeartbeatHooks

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = parse_config({"executor": {"name": "temporal", "address": address}})
    executor = make_executor(config, create_plugin_manager(), Layout(tmp_path))
    request = AgentRequest(feature="f", run="initial", phase="tester", role_instructions="r",
                           prompt="p", working_dir=tmp_path)  # fmt: skip
    spec = AttemptSpec(feature="f", run="initial", phase="tester", attempt=1, fencing=1,
                       provider="scripted", request=request, checkpoint=tmp_path / "c.md",
                       log_path=tmp_path / "t.log")  # fmt: skip
    outcome = executor.execute(spec, None, HeartbeatHooks(1.0))  # type: ignore[arg-type]
    assert outcome.result.outcome is Outcome.TRANSIENT_ERROR
    assert f"cannot reach the Temporal server at {address}" in outcome.result.message
