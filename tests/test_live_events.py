"""An agent's progress in the run's trail and how it is shown: what the provider understood
becomes ``agent.tool``, ``agent.message`` and ``agent.cost`` events, safe to print (escape
sequences out, secrets redacted), thinned when the agent floods; the plain lines and the live
view's picture read them."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tmops_core.orchestration.progress import AgentProgress, terminal_safe
from tmops_core.plugins import create_plugin_manager
from tmops_core.surfaces.follow import format_event
from tmops_core.surfaces.live import RunPicture, seconds
from tmops_hookspecs import AgentEvent, PhaseSpec
from tmops_plugins.claude_stream import parse_stream_line

WORKTREE = Path("/p/.tmops/worktrees/slugify")
CHECKPOINTS = Path("/p/.tmops/slugify/runs/initial/checkpoints")
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m \x9b1;1H\u202eevil\x07\x08 end"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def tester() -> PhaseSpec:
    return create_plugin_manager().phases()["tester"].spec


def _progress(tester: PhaseSpec, clock: Clock | None = None) -> tuple[AgentProgress, list[Any]]:
    recorded: list[Any] = []
    progress = AgentProgress(
        lambda kind, **data: recorded.append((kind, data)), tester, 2,
        roots=(WORKTREE, CHECKPOINTS), clock=clock or Clock(),
    )  # fmt: skip
    return progress, recorded


def _stream(*blocks: dict[str, Any]) -> list[AgentEvent]:
    line = json.dumps({"type": "assistant", "session_id": "s", "message": {"content": blocks}})
    return parse_stream_line(line)


def _tool(name: str, **arguments: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": "t1", "name": name, "input": arguments}


def test_terminal_safe_takes_out_escapes_controls_and_secrets() -> None:
    shown = terminal_safe(f"{HOSTILE} ANTHROPIC_API_KEY=sk-ant-abcdefghijklmnopqrstu")
    for forbidden in ("\x1b", "\x9b", "\u202e"):
        assert forbidden not in shown
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in shown)
    assert shown.startswith("red evil")
    assert shown.endswith("***redacted***")
    assert "sk-ant" not in shown
    assert terminal_safe("x" * 500, 10) == "x" * 9 + "…"
    assert terminal_safe("two\nlines\tand  spaces") == "two lines and spaces"


def test_tool_calls_become_short_targets_relative_to_the_worktree(tester: PhaseSpec) -> None:
    progress, recorded = _progress(tester)
    for block in (
        _tool("Write", file_path=f"{WORKTREE}/tests/test_slug.py", content="..."),
        _tool("Bash", command="/usr/local/bin/python3.12 -m pytest -q", description="tests"),
        _tool("Write", file_path=f"{CHECKPOINTS}/003-tests-complete.md", content="..."),
        _tool("TodoWrite"),
        {"type": "text", "text": f"All six tests fail, as they should.\nDetails: {HOSTILE}"},
    ):
        for event in _stream(block):
            progress.record(event)
    base = {"phase": "tester", "role": "tester", "attempt": 2}
    assert recorded == [
        ("agent.tool", {**base, "tool": "Write", "target": "tests/test_slug.py"}),
        ("agent.tool", {**base, "tool": "Bash", "target": "python3.12 -m pytest -q"}),
        ("agent.tool", {**base, "tool": "Write", "target": "003-tests-complete.md"}),
        ("agent.tool", {**base, "tool": "TodoWrite", "target": ""}),
        ("agent.message", {**base, "text": "All six tests fail, as they should."}),
    ]


def test_a_flood_is_thinned_counted_and_its_last_event_kept(tester: PhaseSpec) -> None:
    clock = Clock()
    progress, recorded = _progress(tester, clock)
    for number in range(100):  # all at the same instant: only the burst passes
        progress.record(AgentEvent(kind="progress", message=f"line {number}"))
    assert len(recorded) == 30
    clock.now += 1.0  # four more a second
    progress.record(AgentEvent(kind="progress", message="line 100"))
    assert recorded[-1] == (
        "agent.message",
        {"phase": "tester", "role": "tester", "attempt": 2, "text": "line 100", "skipped": 70},
    )
    for number in range(101, 120):
        progress.record(AgentEvent(kind="progress", message=f"line {number}"))
    progress.flush()  # the attempt ended: the last line is not lost
    assert recorded[-1][1]["text"] == "line 119"
    assert len(recorded) < 40


def test_cost_is_recorded_as_reported_not_more_often_than_every_two_seconds(
    tester: PhaseSpec,
) -> None:
    clock = Clock()
    progress, recorded = _progress(tester, clock)
    for cost in (0.01, 0.02, 0.03):
        progress.record(AgentEvent(kind="cost", cost_usd=cost))
    clock.now += 2.5
    progress.record(AgentEvent(kind="cost", cost_usd=0.04))
    progress.record(AgentEvent(kind="result", cost_usd=0.05, message="done"))
    progress.flush()
    assert [data["cost_usd"] for kind, data in recorded if kind == "agent.cost"] == [
        0.01, 0.04, 0.05
    ]  # fmt: skip


def _event(kind: str, seconds_in: float, **data: Any) -> dict[str, Any]:
    moment = datetime(2026, 12, 2, 10, 0, tzinfo=UTC) + timedelta(seconds=seconds_in)
    stamp = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"id": 1, "event_type": kind, "timestamp": stamp, "run": "initial", "data": data}


def test_plain_lines_name_the_role_and_never_carry_escapes() -> None:
    tool = _event("agent.tool", 1, role="tester", tool="Write", target="tests/test_slug.py")
    assert format_event(tool) == "10:00:01 tester: Write tests/test_slug.py"
    bash = _event("agent.tool", 2, role="tester", tool="Bash", target="python -m pytest", skipped=3)
    assert format_event(bash) == "10:00:02 tester: Bash python -m pytest (+3 more)"
    said = _event("agent.message", 3, role="tester", text=HOSTILE)
    hostile = _event("orchestration.gate.checked", 4, reason=HOSTILE)
    for line in (format_event(said), format_event(hostile)):
        for forbidden in ("\x1b", "\x07", "\u202e"):
            assert forbidden not in line
    assert format_event(_event("agent.cost", 5, role="tester", cost_usd=0.125)) == (
        "10:00:05 tester: cost so far $0.1250"
    )


def _status(state: str, phases: list[tuple[str, str]], cost: float) -> dict[str, Any]:
    return {
        "status": state, "run": "initial", "elapsed_s": 75.0, "cost_usd": cost,
        "phase_progress": {"phases": [
            {"phase": name, "role": name, "status": status} for name, status in phases
        ]},
    }  # fmt: skip


def test_the_live_picture_shows_phase_times_cost_and_the_latest_actions() -> None:
    now = datetime(2026, 12, 2, 10, 0, 40, tzinfo=UTC)
    picture = RunPicture("slugify", now=lambda: now)
    for event in (
        _event("orchestration.session.started", 0, phase="orchestrator", attempt=1),
        _event(
            "orchestration.phase.transition",
            12,
            **{"from": "orchestrator", "to": "tester", "duration_s": 12.0},
        ),
        _event("orchestration.session.started", 13, phase="tester", attempt=1),
        _event("agent.tool", 14, role="tester", tool="Write", target="tests/test_slug.py"),
        _event("agent.message", 15, role="tester", text="[bold]not markup[/bold]"),
        _event("agent.cost", 16, role="tester", cost_usd=0.25),
    ):
        picture.event(event)
    picture.status(_status("running", [("orchestrator", "completed"), ("tester", "in_progress"),
                                       ("implementer", "pending")], cost=1.0))  # fmt: skip
    assert picture.phase_time("orchestrator", "completed") == 12.0
    assert picture.phase_time("tester", "in_progress") == 27.0
    assert picture.phase_time("implementer", "pending") is None
    assert picture.cost == 1.25
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    console.print(picture.render())
    text = console.export_text()
    assert "slugify  running  run initial  elapsed 1 min 15 s  cost $1.2500" in text
    for needle in ("✓ completed", "12.0 s", "▶ in_progress", "27.0 s", "· pending"):
        assert needle in text
    assert "10:00:14 tester: Write tests/test_slug.py" in text
    assert "[bold]not markup[/bold]" in text  # an agent's text is never rich markup
    picture.event(_event("orchestration.session.ended", 17, phase="tester", attempt=1))
    assert picture.cost == 1.0  # the attempt's cost is the run's now (next status read)


def test_seconds_reads_well_at_every_scale() -> None:
    assert [seconds(None), seconds(4.25), seconds(185), seconds(3725)] == [
        "-", "4.2 s", "3 min 05 s", "1 h 02 min"
    ]  # fmt: skip


#: what Claude Code 2.1.329 prints while it cannot reach its API (minutes of silence before,
#: now shown): the first line as it printed it with ANTHROPIC_BASE_URL on a closed port and
#: CLAUDE_CODE_MAX_RETRIES=2; the second with the HTTP status an overloaded API answers
API_RETRIES = [
    '{"type":"system","subtype":"api_retry","attempt":1,"max_retries":2,"retry_delay_ms":621,'
    '"error_status":null,"error":"unknown","session_id":"bb7db60a-6ecc-42f9-8511-17a995ccc3d5",'
    '"uuid":"d1f072b2-f9d3-48b2-8162-76814a6980a0"}',
    '{"type":"system","subtype":"api_retry","attempt":2,"max_retries":2,"retry_delay_ms":1166,'
    '"error_status":529,"error":"overloaded","session_id":"bb7db60a-6ecc-42f9-8511-17a995ccc3d5",'
    '"uuid":"c3f1dc7a-8515-4caf-bbd7-48102e93b7c4"}',
]


def test_an_api_retry_of_claude_code_is_shown_as_it_happens(tester: PhaseSpec) -> None:
    progress, recorded = _progress(tester)
    for line in API_RETRIES:
        for event in parse_stream_line(line):
            progress.record(event)
    assert [data["text"] for _, data in recorded] == [
        "API retry 1/2 in 0.6 s (unknown)",
        "API retry 2/2 in 1.2 s (HTTP 529)",
    ]
