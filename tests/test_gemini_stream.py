"""The ``gemini`` provider's argv, stream reading and outcome mapping, on output recorded from
the real Gemini CLI 0.61.0 (``tests/data/gemini/``) and on the error shapes its source shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tmops_hookspecs import AgentEvent, AgentRequest, ConfigError, Outcome
from tmops_plugins.gemini_provider import create_provider
from tmops_plugins.gemini_stream import judge, parse_stream_line

DATA = Path(__file__).resolve().parent / "data" / "gemini"


def events_of(name: str) -> list[AgentEvent]:
    lines = (DATA / name).read_text().splitlines()
    return [event for line in lines for event in parse_stream_line(line)]


def request(tmp_path: Path, **extra: object) -> AgentRequest:
    fields: dict[str, object] = {
        "feature": "slug",
        "run": "initial",
        "phase": "tester",
        "prompt": "-starts like a flag",
        "role_instructions": "You are the TESTER.",
        "working_dir": tmp_path,
        **extra,
    }
    return AgentRequest(**fields)  # type: ignore[arg-type]


def test_a_recorded_run_gives_session_progress_tokens_and_success() -> None:
    events = events_of("ok.jsonl")
    assert events[0].kind == "session"
    assert events[0].session_id == "417ef478-918d-4f8a-b42f-eb127da7c66e"
    tools = [e.data for e in events if e.kind == "progress" and "tool" in e.data]
    assert [t["tool"] for t in tools] == ["write_file", "run_shell_command"]
    assert tools[1]["command"] == "cat x.txt"
    result = judge(0, events, "", now=0.0)
    assert result.outcome is Outcome.SUCCEEDED
    assert result.session_id == "417ef478-918d-4f8a-b42f-eb127da7c66e"
    assert (result.input_tokens, result.output_tokens) == (200, 14)
    assert result.cost_usd is None  # tmops prices the tokens
    assert result.model == "gemini-2.5-pro"


def test_a_recorded_401_is_an_auth_error() -> None:
    result = judge(1, events_of("401.jsonl"), "", now=0.0)
    assert result.outcome is Outcome.AUTH_ERROR
    assert "API key not valid" in result.message


def test_a_recorded_daily_quota_is_a_usage_limit_until_midnight_pacific() -> None:
    # 2026-12-02 12:00 UTC is 04:00 in Los Angeles: 20 hours to its midnight
    noon_utc = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()
    result = judge(1, events_of("daily-quota.jsonl"), "", now=noon_utc)
    assert result.outcome is Outcome.USAGE_LIMITED
    assert "daily quota" in result.message
    assert result.retry_after_s == 20 * 3600


def test_a_recorded_turn_limit_fails_naming_it() -> None:
    # recorded with model.maxSessionTurns: 1 in the CLI's settings; it exits 53
    result = judge(53, events_of("turn-limit.jsonl"), "", now=0.0)
    assert result.outcome is Outcome.FAILED
    assert "turn limit" in result.message
    assert "maxSessionTurns" in result.message
    assert (result.input_tokens, result.output_tokens) == (100, 7)


def result_line(message: str) -> str:
    return json.dumps(
        {"type": "result", "status": "error", "error": {"type": "unknown", "message": message}}
    )


@pytest.mark.parametrize(
    ("message", "outcome", "retry_after"),
    [
        (
            '[API Error: {"error":{"code":503,"message":"overloaded"}}]',
            Outcome.TRANSIENT_ERROR,
            None,
        ),
        (
            '{"error":{"code":429,"message":"rate","details":[{"retryDelay":"37s"}]}}',
            Outcome.TRANSIENT_ERROR,
            37.0,
        ),
        (
            '{"error":{"code":429,"message":"Quota exceeded for quota metric per day; '
            'Please retry in 3600s"}}',
            Outcome.USAGE_LIMITED,
            3600.0,
        ),
        ('{"error":{"code":403,"status":"PERMISSION_DENIED"}}', Outcome.AUTH_ERROR, None),
        ("fetch failed: ECONNREFUSED", Outcome.TRANSIENT_ERROR, None),
        ('{"error":{"code":400,"message":"bad"}}', Outcome.FAILED, None),
    ],
)
def test_api_errors_map_to_outcomes(
    message: str, outcome: Outcome, retry_after: float | None
) -> None:
    result = judge(1, parse_stream_line(result_line(message)), "", now=0.0)
    assert result.outcome is outcome
    assert result.retry_after_s == retry_after


@pytest.mark.parametrize(
    ("code", "outcome", "words"),
    [
        (41, Outcome.AUTH_ERROR, "authentication"),
        (42, Outcome.FAILED, "bad input"),
        (53, Outcome.FAILED, "turn limit"),
        (130, Outcome.CANCELLED, "cancelled"),
        (-9, Outcome.CRASHED, "SIGKILL"),
        (1, Outcome.CRASHED, "without a result"),
    ],
)
def test_exit_codes_without_a_result(code: int, outcome: Outcome, words: str) -> None:
    result = judge(code, events_of("ok.jsonl")[:2], "boom", now=0.0)
    assert result.outcome is outcome
    assert words in result.message


def test_an_unknown_session_is_a_failed_resume() -> None:
    stderr = 'Error: Invalid session identifier "x". Use --list-sessions to see sessions.'
    result = judge(42, [], stderr, now=0.0)
    assert result.outcome is Outcome.FAILED
    assert result.resume_failed  # the core reads the flag and starts a fresh session
    assert "could not be resumed" in result.message
    assert result.session_id is None


def test_garbage_lines_mean_nothing() -> None:
    assert parse_stream_line("YOLO mode is enabled.") == []
    assert parse_stream_line("{not json") == []
    assert parse_stream_line('{"type": "unknown"}') == []


def test_argv_resumes_and_keeps_a_dash_prompt_a_prompt(tmp_path: Path) -> None:
    provider = create_provider({"command": "/bin/gemini", "model": "gemini-2.5-pro"})
    argv = provider.build_invocation(request(tmp_path)).argv
    assert list(argv[:3]) == ["/bin/gemini", "--output-format", "stream-json"]
    assert argv[argv.index("--approval-mode") + 1] == "yolo"
    assert "--model=gemini-2.5-pro" in argv
    assert argv[-1] == "--prompt=You are the TESTER.\n\n-starts like a flag"
    resumed = provider.build_invocation(request(tmp_path, resume_session_id="abc")).argv
    assert "--resume=abc" in resumed
    assert resumed[-1] == "--prompt=-starts like a flag"
    assert provider.can_resume is True


def test_permission_mode_maps_or_is_refused() -> None:
    assert create_provider({"permission_mode": "plan"}).approval_mode == "plan"
    assert create_provider({"permission_mode": "acceptEdits"}).approval_mode == "yolo"
    with pytest.raises(ConfigError, match="permission_mode"):
        create_provider({"permission_mode": "everything"})
