"""A fake of the Anthropic Messages API, to drive the REAL Claude Code CLI in tests.

The model is the one thing no test machine can reach, so it is the one thing faked: the CLI
runs its whole agent loop against this server (``ANTHROPIC_BASE_URL=fake.url``) and its tools
really write files, run commands and commit. ``tests/data/claude/README.md`` says what the
recordings of the real CLI show.

Scripting is stateless, so ``--resume`` and parallel sessions just work: for each
``POST /v1/messages`` the fake finds the latest human prompt (the first text in the last user
message that is neither a ``<system-reminder>`` nor a tool result), identifies the ROLE from it
(tmops prompts start with ``You are the TESTER.`` and so on; anything else is :data:`OTHER`),
counts the assistant turns after it, and answers with step N of that role's script. A step is a
list of actions (:func:`write`, :func:`bash`, any :class:`ToolUse`, or :func:`say`), or a
function ``(worktree, checkpoint_dir, feature, run) -> actions`` called when the request
arrives, so it can look at the real repository. Once a role's steps run out, the answer is
``Script.final_text`` with ``end_turn``.

Faults (:class:`HttpError`, :class:`CutStream`) hit the first ``times`` requests (of one role,
or of any) in the order listed, then the script goes on as normal: ``HttpError(529, times=2)``
is "overloaded twice, then fine"; ``times=None`` fails every request. What the CLI makes of a
fault (checked with 2.1.329): 5xx and 529 are retried only when ``CLAUDE_CODE_MAX_RETRIES`` is
above 0; a 400 is sent up to 6 times, with beta features dropped, whatever that variable says;
a cut stream is followed by one non-streaming request.

A ready-made script of a whole test-first run is in ``tests/fake_tdd_script.py``. This module
never starts the CLI and holds no test of its own.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .fake_server import BackgroundServer

__all__ = [
    "OTHER",
    "ROLES",
    "Action",
    "CutStream",
    "FakeAnthropic",
    "Fault",
    "HttpError",
    "Prompt",
    "RecordedRequest",
    "Script",
    "Step",
    "Text",
    "ToolUse",
    "bash",
    "parse_prompt",
    "say",
    "scripted_actions",
    "write",
]

#: The tmops roles the fake recognises from the first line of a prompt.
ROLES = ("orchestrator", "tester", "implementer", "verifier")
#: The role of a prompt that names none of :data:`ROLES` (e.g. the prompt of a ``--resume``).
OTHER = "other"

MODEL_FALLBACK = "claude-sonnet-4-5"
_INPUT_TOKENS = 120
_OUTPUT_TOKENS = 30
_JSON_CHUNK = 48  # the size of each input_json_delta, so the client really reassembles JSON

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES = {
    400: "messages: the request is invalid (fake)",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of request tokens has exceeded your per-minute rate limit (fake)",
    500: "Internal server error",
    529: "Overloaded",
}

# -- script actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolUse:
    """One ``tool_use`` block: the CLI runs tool ``name`` with ``input``."""

    name: str
    input: Mapping[str, Any]


@dataclass(frozen=True)
class Text:
    """One text block of the answer."""

    text: str


Action = ToolUse | Text
#: One scripted model turn: the actions, or a function of
#: ``(worktree, checkpoint_dir, feature, run)`` returning them, called per request.
Step = Sequence[Action] | Callable[[Path, Path, str, str], Sequence[Action]]


def write(path: Path | str, content: str) -> ToolUse:
    """The ``Write`` tool: create ``path`` (absolute) holding ``content``."""
    return ToolUse("Write", {"file_path": str(path), "content": content})


def bash(command: str, description: str | None = None) -> ToolUse:
    """The ``Bash`` tool: run ``command`` in the session's working directory."""
    tool_input: dict[str, Any] = {"command": command}
    if description:
        tool_input["description"] = description
    return ToolUse("Bash", tool_input)


def say(text: str) -> Text:
    """A text answer; a step made only of text ends the turn (``end_turn``)."""
    return Text(text)


# -- faults -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpError:
    """Answer HTTP ``status`` with Anthropic's error JSON, ``times`` times (None: always)."""

    status: int
    times: int | None = 1
    role: str | None = None  # only requests of this role; None: any request
    message: str | None = None

    @property
    def error_type(self) -> str:
        return _ERROR_TYPES.get(self.status, "api_error")


@dataclass(frozen=True)
class CutStream:
    """Send ``message_start`` and close the connection, ``times`` times (None: always).

    Only streaming requests are cut (and counted): the CLI answers a broken stream with one
    non-streaming request, which gets the scripted answer.
    """

    times: int | None = 1
    role: str | None = None


Fault = HttpError | CutStream


