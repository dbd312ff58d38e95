"""The audit trail: every mutating operation names its actor (on the bus and in the store), the
events table is append-only, and ``tmops events`` reads it."""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from mcp import Client
from mcp.types import Implementation

from tmops_core.events import EventBus
from tmops_core.service.actor import acting_as, actor_part
from tmops_core.service.demo_project import DEMO_FEATURE, DEMO_TASK_SPEC, create_demo_project
from tmops_core.service.operations import Service
from tmops_core.service.trail import parse_since
from tmops_core.surfaces import cli_audit
from tmops_core.surfaces.cli import cli
from tmops_core.surfaces.mcp_server import build_server
from tmops_core.workspace.features import InitRequest
from tmops_hookspecs import Event, FeatureError

from .conftest import make_repo
from .engine_support import (
    SHORT_WORKFLOW,
    in_memory_service,
    open_store,
    run_workflow,
    scripted_config,
    write_config,
)

OS_USER = pwd.getpwuid(os.geteuid()).pw_name


class Memory:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def _service(tmp_path: Path) -> tuple[Service, Memory]:
    service = in_memory_service(
        scripted_config(tmp_path / "state", approve_before=["tester"],
                        default_phases=["orchestrator", "tester"])
    )  # fmt: skip
    memory = Memory()
    service._bus = EventBus([("memory", memory)])
    return service, memory


def test_every_mutating_operation_names_its_actor_on_the_bus_and_in_the_store(
    tmp_path: Path,
) -> None:
    root = create_demo_project(tmp_path / "p").path
    service, memory = _service(tmp_path)
    service.actor = "cli:alice"
    init = service.init(InitRequest(feature=DEMO_FEATURE, workspace=root))
    init.task_spec.write_text(DEMO_TASK_SPEC)
    service.start(DEMO_FEATURE, workspace=root, spawn=False)
    service.pause(DEMO_FEATURE, workspace=root, now=True)
    service.resume(DEMO_FEATURE, workspace=root, spawn=False)
    service.approve(DEMO_FEATURE, phase="tester", workspace=root, spawn=False)
    service.prompt(DEMO_FEATURE, "orchestrator", workspace=root)
    with acting_as("mcp-http:token-7"):  # a surface's actor for one call wins
        service.cancel(DEMO_FEATURE, workspace=root)
    service.retry(DEMO_FEATURE, workspace=root, spawn=False)
    service.cancel(DEMO_FEATURE, workspace=root)

    expected = [
        ("feature.initialized", "cli:alice"),
        ("run.queued", "cli:alice"),
        ("run.paused", "cli:alice"),
        ("run.resumed", "cli:alice"),
        ("run.queued", "cli:alice"),
        ("phase.approved", "cli:alice"),
        ("phase.prompt_given", "cli:alice"),
        ("run.cancelled", "mcp-http:token-7"),
        ("run.retried", "cli:alice"),
        ("run.queued", "cli:alice"),
        ("run.cancelled", "cli:alice"),
    ]
    stored = service.audit_trail(DEMO_FEATURE, workspace=root)
    assert [(e["event_type"].removeprefix("orchestration."), e["actor"]) for e in stored] == (
        expected
    )
    assert all(e["data"]["actor"] == e["actor"] for e in stored)
    on_bus = [(e.event_type.removeprefix("orchestration."), e.data["actor"]) for e in memory.events]
    assert on_bus == expected
    service.close()


def test_a_rollback_names_its_actor(tmp_path: Path) -> None:
    data = scripted_config(tmp_path / "state", default_phases=SHORT_WORKFLOW)
    done = run_workflow(tmp_path, data)
    done.service.actor = "cli:carol"
    done.service.rollback(done.feature, phase="tester", workspace=done.root)
    last = done.service.audit_trail(done.feature, workspace=done.root)[-1]
    assert (last["event_type"], last["actor"]) == ("orchestration.run.rolled_back", "cli:carol")
    done.close()


