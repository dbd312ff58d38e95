"""The ``codex`` provider on output recorded from the real CLI (tests/data/codex/)."""

from __future__ import annotations

from pathlib import Path

from tmops_hookspecs import AgentEvent, AgentRequest, Outcome
from tmops_plugins.codex_provider import ENV_PREFIXES, create_provider
from tmops_plugins.codex_stream import judge_codex, parse_codex_line

RECORDINGS = Path(__file__).resolve().parent / "data" / "codex"


def events_of(name: str) -> list[AgentEvent]:
    lines = (RECORDINGS / name).read_text().splitlines()
    return [event for line in lines for event in parse_codex_line(line)]


def test_a_completed_turn_gives_session_progress_and_tokens_without_cost() -> None:
    events = events_of("success.jsonl")
    result = judge_codex(0, events, "", now=0.0)

    assert events[0].kind == "session"
    assert result.session_id == "01a236b6-b37d-7461-a76a-e2b377e36fa3"
    commands = [event for event in events if event.data.get("tool") == "command_execution"]
    assert commands[0].message == "command: /bin/bash -lc 'echo hi > f.txt && cat f.txt'"
    assert "tool_error" not in commands[1].data
    assert (result.outcome, result.input_tokens, result.output_tokens) == (
        Outcome.SUCCEEDED,
        200,
        40,
    )
    assert result.cost_usd is None  # tmops prices the tokens from providers.codex.prices


def test_a_401_is_an_auth_error() -> None:
    result = judge_codex(1, events_of("auth_error.jsonl"), "", now=0.0)
    assert result.outcome is Outcome.AUTH_ERROR
    assert "401 Unauthorized" in result.message


def test_a_429_after_the_retries_is_transient() -> None:
    result = judge_codex(1, events_of("rate_limited.jsonl"), "", now=0.0)
    assert result.outcome is Outcome.TRANSIENT_ERROR
    assert result.session_id == "01a236b5-19f2-79f2-aaf7-710e401fa577"


def test_a_transient_error_carries_the_wait_it_names() -> None:
    line = '{"type":"turn.failed","error":{"message":"unexpected status 503: try again in 7s"}}'
    result = judge_codex(1, parse_codex_line(line), "", now=0.0)
    assert (result.outcome, result.retry_after_s) == (Outcome.TRANSIENT_ERROR, 7.0)


def test_exceeded_quota_is_a_usage_limit_with_its_reset() -> None:
    assert judge_codex(1, events_of("quota.jsonl"), "", now=0.0).outcome is Outcome.USAGE_LIMITED
    line = (
        '{"type":"turn.failed","error":{"message":"You\'ve hit your usage limit. '
        'Try again in 2h 30m."}}'
    )
    result = judge_codex(1, parse_codex_line(line), "", now=0.0)
    assert (result.outcome, result.retry_after_s) == (Outcome.USAGE_LIMITED, 9000.0)


def test_an_unknown_thread_is_a_failed_resume_and_a_kill_a_crash() -> None:
    stderr = "Error: thread/resume: thread/resume failed: no rollout found for thread id 0"
    resumed = judge_codex(1, [], stderr, now=0.0)
    killed = judge_codex(-9, events_of("success.jsonl")[:3], "", now=0.0)

    assert resumed.outcome is Outcome.FAILED
    assert resumed.resume_failed  # the core reads the flag and starts a fresh session
    assert "could not be resumed" in resumed.message
    assert resumed.session_id is None
    assert killed.outcome is Outcome.CRASHED
    assert "SIGKILL" in killed.message


def test_garbage_lines_mean_nothing() -> None:
    assert parse_codex_line("WARNING: proceeding") == []
    assert parse_codex_line('{"type":"turn.started"}') == []
    assert parse_codex_line("{not json") == []


def test_the_argv_resumes_after_the_exec_options_and_ends_with_the_prompt(
    tmp_path: Path,
) -> None:
    provider = create_provider({"model": "gpt-x", "args": ["-c", "k=v"], "env": {"A": "1"}})
    request = AgentRequest(
        feature="f",
        run="r",
        phase="tester",
        role_instructions="Write tests.",
        prompt="-You are the TESTER.",
        working_dir=tmp_path,
        extra_dirs=(tmp_path / "cp",),
        resume_session_id="abc",
    )
    invocation = provider.build_invocation(request)

    assert invocation.argv == (
        "codex", "exec", "--json", "--sandbox", "workspace-write",
        f"--cd={tmp_path}", f"--add-dir={tmp_path / 'cp'}",
        "--model=gpt-x", "-c", "k=v", "resume", "abc",
        "--", "-You are the TESTER.\n\nWrite tests.",
    )  # fmt: skip
    assert dict(invocation.env) == {"A": "1"}
    assert provider.can_resume
    assert ENV_PREFIXES == ("OPENAI_", "CODEX_")