@dataclass(frozen=True)
class Script:
    """What the fake model does: steps per role (``ROLES`` or ``OTHER``) and faults."""

    steps: Mapping[str, Sequence[Step]] = field(default_factory=dict)
    faults: Sequence[Fault] = ()
    final_text: str = "Done."
    #: the prompt tokens every answer reports: many make the CLI count a high cost
    input_tokens: int = _INPUT_TOKENS


# -- reading a request --------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """What the fake understood from a request's conversation."""

    role: str
    text: str
    worktree: Path
    checkpoint_dir: Path
    feature: str
    run: str
    #: assistant turns after the latest human prompt: the index of the step to answer with
    turn: int


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any  # the parsed JSON body, or None
    prompt: Prompt | None  # for POST /v1/messages


_ROLE_LINE = re.compile(r"^You are the (ORCHESTRATOR|TESTER|IMPLEMENTER|VERIFIER)\b", re.M)
_FEATURE_LINE = re.compile(r"^Feature: (\S+) \(run ([^)\s]+)\)", re.M)
_WORKTREE_LINE = re.compile(r"^Worktree: (.+)$", re.M)
_CHECKPOINTS_LINE = re.compile(r"^Checkpoint folder: (.+)$", re.M)
_PRIMARY_DIR = re.compile(r"Primary working directory: (\S+)")
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)


def _human_text(message: Mapping[str, Any]) -> str | None:
    """The human prompt in a user message, or None for tool results and bare reminders."""
    if message.get("role") != "user":
        return None
    content = message.get("content")
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = content
    else:
        return None
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
        return None
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "text":
            text = _REMINDER.sub("", str(block.get("text", ""))).strip()
            if text:
                return text
    return None


