"""The claude-code provider: its settings, its argv, and how it reads and judges a run.

The provider is pure, so it is tested by feeding it output. Reading stream-json and judging a
finished run are :mod:`tmops_plugins.claude_stream`'s, tested in ``test_claude_stream.py``;
here the provider is checked to do both over every run recorded from Claude Code 2.1.329
(``tests/data/claude/provider/``, described in its ``cases.json``).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from tmops_core.config import ProviderConfig
from tmops_core.plugins import create_plugin_manager
from tmops_hookspecs import AgentEvent, AgentRequest, AgentResult, ConfigError, Provider
from tmops_plugins.claude_code import (
    ClaudeCodeProvider,
    create_provider,
    read_settings,
    split_managed_args,
)

RECORDED = Path(__file__).parent / "data" / "claude" / "provider"
CASES: dict[str, dict[str, Any]] = json.loads((RECORDED / "cases.json").read_text("utf-8"))
#: 2026-01-10 12:00:00 UTC, the clock of every test that dates a reset.
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC).timestamp()
SESSION = "b9ba6de2-b1e6-48c8-bff9-bc557c738456"


def provider(**settings: Any) -> ClaudeCodeProvider:
    """A provider with a fixed clock (``NOW``) for dated resets."""
    return ClaudeCodeProvider(read_settings("claude-code", settings), clock=lambda: NOW)


def request(**overrides: Any) -> AgentRequest:
    fields: dict[str, Any] = {
        "feature": "auth",
        "run": "initial",
        "phase": "tester",
        "role_instructions": "# Role: Tester",
        "prompt": "You are the TESTER.",
        "working_dir": Path("/work/wt"),
    }
    return AgentRequest(**{**fields, **overrides})


def recorded_lines(name: str) -> list[str]:
    return (RECORDED / f"{name}.jsonl").read_text("utf-8").splitlines()


def finish_recorded(name: str) -> AgentResult:
    case = CASES[name]
    made = provider()
    events = [event for line in recorded_lines(name) for event in made.parse_line(line)]
    return made.finish(case["returncode"], events, case["stderr"])


# --------------------------------------------------------------------------------------------
# Registration and settings
# --------------------------------------------------------------------------------------------


def test_entry_point_registers_claude_code_provider() -> None:
    registered = create_plugin_manager(autoload=True).providers()
    assert {"claude-code", "command"} <= set(registered)
    made = registered["claude-code"].spec.factory(attrs.asdict(ProviderConfig(), recurse=False))
    assert isinstance(made, ClaudeCodeProvider)
    assert isinstance(made, Provider)


@pytest.mark.parametrize("recurse", [True, False])
def test_factory_takes_the_config_model_as_a_mapping(recurse: bool) -> None:
    config = ProviderConfig(args=("--verbose",), env={"A": "1"}, max_turns=3, model="opus")
    made = create_provider(attrs.asdict(config, recurse=recurse))
    assert made.settings.max_turns == 3
    assert made.settings.env == {"A": "1"}


def test_factory_leaves_keys_it_does_not_use_to_the_core() -> None:
    made = create_provider({"timeout_s": 5, "instructions_dir": "x", "a_future_key": [1]})
    assert made.program == "claude"


def test_unknown_permission_mode_is_a_config_error_listing_the_modes() -> None:
    with pytest.raises(ConfigError) as caught:
        create_provider({"permission_mode": "yolo"})
    assert "permission_mode" in str(caught.value)
    assert "'yolo'" in str(caught.value)
    assert "acceptEdits" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("args", "-p --resume"),
        ("args", ["--model", 3]),
        ("env", {"DEBUG": 1}),
        ("env", ["A=1"]),
        ("max_turns", "5"),
        ("max_turns", True),
        ("max_turns", 0),
        ("command", ""),
        ("model", 3),
        ("permission_mode", ["plan"]),
    ],
)
def test_wrong_setting_types_are_config_errors_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        read_settings("claude-code", {key: value})
    assert key in str(caught.value)


# --------------------------------------------------------------------------------------------
# The invocation
# --------------------------------------------------------------------------------------------


def test_argv_shape_and_order() -> None:
    invocation = provider().build_invocation(request(extra_dirs=[Path("/work/cp")]))
    assert invocation.argv == (
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--append-system-prompt",
        "# Role: Tester",
        "--permission-mode",
        "acceptEdits",
        "--add-dir",
        "/work/cp",
        "--",
        "You are the TESTER.",
    )
    assert invocation.stdin is None


def test_configured_command_and_permission_mode_are_used() -> None:
    made = provider(command="/opt/claude/bin/claude", permission_mode="bypassPermissions")
    argv = made.build_invocation(request()).argv
    assert argv[0] == "/opt/claude/bin/claude"
    assert argv[argv.index("--permission-mode") + 1] == "bypassPermissions"


def test_resume_session_id_adds_resume_flag() -> None:
    argv = provider().build_invocation(request(resume_session_id=SESSION)).argv
    assert argv[argv.index("--resume") + 1] == SESSION


def test_no_resume_flag_without_a_session() -> None:
    assert "--resume" not in provider().build_invocation(request()).argv


def test_max_turns_of_the_request_wins_over_the_settings() -> None:
    argv = provider(max_turns=50).build_invocation(request(max_turns=7)).argv
    assert argv[argv.index("--max-turns") + 1] == "7"


def test_max_turns_falls_back_to_the_settings() -> None:
    argv = provider(max_turns=50).build_invocation(request()).argv
    assert argv[argv.index("--max-turns") + 1] == "50"


def test_no_max_turns_flag_when_unset() -> None:
    assert "--max-turns" not in provider().build_invocation(request()).argv


def test_what_is_left_of_the_budget_goes_to_the_cli_before_the_prompt() -> None:
    argv = provider().build_invocation(request(max_budget_usd=1.25)).argv
    assert argv[argv.index("--max-budget-usd") + 1] == "1.250000"
    assert argv.index("--max-budget-usd") < argv.index("--")


def test_no_budget_flag_without_a_budget_and_the_configs_own_is_dropped() -> None:
    made = provider(args=("--max-budget-usd", "99", "--debug"))
    assert "--max-budget-usd" not in made.build_invocation(request()).argv
    assert made.ignored_args == ("--max-budget-usd", "99")


def test_model_from_the_settings() -> None:
    argv = provider(model="claude-sonnet-4-5").build_invocation(request()).argv
    assert argv[argv.index("--model") + 1] == "claude-sonnet-4-5"


def test_allowed_tools_are_one_comma_joined_item() -> None:
    tools = ("Read", "Write", "Bash(python -m pytest:*)", "Bash(git commit:*)")
    argv = provider().build_invocation(request(allowed_tools=tools)).argv
    assert argv[argv.index("--allowedTools") + 1] == (
        "Read,Write,Bash(python -m pytest:*),Bash(git commit:*)"
    )


def test_no_allowed_tools_flag_without_tools() -> None:
    assert "--allowedTools" not in provider().build_invocation(request()).argv


def test_every_extra_dir_follows_add_dir() -> None:
    dirs = [Path("/work/cp"), Path("/srv/team docs")]
    argv = provider().build_invocation(request(extra_dirs=dirs)).argv
    start = argv.index("--add-dir")
    assert argv[start + 1 : start + 3] == ("/work/cp", "/srv/team docs")


def test_seed_args_are_dropped_and_reported() -> None:
    made = provider(args=["-p", "--resume", "--output-format", "json"])
    assert made.ignored_args == ("-p", "--resume", "--output-format", "json")
    argv = made.build_invocation(request()).argv
    assert argv.count("-p") == 1
    assert argv.count("--output-format") == 1
    assert argv[argv.index("--output-format") + 1] == "stream-json"
    assert "--resume" not in argv
    assert "json" not in argv


@pytest.mark.parametrize(
    ("args", "dropped"),
    [
        (["--print"], ["--print"]),
        (["--verbose"], ["--verbose"]),
        (["--output-format=json"], ["--output-format=json"]),
        (["--append-system-prompt", "be brief"], ["--append-system-prompt", "be brief"]),
        (["--permission-mode", "plan"], ["--permission-mode", "plan"]),
        (["--resume", "abc"], ["--resume", "abc"]),
        (["-r", "abc"], ["-r", "abc"]),
        (["--add-dir", "/a", "/b"], ["--add-dir", "/a", "/b"]),
    ],
)
def test_managed_flags_are_dropped_with_their_values(args: list[str], dropped: list[str]) -> None:
    kept, ignored = split_managed_args([*args, "--disallowedTools", "WebFetch"])
    assert ignored == tuple(dropped)
    assert kept == ("--disallowedTools", "WebFetch")


def test_other_args_go_before_the_prompt() -> None:
    argv = provider(args=["--disallowedTools", "WebFetch"]).build_invocation(request()).argv
    assert argv[-4:] == ("--disallowedTools", "WebFetch", "--", "You are the TESTER.")


def test_prompt_with_shell_metacharacters_is_one_item() -> None:
    prompt = "Fix it; rm -rf / $(touch pwned) `id` \"quoted\" 'single'\nsecond line | cat &"
    argv = provider().build_invocation(request(prompt=prompt)).argv
    assert argv[-1] == prompt
    assert argv[-2] == "--"


def test_prompt_starting_with_a_dash_stays_the_prompt() -> None:
    # The CLI reads `-p "--x"` as an unknown option; after `--` it is the prompt.
    argv = provider().build_invocation(request(prompt="--help me")).argv
    assert argv[-2:] == ("--", "--help me")


def test_instructions_starting_with_a_dash_are_passed_in_equals_form() -> None:
    instructions = "---\nrole: tester\n---\nWrite tests."
    argv = provider().build_invocation(request(role_instructions=instructions)).argv
    assert f"--append-system-prompt={instructions}" in argv
    assert "--append-system-prompt" not in argv


def test_env_is_the_configured_env_and_nothing_else() -> None:
    env = {"ANTHROPIC_BASE_URL": "http://gateway:8080", "IS_SANDBOX": "1"}
    invocation = provider(env=env, permission_mode="bypassPermissions").build_invocation(request())
    assert dict(invocation.env) == env
    assert dict(provider().build_invocation(request()).env) == {}


def test_invocation_argv_reaches_a_real_program_unchanged(tmp_path: Path) -> None:
    program = tmp_path / "fake-claude"
    program.write_text(
        f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n", "utf-8"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    marker = tmp_path / "pwned"
    prompt = f'-x; touch {marker} $(touch {marker}) `touch {marker}` "a b"\nnext'
    made = provider(command=str(program))
    invocation = made.build_invocation(request(prompt=prompt, extra_dirs=[tmp_path]))
    done = subprocess.run(  # the argv under test, no shell
        invocation.argv,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **invocation.env},
        timeout=60,
    )
    assert json.loads(done.stdout) == list(invocation.argv[1:])
    assert json.loads(done.stdout)[-1] == prompt
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Reading and judging a recorded run
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_recorded_line_is_read_without_error(name: str) -> None:
    for text in recorded_lines(name):
        assert all(isinstance(event, AgentEvent) for event in provider().parse_line(text))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_message_is_readable_text(name: str) -> None:
    message = finish_recorded(name).message
    assert message.strip()
    assert "\n" not in message
    assert len(message) <= 1000
