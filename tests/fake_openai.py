"""A fake of the OpenAI Responses API, to drive the REAL Codex CLI in tests.

Codex (``@openai/codex`` 0.171.0) posts each model turn to ``<base_url>/responses`` with
``stream: true`` and reads server-sent events; its shell tool is the function
``exec_command`` (``{"cmd": ...}``, run as ``/bin/bash -lc``). The CLI is pointed here with a
``model_providers`` entry given as ``-c`` overrides (:func:`codex_args`).

The scripts are those of :mod:`tests.fake_anthropic` (roles, steps, faults): each request is
turned into the Messages shape that module reads (:func:`as_messages`), so role, paths and
turn number are found the same way; the step's ``Write``/``Bash`` actions become
``exec_command`` calls, text becomes an assistant message. ``HttpError`` faults answer with
OpenAI's error JSON.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from .fake_anthropic import (
    Action,
    FakeAnthropic,
    HttpError,
    RecordedRequest,
    Script,
    Text,
    parse_prompt,
    scripted_actions,
)

__all__ = ["FakeOpenAI", "as_messages", "codex_args"]

_INPUT_TOKENS = 120
_OUTPUT_TOKENS = 30


def codex_args(base_url: str) -> list[str]:
    """``-c`` overrides pointing Codex at ``base_url``, with its own retries off."""
    provider = (
        f'{{name="fake", base_url="{base_url}/v1", env_key="OPENAI_API_KEY", '
        'wire_api="responses", request_max_retries=0, stream_max_retries=0}'
    )
    return [
        "-c", "model_provider=fake", "-c", f"model_providers.fake={provider}",
        "-c", "analytics.enabled=false", "--skip-git-repo-check",
    ]  # fmt: skip


def _text_of(item: Mapping[str, Any]) -> str:
    content = item.get("content")
    parts = content if isinstance(content, list) else []
    return "\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def as_messages(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses request in the Messages shape :func:`parse_prompt` reads.

    Codex's own context (``<environment_context>``, AGENTS.md, developer messages) is left out.
    """
    messages: list[dict[str, Any]] = []
    for item in body.get("input") or []:
        kind, role = item.get("type"), item.get("role")
        if kind == "message" and role == "user":
            text = _text_of(item).strip()
            if text and not text.startswith(("<", "# AGENTS.md")):
                messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
        elif kind == "function_call" or (kind == "message" and role == "assistant"):
            messages.append({"role": "assistant", "content": []})
        elif kind == "function_call_output":
            messages.append({"role": "user", "content": [{"type": "tool_result"}]})
    return {"messages": messages}


def _output_items(actions: Sequence[Action]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for number, action in enumerate(actions):
        if isinstance(action, Text):
            text = action.text
            items.append({"type": "message", "role": "assistant", "id": f"msg_{number}",
                          "content": [{"type": "output_text", "text": text}]})  # fmt: skip
            continue
        if action.name == "Write":
            path = str(action.input["file_path"])
            folder = path.rsplit("/", 1)[0]
            command = (
                f"mkdir -p {shlex.quote(folder)} && "
                f"printf %s {shlex.quote(str(action.input['content']))} > {shlex.quote(path)}"
            )
        else:
            command = str(action.input["command"])
        arguments = json.dumps({"cmd": command})
        items.append({"type": "function_call", "name": "exec_command", "id": f"fc_{number}",
                      "call_id": f"call_{number}", "arguments": arguments})  # fmt: skip
    return items


def _sse(data: Mapping[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def _stream(items: Sequence[Mapping[str, Any]], response_id: str) -> bytes:
    usage = {
        "input_tokens": _INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": _OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": _INPUT_TOKENS + _OUTPUT_TOKENS,
    }
    parts = [_sse({"type": "response.created", "response": {"id": response_id}})]
    parts += [
        _sse({"type": "response.output_item.done", "output_index": index, "item": dict(item)})
        for index, item in enumerate(items)
    ]
    parts.append(
        _sse({"type": "response.completed", "response": {"id": response_id, "usage": usage}})
    )
    return b"".join(parts)


class FakeOpenAI(FakeAnthropic):
    """The fake API on ``127.0.0.1`` (a free port), served from a background thread; the
    lifecycle, the request log and the faults are :class:`FakeAnthropic`'s."""

    def __init__(self, script: Script) -> None:
        super().__init__(script)
        self._server.RequestHandlerClass = _handler_for(self)  # before any request came

    def answer(self, path: str, body: Mapping[str, Any]) -> tuple[int, bytes, str]:
        """Status, payload and content type for one ``POST /v1/responses``."""
        prompt = parse_prompt(as_messages(body))
        fault = self._record(RecordedRequest("POST", path, {}, body, prompt))
        if isinstance(fault, HttpError):
            error = {"message": fault.message or f"fake error {fault.status}", "type": "error"}
            return fault.status, json.dumps({"error": error}).encode(), "application/json"
        items = _output_items(scripted_actions(self.script, prompt))
        return 200, _stream(items, f"resp_{len(self.requests)}"), "text/event-stream"


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path.rstrip("/").endswith("/responses"):
                status, payload, content_type = fake.answer(self.path, body)
            else:
                status, payload, content_type = 404, b"{}", "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
