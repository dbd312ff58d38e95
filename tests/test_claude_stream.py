"""Claude Code's stream-json, read, and the outcome of a finished run, judged.

Unit tests of :mod:`tmops_plugins.claude_stream`. Most inputs are real: the stdout, stderr and
exit code of Claude Code 2.1.329 recorded against a local fake of the Messages API
(``tests/data/claude/provider/``, described in its ``cases.json``). Cases the fake cannot make
the CLI produce (subscription usage-limit wording, older versions' shapes, SIGKILL) are built
as the reference (``claude-code-cli.md``) describes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from tmops_hookspecs import AgentEvent, AgentResult, Outcome
from tmops_plugins.claude_stream import (
    RESUME_FAILED,
    judge,
    parse_retry_after,
    parse_stream_line,
)

RECORDED = Path(__file__).parent / "data" / "claude" / "provider"
CASES: dict[str, dict[str, Any]] = json.loads((RECORDED / "cases.json").read_text("utf-8"))
#: 2026-01-10 12:00:00 UTC, the clock of every test that dates a reset.
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC).timestamp()
SESSION = "b9ba6de2-b1e6-48c8-bff9-bc557c738456"


def _zones_available() -> bool:
    try:
        ZoneInfo("Europe/Berlin")
    except ZoneInfoNotFoundError:
        return False
    return True


needs_zones = pytest.mark.skipif(not _zones_available(), reason="no time zone database")


def recorded_lines(name: str) -> list[str]:
    return (RECORDED / f"{name}.jsonl").read_text("utf-8").splitlines()


def events_of(lines: Sequence[str]) -> list[AgentEvent]:
    return [event for line in lines for event in parse_stream_line(line)]


def finish_recorded(name: str) -> AgentResult:
    case = CASES[name]
    return judge(case["returncode"], events_of(recorded_lines(name)), case["stderr"], now=NOW)


def line(**message: Any) -> str:
    return json.dumps(message)


def result_line(**fields: Any) -> str:
    """A result object with the stable fields of the reference, overridden by ``fields``."""
    base = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "api_error_status": None,
        "duration_ms": 120,
        "num_turns": 1,
        "session_id": "sess-1",
        "total_cost_usd": 0,
        "usage": {},
        "permission_denials": [],
    }
    return json.dumps({**base, **fields})


def finish_with(returncode: int, *lines: str, stderr: str = "") -> AgentResult:
    return judge(returncode, events_of(lines), stderr, now=NOW)


# --------------------------------------------------------------------------------------------
# Reading stream-json lines
# --------------------------------------------------------------------------------------------


def test_init_line_is_a_session_event() -> None:
    (event,) = parse_stream_line(recorded_lines("success")[0])
    assert event.kind == "session"
    assert event.session_id == SESSION
    assert dict(event.data) == {
        "model": "claude-opus-5-5",
        "cwd": "/tmp/rec/work",
        "claude_code_version": "2.1.329",
    }


def test_write_tool_use_is_progress_naming_the_file() -> None:
    (event,) = parse_stream_line(recorded_lines("success")[1])
    assert event.kind == "progress"
    assert event.message == "Write /tmp/rec/work/hello.txt"
    assert event.data["tool"] == "Write"
    assert event.session_id == SESSION


def test_bash_tool_use_shows_the_command() -> None:
    (event,) = parse_stream_line(recorded_lines("success")[3])
    assert event.message == "Bash: python -m pytest --version"


def test_long_bash_command_is_cut_to_80_characters() -> None:
    command = "python -m pytest " + "tests/test_x.py " * 20
    block = {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": command}}
    (event,) = parse_stream_line(line(type="assistant", message={"content": [block]}))
    assert event.message.startswith("Bash: python -m pytest tests/test_x.py")
    assert len(event.message.removeprefix("Bash: ")) == 80


def test_assistant_text_is_progress_of_its_first_200_characters() -> None:
    text = "All tests written. " * 30
    message = {"content": [{"type": "text", "text": text}]}
    (event,) = parse_stream_line(line(type="assistant", message=message, session_id="s"))
    assert event.kind == "progress"
    assert event.message == text[:200]


def test_one_event_per_content_block() -> None:
    content = [
        {"type": "text", "text": "Writing the tests."},
        {"type": "tool_use", "id": "t", "name": "Edit", "input": {"file_path": "/w/a.py"}},
    ]
    events = parse_stream_line(line(type="assistant", message={"content": content}))
    assert [event.message for event in events] == ["Writing the tests.", "Edit /w/a.py"]


def test_denied_tool_result_is_a_tool_error_progress_event() -> None:
    errors = [e for e in events_of(recorded_lines("denied")) if e.data.get("tool_error")]
    assert [event.message for event in errors] == ["tool error: This command requires approval"]


def test_successful_tool_result_means_nothing() -> None:
    assert parse_stream_line(recorded_lines("success")[2]) == []


def test_result_line_is_a_result_event() -> None:
    (event,) = parse_stream_line(recorded_lines("success")[-1])
    assert event.kind == "result"
    assert event.session_id == SESSION
    assert event.cost_usd == pytest.approx(0.0024)
    assert event.turns == 3
    assert event.message == "Done: wrote hello.txt and checked pytest."
    assert dict(event.data) == {
        "subtype": "success",
        "is_error": False,
        "api_error_status": None,
        "duration_ms": 409,
        "permission_denials": 0,
        "input_tokens": 300,
        "output_tokens": 60,
        "model": "claude-opus-5-5",
    }


def test_result_event_counts_permission_denials() -> None:
    (event,) = parse_stream_line(recorded_lines("denied")[-1])
    assert event.data["permission_denials"] == 1


def test_result_without_result_text_carries_its_errors() -> None:
    (event,) = parse_stream_line(recorded_lines("max_turns")[-1])
    assert event.message == "Reached maximum number of turns (2)"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not json at all",
        "{broken",
        "[1, 2]",
        '"a string"',
        "null",
        '{"no_type": 1}',
        '{"type": 3}',
        '{"type": "stream_event", "event": {}}',
        '{"type": "system", "subtype": "compact_boundary"}',
        '{"a":' * 100_000,
        "\x00\xff garbage",
    ],
)
def test_garbage_and_unknown_lines_mean_nothing(text: str) -> None:
    assert parse_stream_line(text) == []


# --------------------------------------------------------------------------------------------
# Judging a finished run: every row of the reference's error table
# --------------------------------------------------------------------------------------------


def test_success_carries_session_cost_turns_and_the_final_text() -> None:
    result = finish_recorded("success")
    assert result.outcome is Outcome.SUCCEEDED
    assert result.session_id == SESSION
    assert result.cost_usd == pytest.approx(0.0024)
    assert result.turns == 3
    assert result.message == "Done: wrote hello.txt and checked pytest."
    assert result.retry_after_s is None


def test_resumed_run_keeps_the_session_id() -> None:
    result = finish_recorded("resumed")
    assert not result.resume_failed
    assert result.outcome is Outcome.SUCCEEDED
    assert result.session_id == SESSION


def test_denied_tool_does_not_fail_the_run() -> None:
    assert finish_recorded("denied").outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize(
    ("name", "outcome", "words"),
    [
        ("api_401", Outcome.AUTH_ERROR, "HTTP 401"),
        ("not_logged_in", Outcome.AUTH_ERROR, "Not logged in"),
        ("api_400", Outcome.FAILED, "HTTP 400"),
        ("api_429", Outcome.TRANSIENT_ERROR, "HTTP 429"),
        ("api_usage", Outcome.TRANSIENT_ERROR, "HTTP 429"),
        ("api_500", Outcome.TRANSIENT_ERROR, "HTTP 500"),
        ("api_529", Outcome.TRANSIENT_ERROR, "HTTP 529"),
        ("refused", Outcome.TRANSIENT_ERROR, "ECONNREFUSED"),
        ("api_cut", Outcome.TRANSIENT_ERROR, "malformed response"),
        ("api_spend", Outcome.USAGE_LIMITED, "spend limit reached"),
        ("max_turns", Outcome.FAILED, "reached max turns"),
        ("bad_flag", Outcome.FAILED, "unknown option '--no-such-flag'"),
        ("killed", Outcome.CRASHED, "SIGTERM"),
    ],
)
def test_recorded_run_maps_to_its_outcome(name: str, outcome: Outcome, words: str) -> None:
    result = finish_recorded(name)
    assert result.outcome is outcome
    assert words in result.message


def test_api_error_keeps_the_session_of_its_result() -> None:
    result = finish_recorded("api_529")
    assert result.session_id == "eacb22d2-b27b-473a-ba1b-264f6e4340f9"
    assert result.turns == 1


@pytest.mark.parametrize("name", ["unknown_resume", "bad_resume_value"])
def test_recorded_resume_failure_says_so_and_names_no_session(name: str) -> None:
    result = finish_recorded(name)
    assert result.outcome is Outcome.FAILED
    assert RESUME_FAILED in result.message
    assert result.message.startswith("resume failed")
    assert result.session_id is None
    assert result.resume_failed  # the core reads the flag, not the words


def test_unknown_resume_id_with_only_stderr_is_a_resume_failure() -> None:
    # Claude Code 2.1.197 (the reference): message on stderr, exit 1, no JSON.
    result = finish_with(1, stderr=f"No conversation found with session ID: {SESSION}\n")
    assert result.outcome is Outcome.FAILED
    assert RESUME_FAILED in result.message
    assert SESSION in result.message
    assert result.session_id is None
    assert result.resume_failed


def test_bad_flag_with_only_stderr_fails_with_the_cli_message() -> None:
    result = finish_with(1, stderr="error: unknown option '--frobnicate'\n")
    assert result.outcome is Outcome.FAILED
    assert "unknown option '--frobnicate'" in result.message


def test_401_result_with_success_subtype_is_an_auth_error() -> None:
    result = finish_with(
        1,
        result_line(api_error_status=401, result="Invalid API key · Fix external API key"),
    )
    assert result.outcome is Outcome.AUTH_ERROR
    assert not result.outcome.retryable


@pytest.mark.parametrize("status", [429, 500, 502, 503, 529])
def test_rate_limit_and_server_errors_are_transient(status: int) -> None:
    result = finish_with(1, result_line(api_error_status=status, result=f"API Error: {status}"))
    assert result.outcome is Outcome.TRANSIENT_ERROR
    assert f"HTTP {status}" in result.message


def test_connection_refused_with_null_status_is_transient() -> None:
    text = "API Error: Unable to connect to API (ConnectionRefused)"
    assert finish_with(1, result_line(result=text)).outcome is Outcome.TRANSIENT_ERROR


def test_not_logged_in_is_an_auth_error() -> None:
    result = finish_with(1, result_line(result="Not logged in · Please run /login"))
    assert result.outcome is Outcome.AUTH_ERROR


@pytest.mark.parametrize(
    ("text", "retry_after_s"),
    [
        ("You've hit your limit · resets 3pm (UTC)", 3 * 3600.0),
        pytest.param(
            "Claude usage limit reached. Your limit will reset at 9am (America/Chicago).",
            3 * 3600.0,
            marks=needs_zones,
        ),
        pytest.param(
            "5-hour limit reached ∙ resets 6:20pm (Europe/Berlin)",
            5 * 3600.0 + 20 * 60,
            marks=needs_zones,
        ),
        ("Claude AI usage limit reached|1768050000", 3600.0),
        ("Usage limit reached", None),
    ],
)
def test_usage_limit_is_usage_limited_with_the_time_to_wait(
    text: str, retry_after_s: float | None
) -> None:
    result = finish_with(1, result_line(api_error_status=429, result=text))
    assert result.outcome is Outcome.USAGE_LIMITED
    assert result.message == text
    assert result.retry_after_s == retry_after_s


def test_usage_limit_reported_as_success_by_old_versions_is_usage_limited() -> None:
    text = "Claude AI usage limit reached|1768050000"
    result = finish_with(0, result_line(is_error=False, result=text))
    assert result.outcome is Outcome.USAGE_LIMITED
    assert result.retry_after_s == 3600.0


def test_max_turns_fails_saying_so() -> None:
    result = finish_with(
        1,
        result_line(
            subtype="error_max_turns", num_turns=4, errors=["Reached maximum number of turns (3)"]
        ),
    )
    assert result.outcome is Outcome.FAILED
    assert result.message.startswith("reached max turns")
    assert result.turns == 4


def test_max_budget_is_a_budget_exhausted_outcome_not_a_failure() -> None:
    result = finish_with(
        1, result_line(subtype="error_max_budget_usd", errors=["Reached maximum budget ($1)"],
                       total_cost_usd=1.02),
    )  # fmt: skip
    assert result.outcome is Outcome.BUDGET_EXHAUSTED
    assert not result.outcome.retryable
    assert "--max-budget-usd" in result.message
    assert "Reached maximum budget ($1)" in result.message
    assert result.cost_usd == pytest.approx(1.02)


def test_the_result_reports_its_tokens_and_the_session_its_model() -> None:
    init = json.dumps({"type": "system", "subtype": "init", "session_id": "sess-1",
                       "model": "claude-sonnet-4-5"})  # fmt: skip
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 200,
             "cache_read_input_tokens": 3000, "output_tokens": 45}  # fmt: skip
    result = finish_with(0, init, result_line(is_error=False, usage=usage, total_cost_usd=None))
    assert result.outcome is Outcome.SUCCEEDED
    assert (result.input_tokens, result.output_tokens) == (3210, 45)
    assert result.model == "claude-sonnet-4-5"
    assert result.cost_usd is None


def test_a_result_stopped_at_its_budget_counts_tokens_from_model_usage() -> None:
    # what 2.1.329 prints when it stops at --max-budget-usd: usage all 0, modelUsage filled
    zero = {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": 0}  # fmt: skip
    per_model = {"claude-opus-5-5": {"inputTokens": 2000000, "outputTokens": 30,
                                     "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0,
                                     "costUSD": 8.0006}}  # fmt: skip
    line = result_line(subtype="error_max_budget_usd", errors=["Reached maximum budget ($0.5)"],
                       usage=zero, modelUsage=per_model, total_cost_usd=8.0006)  # fmt: skip
    result = finish_with(1, line)
    assert result.outcome is Outcome.BUDGET_EXHAUSTED
    assert (result.input_tokens, result.output_tokens) == (2000000, 30)
    assert result.model == "claude-opus-5-5"


def test_a_result_without_usage_reports_no_tokens() -> None:
    result = finish_with(0, result_line(is_error=False, usage="none"))
    assert (result.input_tokens, result.output_tokens, result.model) == (None, None, None)


def test_error_during_execution_fails() -> None:
    result = finish_with(
        1, result_line(subtype="error_during_execution", errors=["Tool crashed: boom"])
    )
    assert result.outcome is Outcome.FAILED
    assert "error during execution: Tool crashed: boom" in result.message


def test_is_error_fails_even_with_exit_code_zero() -> None:
    result = finish_with(0, result_line(result="Something went wrong"))
    assert result.outcome is Outcome.FAILED


def test_success_result_with_nonzero_exit_is_not_a_success() -> None:
    result = finish_with(1, result_line(is_error=False, result="Done."))
    assert result.outcome is Outcome.FAILED
    assert "exit code 1" in result.message


def test_killed_by_signal_mid_stream_crashes_with_the_stderr_tail() -> None:
    partial = recorded_lines("success")[:2]
    result = finish_with(-9, *partial, stderr="starting\nwriting hello.txt\n")
    assert result.outcome is Outcome.CRASHED
    assert result.session_id == SESSION
    assert "SIGKILL" in result.message
    assert "writing hello.txt" in result.message


def test_exit_zero_without_a_result_line_is_a_crash() -> None:
    result = finish_with(0, recorded_lines("success")[0])
    assert result.outcome is Outcome.CRASHED
    assert "without a result" in result.message


def test_last_result_line_decides() -> None:
    result = finish_with(0, result_line(result="old"), recorded_lines("success")[-1])
    assert result.outcome is Outcome.SUCCEEDED


def test_judge_is_usable_without_a_provider() -> None:
    events: Sequence[AgentEvent] = events_of(recorded_lines("api_529"))
    assert judge(1, events, "", now=NOW).outcome is Outcome.TRANSIENT_ERROR


# --------------------------------------------------------------------------------------------
# Dating a reset
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("resets 3pm (UTC)", 3 * 3600.0),
        ("resets 11am (UTC)", 23 * 3600.0),  # passed today: tomorrow's
        ("resets at midnight UTC", 12 * 3600.0),
        ("resets 14:30 (UTC)", 2.5 * 3600),
        ("resets Jan 12 at 4pm (UTC)", 2 * 86400 + 4 * 3600.0),
        ("resets Jan 10 at 9am (UTC)", 0.0),
        ("try again in 2h 30m", 9000.0),
        ("retry after 37 seconds", 37.0),
        ("Retry-After: 37", 37.0),
        ("resets in 45 minutes", 2700.0),
        ("usage limit reached|1768050000", 3600.0),
        ("This is a server-side issue, usually temporary — try again in a moment.", None),
        ("no time at all", None),
        ("resets Feb 30 (UTC)", None),
        ("resets 13pm (UTC)", None),
        ("retry after 5 fortnights", None),
    ],
)
def test_retry_after_is_read_from_the_text(text: str, seconds: float | None) -> None:
    assert parse_retry_after(text, NOW) == seconds


@needs_zones
def test_retry_after_honours_a_named_zone() -> None:
    # 12:00 UTC is 13:00 in Berlin (winter time).
    assert parse_retry_after("resets 6:20pm (Europe/Berlin)", NOW) == 5 * 3600 + 20 * 60