def _system_text(body: Mapping[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    return ""


def parse_prompt(body: Mapping[str, Any]) -> Prompt:
    """Role, paths, names and turn number of a Messages API request body."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    human = [(i, text) for i, m in enumerate(messages) if (text := _human_text(m)) is not None]
    latest_index, latest = human[-1] if human else (-1, "")

    turn, previous = 0, None
    for message in messages[latest_index + 1 :]:
        role = message.get("role")
        if role == "system":  # mid-conversation system entries do not split a turn
            continue
        if role == "assistant" and previous != "assistant":
            turn += 1
        previous = role

    match = _ROLE_LINE.search(latest)
    role = match.group(1).lower() if match else OTHER
    # The context comes from the latest prompt that names it (a resumed session's "go on"
    # prompt names nothing), else from the CLI's own system prompt.
    context = next(
        (text for _, text in reversed(human) if _WORKTREE_LINE.search(text)),
        latest,
    )
    worktree_match = _WORKTREE_LINE.search(context)
    if worktree_match:
        worktree = worktree_match.group(1).split(" (branch ")[0].split("; ")[0].strip()
    else:
        primary = _PRIMARY_DIR.search(_system_text(body))
        worktree = primary.group(1) if primary else ""
    checkpoints_match = _CHECKPOINTS_LINE.search(context)
    feature_match = _FEATURE_LINE.search(context)
    return Prompt(
        role=role,
        text=latest,
        worktree=Path(worktree),
        checkpoint_dir=Path(checkpoints_match.group(1).strip() if checkpoints_match else ""),
        feature=feature_match.group(1) if feature_match else "",
        run=feature_match.group(2) if feature_match else "",
        turn=turn,
    )


# -- writing an answer --------------------------------------------------------------------------


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _blocks(actions: Sequence[Action]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for action in actions:
        if isinstance(action, Text):
            blocks.append({"type": "text", "text": action.text})
        else:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_fake{uuid.uuid4().hex[:20]}",
                    "name": action.name,
                    "input": dict(action.input),
                }
            )
    return blocks


def _usage(output_tokens: int, input_tokens: int = _INPUT_TOKENS) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(
    model: str, blocks: list[dict[str, Any]], stop_reason: str, input_tokens: int
) -> dict[str, Any]:
    return {
        "id": f"msg_fake{uuid.uuid4().hex[:20]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(_OUTPUT_TOKENS, input_tokens),
    }


def _message_start(message: Mapping[str, Any]) -> bytes:
    input_tokens = message["usage"]["input_tokens"]
    start = {**message, "content": [], "stop_reason": None, "usage": _usage(1, input_tokens)}
    return _sse("message_start", {"type": "message_start", "message": start})


def _stream(message: Mapping[str, Any]) -> bytes:
    """The whole SSE answer for ``message``."""
    parts = [_message_start(message)]
    for index, block in enumerate(message["content"]):
        start: dict[str, Any]
        deltas: list[dict[str, Any]]
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": block["text"]}]
        else:
            start = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": raw[i : i + _JSON_CHUNK]}
                for i in range(0, len(raw), _JSON_CHUNK)
            ]
        parts.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        parts.extend(
            _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        parts.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    parts.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": _OUTPUT_TOKENS},
            },
        )
    )
    parts.append(_sse("message_stop", {"type": "message_stop"}))
    return b"".join(parts)


def scripted_actions(script: Script, prompt: Prompt) -> Sequence[Action]:
    """The actions of the step ``prompt`` is at in its role's script; past the last step, the
    script's final text."""
    steps = script.steps.get(prompt.role, ())
    actions: Sequence[Action] = ()
    if prompt.turn < len(steps):
        step = steps[prompt.turn]
        actions = (
            step(prompt.worktree, prompt.checkpoint_dir, prompt.feature, prompt.run)
            if callable(step)
            else step
        )
    return actions or [Text(script.final_text)]


# -- the server ---------------------------------------------------------------------------------


class FakeAnthropic(BackgroundServer):
    """The fake API on ``127.0.0.1`` (a free port), served from a background thread.

    Use it as a context manager; ``url`` goes into ``ANTHROPIC_BASE_URL``. ``requests`` and
    ``requests_by_role`` are snapshots, safe to read while the CLI is running.
    """

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._by_role: Counter[str] = Counter()
        self._fired: Counter[int] = Counter()  # fault index -> times it has fired
        super().__init__(_handler_for(self), "fake-anthropic")

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def messages_requests(self) -> list[RecordedRequest]:
        """The ``POST /v1/messages`` requests only (one per model turn, plus retries)."""
        return [r for r in self.requests if r.prompt is not None]

    @property
    def requests_by_role(self) -> Counter[str]:
        """How many ``POST /v1/messages`` requests each role made (faulted ones included)."""
        with self._lock:
            return Counter(self._by_role)

    # -- called from the handler threads --------------------------------------------------------

    def _record(self, request: RecordedRequest) -> Fault | None:
        """Record ``request`` and return the fault it must get, if any."""
        with self._lock:
            self._requests.append(request)
            if request.prompt is None:
                return None
            role = request.prompt.role
            self._by_role[role] += 1
            streaming = bool(request.body.get("stream"))
            for index, fault in enumerate(self.script.faults):
                if fault.role is not None and fault.role != role:
                    continue
                if isinstance(fault, CutStream) and not streaming:
                    continue  # the CLI's non-streaming fallback: nothing to cut
                if fault.times is None or self._fired[index] < fault.times:
                    self._fired[index] += 1
                    return fault
            return None

    def _answer(self, prompt: Prompt, model: str) -> dict[str, Any]:
        actions = scripted_actions(self.script, prompt)
        uses_tools = any(isinstance(a, ToolUse) for a in actions)
        return _message(
            model, _blocks(actions), "tool_use" if uses_tools else "end_turn",
            self.script.input_tokens,
        )  # fmt: skip


def _handler_for(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, the end of a cut stream is the close.
        protocol_version = "HTTP/1.0"
        server_version = "FakeAnthropic/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the recorded requests are the log."""

        def do_HEAD(self) -> None:
            fake._record(RecordedRequest("HEAD", self.path, dict(self.headers), None, None))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            fake._record(RecordedRequest("GET", self.path, dict(self.headers), None, None))
            self._error(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = urlsplit(self.path).path
            is_messages = path == "/v1/messages" and isinstance(body, dict)
            prompt = parse_prompt(body) if is_messages else None
            fault = fake._record(
                RecordedRequest("POST", self.path, dict(self.headers), body, prompt)
            )
            if prompt is None or not isinstance(body, dict):
                self._error(404 if path != "/v1/messages" else 400)
                return
            if isinstance(fault, HttpError):
                self._error(fault.status, fault.message)
                return
            message = fake._answer(prompt, str(body.get("model") or MODEL_FALLBACK))
            if not body.get("stream"):
                self._send(200, "application/json", json.dumps(message).encode())
            elif isinstance(fault, CutStream):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("request-id", _request_id())
                self.end_headers()
                self.wfile.write(_message_start(message))
                self.wfile.flush()
                self.close_connection = True
            else:
                self._send(200, "text/event-stream", _stream(message))

        def _error(self, status: int, message: str | None = None) -> None:
            payload = {
                "type": "error",
                "error": {
                    "type": _ERROR_TYPES.get(status, "api_error"),
                    "message": message or _ERROR_MESSAGES.get(status, "fake error"),
                },
                "request_id": _request_id(),
            }
            self._send(status, "application/json", json.dumps(payload).encode())

        def _send(self, status: int, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("request-id", _request_id())
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _request_id() -> str:
    return f"req_fake{uuid.uuid4().hex[:20]}"
