"""The fake Messages API of ``tests/fake_anthropic.py`` alone, over HTTP: no binary needed.

Requests are built as the CLI sends them, with the real tmops prompts; the answers are checked
against the Anthropic streaming format and the script's faults.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .claude_real_support import FEATURE, RUN, Project, make_project, phase_prompt
from .fake_anthropic import FakeAnthropic, HttpError
from .fake_tdd_script import TEST_FILE, TEST_SOURCE, tdd_script


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def call(url: str, method: str, path: str, body: Any = None) -> tuple[int, str, bytes]:
    """One request to the fake: status, content type, raw answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "x-api-key": "dummy"}
        connection.request(method, path, body=payload, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.getheader("Content-Type") or "", answer.read()
    finally:
        connection.close()


def post(url: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return call(url, "POST", "/v1/messages?beta=true", body)


def tmops_body(role: str, project: Project, *, stream: bool) -> dict[str, Any]:
    """A request as the CLI sends it: reminders first, then the tmops prompt."""
    prompt, _ = phase_prompt(role, project)
    blocks = [{"type": "text", "text": "<system-reminder>\ncontext\n</system-reminder>"}]
    return {
        "model": "claude-test",
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": [*blocks, {"type": "text", "text": prompt}]}],
    }


def test_fake_streams_the_anthropic_event_sequence(project: Project) -> None:
    with FakeAnthropic(tdd_script()) as fake:
        status, content_type, raw = post(fake.url, tmops_body("tester", project, stream=True))
        head_status, _, _ = call(fake.url, "HEAD", "/")
        requests = fake.requests

    assert (status, content_type, head_status) == (200, "text/event-stream", 200)
    events = [
        (chunk.split("\n")[0].removeprefix("event: "), json.loads(chunk.split("data: ", 1)[1]))
        for chunk in raw.decode().strip().split("\n\n")
    ]
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * (len(events) - 5),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    assert events[1][1]["content_block"]["name"] == "Write"
    tool_input = json.loads("".join(d["delta"]["partial_json"] for _, d in events[2:-3]))
    assert tool_input == {"file_path": str(project.worktree / TEST_FILE), "content": TEST_SOURCE}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert requests[0].prompt is not None
    assert (requests[0].prompt.role, requests[0].prompt.turn) == ("tester", 0)
    assert (requests[0].prompt.feature, requests[0].prompt.run) == (FEATURE, RUN)
    assert requests[0].prompt.checkpoint_dir == project.checkpoints
    assert requests[1].method == "HEAD"


def test_fake_fails_the_first_requests_then_follows_the_script(project: Project) -> None:
    body = tmops_body("orchestrator", project, stream=False)
    with FakeAnthropic(tdd_script(faults=[HttpError(529, times=2)])) as fake:
        answers = [post(fake.url, body) for _ in range(3)]
        by_role = fake.requests_by_role

    assert [status for status, _, _ in answers] == [529, 529, 200]
    error = json.loads(answers[0][2])
    assert error["type"] == "error"
    assert error["error"]["type"] == "overloaded_error"
    message = json.loads(answers[2][2])
    assert (message["type"], message["stop_reason"]) == ("message", "tool_use")
    assert message["content"][0]["input"]["file_path"] == str(
        project.checkpoints / "001-discovery-trigger.md"
    )
    assert by_role == {"orchestrator": 3}
