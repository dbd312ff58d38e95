"""A fake of the Gemini API (``generativelanguage``) on 127.0.0.1, for the REAL Gemini CLI.

It plays the same :class:`tests.fake_anthropic.Script` as the Claude fake: a request's
conversation is read as the same prompt (role, worktree, checkpoint folder, turn), and the
script's ``Write``/``Bash`` actions become Gemini CLI's ``write_file``/``run_shell_command``
function calls, so the CLI's own tools write the tests, the code and the checkpoints. The CLI
is pointed here with ``GOOGLE_GEMINI_BASE_URL`` and any ``GEMINI_API_KEY``.

Answers: ``POST /v1beta/models/<m>:streamGenerateContent?alt=sse`` with one SSE chunk (the
parts, ``finishReason`` and ``usageMetadata``); ``:generateContent`` (the CLI's side questions,
e.g. who speaks next) with a JSON text saying the user does; faults as Google's error JSON.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from .fake_anthropic import Action, HttpError, Prompt, Script, Text, parse_prompt, scripted_actions
from .fake_server import BackgroundServer

__all__ = ["DailyQuota", "FakeGemini", "GeminiRequest"]

_INPUT_TOKENS = 120
_OUTPUT_TOKENS = 30
_TOOL_NAMES = {"Write": "write_file", "Bash": "run_shell_command"}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_MESSAGES = {
    401: "API key not valid. Please pass a valid API key.",
    403: "Permission denied on resource (fake).",
    429: "Resource has been exhausted (e.g. check quota).",
    503: "The model is overloaded. Please try again later.",
}


@dataclass(frozen=True)
class DailyQuota:
    """A 429 naming a per-day quota (Google's ``QuotaFailure`` detail), ``times`` times (None:
    always): the CLI takes it for a limit it must not retry."""

    times: int | None = None
    role: str | None = None


_DAILY_QUOTA_DETAILS = [
    {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}],
    }
]


@dataclass(frozen=True)
class GeminiRequest:
    path: str
    body: Any
    prompt: Prompt | None  # for streamGenerateContent


def _as_messages(body: Mapping[str, Any]) -> dict[str, Any]:
    """The conversation in Anthropic's shape, so :func:`parse_prompt` reads it."""
    messages = []
    for content in body.get("contents") or []:
        if not isinstance(content, dict):
            continue
        parts = [part for part in content.get("parts") or [] if isinstance(part, dict)]
        blocks: list[dict[str, Any]] = [
            {"type": "tool_result"} for part in parts if "functionResponse" in part
        ] + [{"type": "tool_use"} for part in parts if "functionCall" in part]
        # the CLI sends its session context and the prompt as two text parts of one turn
        text = "\n".join(str(part["text"]) for part in parts if isinstance(part.get("text"), str))
        if text.strip():
            blocks.append({"type": "text", "text": text})
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": blocks})
    return {"messages": messages}


def _parts(actions: Sequence[Action]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for action in actions:
        if isinstance(action, Text):
            parts.append({"text": action.text})
        else:
            name = _TOOL_NAMES[action.name]
            parts.append({"functionCall": {"name": name, "args": dict(action.input)}})
    return parts


def _chunk(parts: list[dict[str, Any]], model: str, input_tokens: int) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": {
            "promptTokenCount": input_tokens,
            "candidatesTokenCount": _OUTPUT_TOKENS,
            "totalTokenCount": input_tokens + _OUTPUT_TOKENS,
        },
        "modelVersion": model,
    }


class FakeGemini(BackgroundServer):
    """The fake API on a free port of 127.0.0.1, served from a background thread."""

    def __init__(self, script: Script | None = None, quotas: Sequence[DailyQuota] = ()) -> None:
        self.script = script or Script()
        self.quotas = tuple(quotas)
        self._lock = threading.Lock()
        self._requests: list[GeminiRequest] = []
        self._fired: Counter[int] = Counter()
        super().__init__(_handler_for(self), "fake-gemini")

    @property
    def requests(self) -> list[GeminiRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def requests_by_role(self) -> Counter[str]:
        """The model turns each role asked for (faulted ones included)."""
        return Counter(r.prompt.role for r in self.requests if r.prompt is not None)

    def _record(self, request: GeminiRequest) -> HttpError | DailyQuota | None:
        with self._lock:
            self._requests.append(request)
            if request.prompt is None:
                return None
            for index, fault in enumerate([*self.script.faults, *self.quotas]):
                if not isinstance(fault, HttpError | DailyQuota):
                    continue
                if fault.role is not None and fault.role != request.prompt.role:
                    continue
                if fault.times is None or self._fired[index] < fault.times:
                    self._fired[index] += 1
                    return fault
            return None

    def _answer(self, prompt: Prompt, model: str) -> dict[str, Any]:
        parts = _parts(scripted_actions(self.script, prompt))
        return _chunk(parts, model, self.script.input_tokens)


def _handler_for(fake: FakeGemini) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the recorded requests are the log."""

        def do_GET(self) -> None:
            fake._record(GeminiRequest(self.path, None, None))
            self._error(404, "not found (fake)")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = self.path.split("?", 1)[0]
            model = path.rsplit("/", 1)[-1].split(":", 1)[0]
            streaming = path.endswith(":streamGenerateContent") and isinstance(body, dict)
            prompt = parse_prompt(_as_messages(body)) if streaming else None
            fault = fake._record(GeminiRequest(self.path, body, prompt))
            if isinstance(fault, DailyQuota):
                self._error(429, "You exceeded your current quota.", _DAILY_QUOTA_DETAILS)
            elif fault is not None:
                self._error(fault.status, fault.message)
            elif prompt is not None:
                chunk = fake._answer(prompt, model)
                self._send(200, "text/event-stream", f"data: {json.dumps(chunk)}\r\n\r\n")
            elif path.endswith(":generateContent"):
                # side questions (next speaker, loop checks) want JSON in a text part
                text = json.dumps({"reasoning": "the task is done", "next_speaker": "user"})
                chunk = _chunk([{"text": text}], model, 1)
                self._send(200, "application/json", json.dumps(chunk))
            elif path.endswith(":countTokens"):
                self._send(200, "application/json", json.dumps({"totalTokens": _INPUT_TOKENS}))
            else:
                self._error(404, "not found (fake)")

        def _error(
            self, status: int, message: str | None, details: list[dict[str, Any]] | None = None
        ) -> None:
            error: dict[str, Any] = {
                "code": status,
                "message": message or _MESSAGES.get(status, "fake error"),
                "status": _STATUS_NAMES.get(status, "UNKNOWN"),
            }
            if details:
                error["details"] = details
            self._send(status, "application/json", json.dumps({"error": error}))

        def _send(self, status: int, content_type: str, payload: str) -> None:
            data = payload.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
