"""The command provider: an argv template filled per request, plain or stream-json output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from tmops_core.config import ProviderConfig
from tmops_core.plugins import create_plugin_manager
from tmops_hookspecs import AgentEvent, AgentRequest, ConfigError, Outcome, Provider
from tmops_plugins.claude_stream import RESUME_FAILED
from tmops_plugins.command_provider import PLACEHOLDERS, CommandProvider, create_provider

RECORDED = Path(__file__).parent / "data" / "claude" / "provider"
SESSION = "b9ba6de2-b1e6-48c8-bff9-bc557c738456"


def provider(*args: str, **settings: Any) -> CommandProvider:
    return create_provider({"command": "/usr/bin/my-agent", "args": list(args), **settings})


def request(**overrides: Any) -> AgentRequest:
    fields: dict[str, Any] = {
        "feature": "auth",
        "run": "initial",
        "phase": "tester",
        "role_instructions": "# Role: Tester",
        "prompt": "You are the TESTER.",
        "working_dir": Path("/work/wt"),
        "extra_dirs": [Path("/work/cp"), Path("/work/other")],
    }
    return AgentRequest(**{**fields, **overrides})


def feed(made: CommandProvider, lines: list[str]) -> list[AgentEvent]:
    return [event for line in lines for event in made.parse_line(line)]


def recorded_lines(name: str) -> list[str]:
    return (RECORDED / f"{name}.jsonl").read_text("utf-8").splitlines()


# --------------------------------------------------------------------------------------------
# Registration and settings
# --------------------------------------------------------------------------------------------


def test_entry_point_registers_command_provider() -> None:
    registered = create_plugin_manager(autoload=True).providers()
    assert {"claude-code", "command"} <= set(registered)
    settings = attrs.asdict(ProviderConfig(command="my-agent"), recurse=False)
    made = registered["command"].spec.factory(settings)
    assert isinstance(made, CommandProvider)
    assert isinstance(made, Provider)


def test_missing_command_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        create_provider(attrs.asdict(ProviderConfig(args=("{prompt}",)), recurse=False))
    assert "'command'" in str(caught.value)


def test_unknown_placeholder_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        provider("--task", "{promt}")
    assert "{promt}" in str(caught.value)
    assert "args[1]" in str(caught.value)
    assert "{prompt}" in str(caught.value)  # the hint lists the known ones


@pytest.mark.parametrize("item", ["{prompt.upper}", "{prompt[0]}", "{}", "{0}"])
def test_placeholder_must_be_a_plain_name(item: str) -> None:
    with pytest.raises(ConfigError, match="unknown placeholder"):
        provider(item)


@pytest.mark.parametrize("item", ["{prompt!r}", "{max_turns:>5}"])
def test_placeholder_takes_no_conversion_or_format(item: str) -> None:
    with pytest.raises(ConfigError, match="no conversion or format"):
        provider(item)


@pytest.mark.parametrize("item", ["{prompt", "prompt}", "{pro{mpt}"])
def test_malformed_template_is_a_config_error(item: str) -> None:
    with pytest.raises(ConfigError, match="args\\[0\\]"):
        provider(item)


def test_settings_types_are_checked_as_for_claude_code() -> None:
    with pytest.raises(ConfigError, match="args"):
        create_provider({"command": "agent", "args": "{prompt}"})


# --------------------------------------------------------------------------------------------
# The invocation
# --------------------------------------------------------------------------------------------


def test_every_placeholder_is_filled() -> None:
    made = provider(*(f"{{{name}}}" for name in PLACEHOLDERS))
    argv = made.build_invocation(
        request(resume_session_id=SESSION, max_turns=9, allowed_tools=["Read", "Bash(x:*)"])
    ).argv
    assert argv == (
        "/usr/bin/my-agent",
        "You are the TESTER.",
        "# Role: Tester",
        "auth",
        "initial",
        "tester",
        "/work/wt",
        "/work/cp",
        SESSION,
        "9",
        "Read,Bash(x:*)",
    )


def test_placeholders_fill_part_of_an_item() -> None:
    argv = provider("--feature={feature}/{run}").build_invocation(request()).argv
    assert argv[1:] == ("--feature=auth/initial",)


def test_unset_values_are_empty_strings() -> None:
    made = provider("{resume_session_id}", "{max_turns}", "{checkpoint_dir}", "{allowed_tools}")
    argv = made.build_invocation(request(extra_dirs=[])).argv
    assert argv[1:] == ("", "", "", "")


def test_max_turns_falls_back_to_the_settings() -> None:
    argv = provider("{max_turns}", max_turns=40).build_invocation(request()).argv
    assert argv[1:] == ("40",)


def test_escaped_braces_stay_literal() -> None:
    argv = provider('{{"prompt": "{prompt}"}}', "{{phase}}").build_invocation(request()).argv
    assert argv[1:] == ('{"prompt": "You are the TESTER."}', "{phase}")


def test_prompt_with_shell_metacharacters_and_braces_is_one_item() -> None:
    prompt = "a; b && c $(id) `id` \"q\" 's'\nnext {feature} {{x}} | tee /etc/passwd"
    argv = provider("-p", "{prompt}", "--verbose").build_invocation(request(prompt=prompt)).argv
    assert argv == ("/usr/bin/my-agent", "-p", prompt, "--verbose")


def test_env_is_the_configured_env() -> None:
    made = provider("{prompt}", env={"AGENT_TOKEN": "x"})
    assert dict(made.build_invocation(request()).env) == {"AGENT_TOKEN": "x"}


def test_nothing_is_ignored_from_the_template() -> None:
    assert provider("-p", "--resume", "{resume_session_id}").ignored_args == ()


def test_invocation_runs_a_real_script_without_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    script = (
        "import json, sys\n"
        "print(json.dumps(dict(type='system', subtype='init', session_id='sess-9')))\n"
        "print('plain progress')\n"
        "print(json.dumps(dict(argv=sys.argv[1:])))\n"
    )
    made = create_provider(
        {"command": sys.executable, "args": ["-c", script, "{prompt}", "{checkpoint_dir}"]}
    )
    prompt = f'x; touch {marker} $(touch {marker}) `touch {marker}` "a b"\n-n'
    invocation = made.build_invocation(request(prompt=prompt, extra_dirs=[tmp_path]))
    done = subprocess.run(  # the argv under test, no shell
        invocation.argv, capture_output=True, text=True, timeout=60, check=False
    )
    events = feed(made, done.stdout.splitlines())
    result = made.finish(done.returncode, events, done.stderr)
    assert result.outcome is Outcome.SUCCEEDED
    assert result.session_id == "sess-9"
    assert json.loads(done.stdout.splitlines()[-1])["argv"] == [prompt, str(tmp_path)]
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Output lines
# --------------------------------------------------------------------------------------------


def test_plain_line_is_a_progress_event() -> None:
    (event,) = provider().parse_line("running tests...\n")
    assert event.kind == "progress"
    assert event.message == "running tests..."


def test_blank_line_means_nothing() -> None:
    assert list(provider().parse_line("   \n")) == []


def test_json_that_is_not_stream_json_is_a_plain_line() -> None:
    (event,) = provider().parse_line('{"level": "info", "msg": "step 2"}')
    assert event.kind == "progress"
    assert event.message == '{"level": "info", "msg": "step 2"}'


def test_stream_json_lines_are_read_as_claude_code_reads_them() -> None:
    events = feed(provider(), recorded_lines("success"))
    assert [event.kind for event in events] == [
        "session",
        "progress",
        "progress",
        "progress",
        "result",
    ]
    assert events[1].message == "Write /tmp/rec/work/hello.txt"


def test_stream_json_tool_result_means_nothing() -> None:
    assert list(provider().parse_line(recorded_lines("success")[2])) == []


def test_very_long_plain_line_is_cut() -> None:
    (event,) = provider().parse_line("x" * 5000)
    assert len(event.message) == 1000


# --------------------------------------------------------------------------------------------
# The end of the run
# --------------------------------------------------------------------------------------------


def test_exit_zero_succeeds_with_the_session_from_the_stream() -> None:
    made = provider()
    events = feed(made, [recorded_lines("success")[0], "all done"])
    result = made.finish(0, events, "")
    assert result.outcome is Outcome.SUCCEEDED
    assert result.session_id == SESSION
    assert "all done" in result.message


def test_exit_zero_without_output_succeeds() -> None:
    result = provider().finish(0, [], "")
    assert result.outcome is Outcome.SUCCEEDED
    assert result.session_id is None
    assert result.message == "my-agent exited 0"


def test_nonzero_exit_fails_with_the_stderr_tail() -> None:
    stderr = "".join(f"line {n}\n" for n in range(30)) + "Traceback: boom\n"
    result = provider().finish(2, feed(provider(), ["working"]), stderr)
    assert result.outcome is Outcome.FAILED
    assert "code 2" in result.message
    assert "Traceback: boom" in result.message
    assert "line 0 " not in result.message


def test_killed_by_signal_crashes() -> None:
    result = provider().finish(-9, [], "")
    assert result.outcome is Outcome.CRASHED
    assert "SIGKILL" in result.message


@pytest.mark.parametrize(
    ("name", "returncode", "outcome"),
    [
        ("success", 0, Outcome.SUCCEEDED),
        ("api_401", 1, Outcome.AUTH_ERROR),
        ("api_529", 1, Outcome.TRANSIENT_ERROR),
        ("max_turns", 1, Outcome.FAILED),
    ],
)
def test_stream_json_result_uses_the_claude_code_mapping(
    name: str, returncode: int, outcome: Outcome
) -> None:
    made = provider()
    assert made.finish(returncode, feed(made, recorded_lines(name)), "").outcome is outcome


def test_stream_json_result_decides_even_with_exit_zero() -> None:
    made = provider()
    result = made.finish(0, feed(made, recorded_lines("api_401")), "")
    assert result.outcome is Outcome.AUTH_ERROR


def test_stream_json_resume_failure_is_reported_for_a_fresh_start() -> None:
    made = provider()
    result = made.finish(1, feed(made, recorded_lines("unknown_resume")), "")
    assert result.outcome is Outcome.FAILED
    assert RESUME_FAILED in result.message