def test_the_cli_acts_as_the_os_user_whatever_user_says(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    runner = CliRunner()
    env = {"USER": "mallory", "LOGNAME": "mallory"}
    done = runner.invoke(cli, ["init", "auth-api", "--workspace", str(repo)], env=env)
    assert done.exit_code == 0, done.output
    shown = runner.invoke(cli, ["events", "--workspace", str(repo), "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    [event] = [json.loads(line) for line in shown.stdout.splitlines()]
    assert event["event_type"] == "orchestration.feature.initialized"
    assert event["actor"] == f"cli:{OS_USER}"
    assert event["feature"] == "auth-api"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_mcp_calls_act_as_the_client_named_in_the_handshake(tmp_path: Path, mode: str) -> None:
    repo = make_repo(tmp_path / "repo")
    service = Service.load()
    server = build_server(service, workspace=repo)
    info = Implementation(name="Claude Desktop\n\x1b[31mevil", version="1.0")

    async def call() -> None:
        async with Client(server, mode=mode, client_info=info) as client:  # type: ignore[arg-type]
            result = await client.call_tool("tmops_init_feature", {"feature": "auth-api"})
            assert not result.is_error, result

    anyio.run(call)
    [event] = service.audit_trail(workspace=repo)
    # the client's name, cut down to one printable word: no newline or escape reaches a log
    assert event["actor"] == "mcp-stdio:Claude-Desktop-31mevil"
    service.close()


def test_actor_parts_are_short_printable_words() -> None:
    assert actor_part("a b\nc") == "a-b-c"
    assert actor_part("") == "unknown"
    assert actor_part(None) == "unknown"
    assert len(actor_part("x" * 500)) == 64


# -- append-only --------------------------------------------------------------------------------


def test_the_events_table_refuses_update_and_delete(tmp_path: Path) -> None:
    root = create_demo_project(tmp_path / "p").path
    service, _ = _service(tmp_path)
    service.init(InitRequest(feature=DEMO_FEATURE, workspace=root))
    service.close()
    raw = sqlite3.connect(root / ".tmops" / "tmops.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE events SET data = '{}'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM events")
    assert raw.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    raw.close()


# -- tmops events ---------------------------------------------------------------------------------


def _project(tmp_path: Path, workspace: str = "default") -> tuple[Path, Path]:
    """A project with two features, each initialised, and the config file the CLI reads
    (``server.workspace_id``: ``workspace``)."""
    root = create_demo_project(tmp_path / "p").path
    data = {**scripted_config(tmp_path / "state"), "server": {"workspace_id": workspace}}
    config = write_config(tmp_path / "tmops.yaml", data)
    runner = CliRunner()
    for feature in (DEMO_FEATURE, "other"):
        done = runner.invoke(cli, ["--config", str(config), "init", feature, "--workspace",
                                   str(root)])  # fmt: skip
        assert done.exit_code == 0, done.output
    return root, config


def _events(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), "events", *args])


def test_events_lists_every_feature_or_one_as_text_or_json(tmp_path: Path) -> None:
    root, config = _project(tmp_path)
    every = _events(config, "--workspace", str(root))
    assert every.exit_code == 0, every.output
    lines = every.stdout.splitlines()
    assert len(lines) == 2
    assert f"{DEMO_FEATURE}/initial feature.initialized by cli:{OS_USER} " in lines[0]
    assert "other/initial feature.initialized" in lines[1]
    one = _events(config, "other", "--workspace", str(root), "--json")
    [event] = [json.loads(line) for line in one.stdout.splitlines()]
    assert event["feature"] == "other"
    assert event["data"]["created"] is True


def test_each_event_of_the_trail_names_its_workspace(tmp_path: Path) -> None:
    root, config = _project(tmp_path, workspace="team_a")
    shown = _events(config, "--workspace", str(root), "--json")
    assert shown.exit_code == 0, shown.output
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(e["feature"], e["workspace"]) for e in events] == [
        (DEMO_FEATURE, "team_a"), ("other", "team_a"),
    ]  # fmt: skip


def test_events_since_takes_an_iso_time_or_an_age(tmp_path: Path) -> None:
    root, config = _project(tmp_path)
    assert len(_events(config, "--workspace", str(root), "--since", "10m").stdout.splitlines()) == 2
    assert _events(config, "--workspace", str(root), "--since", "2999-01-01").stdout == ""
    old = _events(config, "--workspace", str(root), "--since", "2000-01-01T00:00:00Z")
    assert len(old.stdout.splitlines()) == 2
    bad = _events(config, "--workspace", str(root), "--since", "yesterday")
    assert bad.exit_code == 1
    assert "--since 'yesterday' is neither an ISO time nor an age" in bad.stderr
    assert parse_since("2h", now=parse_dt("2026-12-02T10:00:00Z")) == "2026-12-02T08:00:00Z"
    assert parse_since("2026-12-02T10:00:00+01:00") == "2026-12-02T09:00:00Z"
    with pytest.raises(FeatureError):
        parse_since("10 parsecs")


def parse_dt(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


def test_events_follow_prints_new_events_until_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, config = _project(tmp_path)
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 1:  # between two polls, a person pauses... here: a new event lands
            store = open_store(root)
            store.add_event(DEMO_FEATURE, "initial", "orchestration.run.paused",
                            json.dumps({"run": "initial", "actor": "cli:bob"}),
                            "2026-12-02T09:00:00Z")  # fmt: skip
            store.close()
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_audit.time, "sleep", sleep)
    followed = _events(config, DEMO_FEATURE, "--workspace", str(root), "--follow")
    assert followed.exit_code == 130
    lines = followed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[1].startswith(f"2026-12-02T09:00:00Z {DEMO_FEATURE}/initial run.paused by cli:bob")
    assert "stopped following the audit trail" in followed.stderr
