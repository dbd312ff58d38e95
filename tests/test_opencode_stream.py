"""The ``opencode`` provider on output recorded from the real CLI (tests/data/opencode/), its
command line and its own config keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tmops_core.surfaces.cli import cli
from tmops_hookspecs import AgentEvent, AgentRequest, ConfigError, Outcome
from tmops_plugins.claude_stream import RESUME_FAILED
from tmops_plugins.opencode_provider import ENV_PREFIXES, create_provider
from tmops_plugins.opencode_stream import judge_opencode, parse_opencode_line

from .config_support import write_file

RECORDINGS = Path(__file__).resolve().parent / "data" / "opencode"


def events_of(name: str) -> list[AgentEvent]:
    lines = (RECORDINGS / name).read_text().splitlines()
    return [event for line in lines for event in parse_opencode_line(line)]


def test_a_finished_session_gives_its_id_progress_and_summed_tokens_without_cost() -> None:
    events = events_of("success.jsonl")
    result = judge_opencode(0, events, "", now=0.0)

    assert events[0].kind == "session"
    assert result.session_id == "ses_dc8e32d20ffeEsBj1OtESktsRM"
    tools = [event for event in events if event.data.get("tool")]
    assert [event.data["tool"] for event in tools] == ["write", "bash", "bash"]
    assert tools[0].message.startswith("write /tmp/")
    assert tools[0].message.endswith("/hello.txt")
    assert [event.message for event in tools[1:]] == [
        "bash: cat hello.txt && false",
        "bash: echo ok",
    ]
    assert tools[1].data["tool_error"] is True  # the command exited 1
    assert tools[1].data["exit_code"] == 1
    assert "tool_error" not in tools[2].data
    texts = [e.message for e in events if e.kind == "progress" and not e.data.get("tool")]
    assert texts == ["Running a command.", "All done."]
    # four model calls of 120 tokens in and 30 out; OpenCode knows no price of the model
    assert (result.outcome, result.turns) == (Outcome.SUCCEEDED, 4)
    assert (result.input_tokens, result.output_tokens) == (480, 120)
    assert result.cost_usd is None  # tmops prices the tokens from providers.opencode.prices


def test_a_cost_opencode_reports_is_summed_over_the_steps() -> None:
    result = judge_opencode(0, events_of("priced.jsonl"), "", now=0.0)
    assert result.outcome is Outcome.SUCCEEDED
    assert result.cost_usd == pytest.approx(0.00096)


def test_cache_and_reasoning_tokens_count_as_input_and_output() -> None:
    line = json.dumps(
        {
            "type": "step_finish",
            "sessionID": "ses_x",
            "part": {
                "reason": "stop",
                "tokens": {
                    "input": 10,
                    "output": 5,
                    "reasoning": 7,
                    "cache": {"read": 100, "write": 3},
                },
                "cost": 0.5,
            },
        }
    )
    result = judge_opencode(0, parse_opencode_line(line), "", now=0.0)
    assert (result.input_tokens, result.output_tokens, result.cost_usd) == (113, 12, 0.5)


def test_a_401_is_an_auth_error_with_the_session_it_opened() -> None:
    result = judge_opencode(1, events_of("auth_error.jsonl"), "", now=0.0)
    assert result.outcome is Outcome.AUTH_ERROR
    assert "HTTP 401" in result.message
    assert "Incorrect API key" in result.message
    assert result.session_id == "ses_dc8e2c74effe3wYhqsDSCfDQ5Y"
    assert result.input_tokens is None


@pytest.mark.parametrize(
    ("recording", "status"), [("overloaded.jsonl", "503"), ("rate_limited.jsonl", "429")]
)
def test_an_error_left_after_opencodes_retries_is_transient_with_its_wait(
    recording: str, status: str
) -> None:
    result = judge_opencode(1, events_of(recording), "", now=0.0)
    assert result.outcome is Outcome.TRANSIENT_ERROR
    assert f"HTTP {status}" in result.message
    assert result.retry_after_s == pytest.approx(0.01)  # the retry-after-ms header: 10


def test_a_retry_after_in_seconds_or_in_the_words_is_the_wait() -> None:
    error = {
        "type": "error",
        "sessionID": "ses_x",
        "error": {
            "name": "APIError",
            "data": {"message": "busy", "statusCode": 503, "responseHeaders": {"retry-after": "7"}},
        },
    }
    assert judge_opencode(1, parse_opencode_line(json.dumps(error)), "", now=0.0).retry_after_s == 7
    error["error"]["data"] = {"message": "Please try again in 20s.", "statusCode": 429}  # type: ignore[index]
    assert (
        judge_opencode(1, parse_opencode_line(json.dumps(error)), "", now=0.0).retry_after_s == 20
    )


def test_an_unreachable_api_is_transient() -> None:
    result = judge_opencode(1, events_of("unreachable.jsonl"), "", now=0.0)
    assert result.outcome is Outcome.TRANSIENT_ERROR
    assert "Unable to connect" in result.message


def test_an_exceeded_quota_is_a_usage_limit() -> None:
    result = judge_opencode(1, events_of("quota.jsonl"), "", now=0.0)
    assert result.outcome is Outcome.USAGE_LIMITED
    assert "exceeded your current quota" in result.message


def test_a_refused_permission_stops_the_session_with_exit_0_and_fails() -> None:
    events = events_of("refused.jsonl")
    result = judge_opencode(0, events, "permission requested: external_directory", now=0.0)
    assert result.outcome is Outcome.FAILED
    assert "stopped after a tool call" in result.message
    assert "/tmp/ocx-outside/cp.md" in result.message
    assert "rejected permission" in result.message


def test_a_last_answer_cut_short_is_a_failure_naming_why() -> None:
    line = '{"type":"step_finish","sessionID":"ses_x","part":{"reason":"length","tokens":{}}}'
    result = judge_opencode(0, parse_opencode_line(line), "", now=0.0)
    assert result.outcome is Outcome.FAILED
    assert "ended with 'length'" in result.message


def test_an_unknown_session_is_a_failed_resume_and_a_kill_a_crash() -> None:
    resumed = judge_opencode(1, [], "\x1b[91mError: \x1b[0mSession not found\n", now=0.0)
    killed = judge_opencode(-9, events_of("success.jsonl")[:4], "", now=0.0)
    silent = judge_opencode(1, [], "", now=0.0)

    assert (resumed.outcome, resumed.resume_failed) == (Outcome.FAILED, True)
    assert RESUME_FAILED in resumed.message
    assert resumed.session_id is None
    assert killed.outcome is Outcome.CRASHED
    assert "SIGKILL" in killed.message
    assert killed.session_id == "ses_dc8e32d20ffeEsBj1OtESktsRM"
    assert silent.outcome is Outcome.CRASHED
    assert "without finishing a step" in silent.message


def test_garbage_and_unknown_lines_mean_nothing() -> None:
    assert parse_opencode_line("Performing one time database migration...") == []
    assert parse_opencode_line('{"type":"reasoning","part":{"text":"hm"}}') == []
    assert parse_opencode_line("{not json") == []
    assert parse_opencode_line('{"type":"tool_use","part":"x"}')[0].message == "tool"


def request(tmp_path: Path, **changes: object) -> AgentRequest:
    fields: dict[str, object] = {
        "feature": "slug",
        "run": "initial",
        "phase": "tester",
        "role_instructions": "Write tests.",
        "prompt": "-You are the TESTER.",
        "working_dir": tmp_path,
        "extra_dirs": (tmp_path / "cp",),
    }
    return AgentRequest(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_argv_holds_no_prompt_which_goes_on_stdin(tmp_path: Path) -> None:
    provider = create_provider(
        {"model": "openai/gpt-x", "args": ["--variant=high"], "env": {"A": "1"}}
    )
    invocation = provider.build_invocation(request(tmp_path))

    assert invocation.argv == (
        "opencode", "run", "--format=json", "--model=openai/gpt-x",
        "--title=tmops slug tester (initial)", "--variant=high",
    )  # fmt: skip
    assert invocation.stdin == "-You are the TESTER.\n\nWrite tests."
    env = dict(invocation.env)
    assert env.pop("A") == "1"
    assert env.pop("OPENCODE_DISABLE_AUTOUPDATE") == "1"
    assert json.loads(env.pop("OPENCODE_PERMISSION")) == {
        "external_directory": {f"{tmp_path / 'cp'}/**": "allow", str(tmp_path / "cp"): "allow"}
    }
    assert env == {}
    assert provider.can_resume
    assert ENV_PREFIXES == ("OPENCODE_",)


def test_a_resume_names_the_session_and_sends_only_the_prompt(tmp_path: Path) -> None:
    provider = create_provider({"permission_mode": "bypassPermissions"})
    invocation = provider.build_invocation(request(tmp_path, resume_session_id="ses_1"))
    assert invocation.argv == (
        "opencode", "run", "--format=json", "--auto",
        "--title=tmops slug tester (initial)", "--session=ses_1",
    )  # fmt: skip
    assert invocation.stdin == "-You are the TESTER."


def test_plan_mode_runs_the_plan_agent_and_the_agent_key_names_another(tmp_path: Path) -> None:
    planned = create_provider({"permission_mode": "plan", "options": {"agent": "review"}})
    chosen = create_provider({"options": {"agent": "review"}})
    assert "--agent=plan" in planned.build_invocation(request(tmp_path)).argv
    assert "--agent=review" in chosen.build_invocation(request(tmp_path)).argv


def test_the_config_key_becomes_opencode_config_content(tmp_path: Path) -> None:
    config = {"provider": {"openai": {"options": {"baseURL": "http://127.0.0.1:9/v1"}}}}
    provider = create_provider({"options": {"config": config}})
    env = provider.build_invocation(request(tmp_path)).env
    assert json.loads(env["OPENCODE_CONFIG_CONTENT"]) == config


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({"options": {"agent": 3}}, "$.providers.opencode.agent"),
        ({"options": {"config": "x"}}, "$.providers.opencode.config"),
        ({"options": {"config": {"a": {1, 2}}}}, "$.providers.opencode.config"),
        ({"options": {"sandbox": "on"}}, "$.providers.opencode.sandbox"),
        ({"model": "gpt-5"}, "$.providers.opencode.model"),
        (
            {"options": {"config": {}}, "env": {"OPENCODE_CONFIG_CONTENT": "{}"}},
            "$.providers.opencode.config",
        ),
    ],
)
def test_bad_keys_are_refused_at_their_path(settings: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as refused:
        create_provider(settings)
    assert any(where in problem for problem in refused.value.problems), refused.value


def test_config_check_reports_a_bad_opencode_key_and_config_show_keeps_the_good_ones(
    tmp_path: Path,
) -> None:
    good = write_file(
        tmp_path / "good.yaml",
        "providers:\n  opencode:\n    model: openai/gpt-x\n    agent: build\n"
        "    config: {share: disabled}\n",
        0o600,
    )
    shown = CliRunner().invoke(cli, ["--config", str(good), "config", "show"])
    assert shown.exit_code == 0, shown.output
    section = yaml.safe_load(shown.stdout)["providers"]["opencode"]
    assert (section["agent"], section["config"]) == ("build", {"share": "disabled"})
    checked = CliRunner().invoke(cli, ["--config", str(good), "config", "check"])
    assert checked.exit_code == 0, checked.output

    bad = write_file(
        tmp_path / "bad.yaml", "providers:\n  opencode:\n    agent: [build]\n    turbo: on\n", 0o600
    )
    refused = CliRunner().invoke(cli, ["--config", str(bad), "config", "check"])
    assert refused.exit_code == 2, refused.output
    assert "@ $.providers.opencode.agent" in refused.stderr
