"""The notify plugin's command notifier on real engine runs: a run that completes, one that
fails, one that waits for a person's approval; the event on stdin, the environment allowlist,
the event filter, and strict settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tmops_core.plugins import create_plugin_manager
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.surfaces.cli import cli
from tmops_hookspecs import ConfigError
from tmops_plugins import notify, notify_settings

from .engine_process_support import run_in_engine_process
from .engine_support import (
    SHORT_WORKFLOW,
    scripted_config,
    write_config,
)
from .notify_support import recorded, recorder, run_notified

EVENT_KEYS = {
    "event", "feature", "run", "state", "reason", "message", "workspace", "project", "branch",
    "time", "duration_s", "status_command",
}  # fmt: skip


def _config(base: Path, **features: Any) -> tuple[dict[str, Any], Path, Path]:
    """A short workflow whose notify plugin runs two recorders: one told of everything, one
    only of failures."""
    every, every_out = recorder(base, "every")
    failures, failures_out = recorder(base, "failures")
    data = scripted_config(base / "state", default_phases=SHORT_WORKFLOW, **features)
    data["plugins"] = {
        "settings": {
            "notify": {
                "command": [
                    {"argv": every, "env": ["TMOPS_NOTIFY_TEST_*"]},
                    {"argv": failures, "events": ["failed"]},
                ]
            }
        }
    }
    return data, every_out, failures_out


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-not-for-notifiers")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_not-for-notifiers")
    monkeypatch.setenv("TMOPS_NOTIFY_TEST_CHANNEL", "ops")


@pytest.mark.usefixtures("secrets_in_env")
def test_a_completed_run_runs_the_command_with_the_event_on_stdin(tmp_path: Path) -> None:
    data, every_out, failures_out = _config(tmp_path)
    _, root, state = run_notified(tmp_path, data)
    assert state == "completed"
    [record] = recorded(every_out)
    event = record["stdin"]
    assert set(event) == EVENT_KEYS
    assert event["event"] == "completed"
    assert event["state"] == "completed"
    assert event["feature"] == DEMO_FEATURE
    assert event["run"] == "initial"
    assert event["workspace"] == "default"
    assert event["project"] == str(root)
    assert event["reason"] is None
    assert event["duration_s"] > 0
    assert event["status_command"] == f"tmops status {DEMO_FEATURE} --workspace {root}"
    # the engine's environment holds the agents' keys: the notify command gets none of them
    env = record["env"]
    assert "ANTHROPIC_API_KEY" not in env
    assert "GITHUB_TOKEN" not in env
    assert env["TMOPS_NOTIFY_TEST_CHANNEL"] == "ops"  # named in `env`
    assert "PATH" in env
    # the second command takes failures only
    assert recorded(failures_out) == []


def test_a_failed_run_tells_both_commands_with_its_error(tmp_path: Path) -> None:
    data, every_out, failures_out = _config(tmp_path, max_retries=0)
    data["providers"]["claude-code"]["env"]["TMOPS_SCRIPTED_FAULT"] = "orchestrator:crash:always"
    _, _, state = run_notified(tmp_path, data)
    assert state == "failed"
    for out in (every_out, failures_out):
        [record] = recorded(out)
        event = record["stdin"]
        assert event["event"] == "failed"
        assert event["state"] == "failed"
        assert "orchestrator" in event["message"]


def test_a_run_awaiting_approval_needs_a_person(tmp_path: Path) -> None:
    data, every_out, failures_out = _config(tmp_path, approve_before=["tester"])
    _, _, state = run_notified(tmp_path, data)
    assert state == "paused"
    [record] = recorded(every_out)
    event = record["stdin"]
    assert event["event"] == "needs_person"
    assert event["state"] == "paused"
    assert event["reason"] == "awaiting_approval"
    assert f"tmops approve {DEMO_FEATURE}" in event["message"]
    assert recorded(failures_out) == []


def test_the_engine_process_delivers_before_it_exits(tmp_path: Path) -> None:
    """`tmops engine` (a process of its own, as `start` spawns it) runs the run to its end, then
    goes idle and exits: it waits for a notify command still running, so its notification is
    there when the process is gone."""
    slow, out = recorder(tmp_path)
    data = scripted_config(tmp_path / "state", default_phases=SHORT_WORKFLOW)
    data["plugins"] = {"settings": {"notify": {"command": {"argv": [*slow, "1"]}}}}
    run_in_engine_process(tmp_path, data)
    assert [r["stdin"]["event"] for r in recorded(out)] == ["completed"]


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"sms": {}}, "unknown option(s) for 'notify': sms"),
        ({"command": {"argv": "notify-me --now"}}, "'notify.command.argv' must be a non"),
        ({"command": {"argv": []}}, "'notify.command.argv' must be a non-empty list"),
        ({"command": {"argv": ["x"], "shell": True}}, "unknown option(s) for 'notify.command'"),
        ({"command": {"argv": ["x"], "env": ["A B"]}}, "'notify.command.env' must be a list"),
        ({"command": {"argv": ["x"], "timeout_s": 0}}, "'notify.command.timeout_s' must be"),
        ({"command": {"argv": ["x"], "events": ["done"]}}, "unknown events: done"),
        ({"command": "x"}, "'notify.command' must be a mapping or a list of mappings"),
        ({"webhook": {"url": "ftp://example.org/x"}}, "must be an http:// or https:// URL"),
        ({"webhook": {"url": "https://u:p@example.org/x"}}, "holds credentials"),
        ({"webhook": {"url": "https://example.org", "auth_env": "T"}}, "both auth_header and"),
        ({"webhook": {"url": "https://example.org", "retries": "3"}}, "must be int"),
        ({"webhook": {"url": "https://example.org", "auth_header": "X Y", "auth_env": "T"}},
         "is not a header name"),
        ({"desktop": "yes"}, "'notify.desktop' must be true, false or a mapping"),
        ({"flush_timeout_s": -1}, "'notify.flush_timeout_s' must be a number of seconds"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_with_what_was_wrong(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        notify_settings.parse_settings(settings)
    assert says in str(caught.value)


def test_refused_settings_are_a_config_error_at_their_path() -> None:
    plugins = create_plugin_manager(
        autoload=False, extra=[("notify", notify)],
        settings={"notify": {"command": {"argv": "not a list"}}},
    )  # fmt: skip
    [failure] = plugins.failures
    assert failure.config_path == "$.plugins.settings.notify"
    assert "argv" in failure.reason


def test_events_may_name_one_reason_a_run_needs_a_person() -> None:
    accepts = notify_settings.event_filter("desktop", ["awaiting_approval", "failed"])
    assert accepts({"event": "needs_person", "reason": "awaiting_approval"})
    assert accepts({"event": "failed", "reason": None})
    assert not accepts({"event": "needs_person", "reason": "usage_limited"})
    assert not accepts({"event": "completed", "reason": None})


def test_config_check_reports_refused_settings_once_with_the_reason(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "tmops.yaml",
        {"plugins": {"settings": {"notify": {"command": {"argv": "page-me --now"}}}}},
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "config", "check"])
    assert result.exit_code == 2
    assert "has 1 error(s)" in result.stderr
    assert "'notify.command.argv' must be a non-empty list" in result.stderr
    assert "@ $.plugins.settings.notify" in result.stderr
    assert "not an installed plugin" not in result.stderr
