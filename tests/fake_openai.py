"""A fake of the OpenAI Responses API, to drive the REAL Codex and OpenCode CLIs in tests.

Both post each model turn to ``<base_url>/responses`` with ``stream: true`` and read
server-sent events: ``response.created``, per output item ``response.output_item.added``, its
deltas and ``response.output_item.done``, then ``response.completed`` with the usage.

- Codex (``@openai/codex`` 0.171.0): its shell tool is the function ``exec_command``
  (``{"cmd": ...}``, run as ``/bin/bash -lc``), so a ``Write`` becomes a shell command
  (:func:`codex_tool`). The CLI is pointed here with a ``model_providers`` entry given as
  ``-c`` overrides (:func:`codex_args`).
- OpenCode (``opencode-ai`` 1.18.33, its built-in ``openai`` provider with ``baseURL`` set):
  its tools are ``write`` (``filePath``, ``content``) and ``bash`` (``command``,
  ``description``) (:func:`opencode_tool`).

The scripts are those of :mod:`tests.fake_anthropic` (roles, steps, faults): each request is
turned into the Messages shape that module reads (:func:`as_messages`), so role, paths and
turn number are found the same way; the step's ``Write``/``Bash`` actions become the CLI's
function calls, text becomes an assistant message. ``HttpError`` faults answer with OpenAI's
error JSON.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from .fake_anthropic import (
    Action,
    FakeAnthropic,
    HttpError,
    RecordedRequest,
    Script,
    Text,
    ToolUse,
    parse_prompt,
    scripted_actions,
)

__all__ = ["FakeOpenAI", "ToolCall", "as_messages", "codex_args", "codex_tool", "opencode_tool"]

_INPUT_TOKENS = 120
_OUTPUT_TOKENS = 30
#: a scripted tool use as the CLI's function call: its name and its arguments
ToolCall = Callable[[ToolUse], tuple[str, Mapping[str, Any]]]


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
    Messages may come without ``"type": "message"`` (OpenCode sends role and content only).
    """
    messages: list[dict[str, Any]] = []
    for item in body.get("input") or []:
        kind, role = item.get("type", "message"), item.get("role")
        if kind == "message" and role == "user":
            text = _text_of(item).strip()
            if text and not text.startswith(("<", "# AGENTS.md")):
                messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
        elif kind == "function_call" or (kind == "message" and role == "assistant"):
            messages.append({"role": "assistant", "content": []})
        elif kind == "function_call_output":
            messages.append({"role": "user", "content": [{"type": "tool_result"}]})
    return {"messages": messages}


def codex_tool(action: ToolUse) -> tuple[str, Mapping[str, Any]]:
    """Codex's one shell tool; a ``Write`` is a shell command that writes the file."""
    if action.name == "Write":
        path = str(action.input["file_path"])
        folder = path.rsplit("/", 1)[0]
        command = (
            f"mkdir -p {shlex.quote(folder)} && "
            f"printf %s {shlex.quote(str(action.input['content']))} > {shlex.quote(path)}"
        )
    else:
        command = str(action.input["command"])
    return "exec_command", {"cmd": command}


def opencode_tool(action: ToolUse) -> tuple[str, Mapping[str, Any]]:
    """OpenCode's ``write`` and ``bash`` tools."""
    if action.name == "Write":
        return "write", {"filePath": action.input["file_path"], "content": action.input["content"]}
    description = str(action.input.get("description") or "Run a command")
    return "bash", {"command": action.input["command"], "description": description}


def _output_items(actions: Sequence[Action], tool_call: ToolCall) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for number, action in enumerate(actions):
        if isinstance(action, Text):
            text = action.text
            content = [{"type": "output_text", "text": text, "annotations": []}]
            items.append({"type": "message", "role": "assistant", "id": f"msg_{number}",
                          "status": "completed", "content": content})  # fmt: skip
            continue
        name, arguments = tool_call(action)
        items.append({"type": "function_call", "name": name, "id": f"fc_{number}",
                      "call_id": f"call_{number}", "arguments": json.dumps(arguments),
                      "status": "completed"})  # fmt: skip
    return items


def _sse(data: Mapping[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def _item_events(index: int, item: Mapping[str, Any]) -> list[bytes]:
    """``output_item.added``, the item's one delta, ``output_item.done``: the AI SDK (OpenCode)
    opens a text or tool call on ``added`` and closes it on ``done``; Codex reads ``done``."""
    if item["type"] == "message":
        text = item["content"][0]["text"]
        started = {**item, "status": "in_progress", "content": []}
        delta = {"type": "response.output_text.delta", "item_id": item["id"],
                 "output_index": index, "content_index": 0, "delta": text}  # fmt: skip
    else:
        started = {**item, "status": "in_progress", "arguments": ""}
        delta = {"type": "response.function_call_arguments.delta", "item_id": item["id"],
                 "output_index": index, "delta": item["arguments"]}  # fmt: skip
    return [
        _sse({"type": "response.output_item.added", "output_index": index, "item": started}),
        _sse(delta),
        _sse({"type": "response.output_item.done", "output_index": index, "item": dict(item)}),
    ]


def _stream(items: Sequence[Mapping[str, Any]], response_id: str, model: str) -> bytes:
    usage = {
        "input_tokens": _INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": _OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": _INPUT_TOKENS + _OUTPUT_TOKENS,
    }
    response = {"id": response_id, "created_at": 1700000000, "model": model}
    parts = [_sse({"type": "response.created", "response": response})]
    for index, item in enumerate(items):
        parts += _item_events(index, item)
    completed = {**response, "status": "completed", "usage": usage}
    parts.append(_sse({"type": "response.completed", "response": completed}))
    return b"".join(parts)


class FakeOpenAI(FakeAnthropic):
    """The fake API on ``127.0.0.1`` (a free port), served from a background thread; the
    lifecycle, the request log and the faults are :class:`FakeAnthropic`'s."""

    def __init__(
        self,
        script: Script,
        tool_call: ToolCall = codex_tool,
        error_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(script)
        self.tool_call = tool_call
        #: sent with every fault's answer (``retry-after-ms`` shortens a CLI's own backoff)
        self.error_headers = dict(error_headers or {})
        self._server.RequestHandlerClass = _handler_for(self)  # before any request came

    def answer(self, path: str, body: Mapping[str, Any]) -> tuple[int, bytes, str]:
        """Status, payload and content type for one ``POST /v1/responses``."""
        prompt = parse_prompt(as_messages(body))
        fault = self._record(RecordedRequest("POST", path, {}, body, prompt))
        if isinstance(fault, HttpError):
            error = {"message": fault.message or f"fake error {fault.status}", "type": "error"}
            return fault.status, json.dumps({"error": error}).encode(), "application/json"
        items = _output_items(scripted_actions(self.script, prompt), self.tool_call)
        model = str(body.get("model") or "fake")
        return 200, _stream(items, f"resp_{len(self.requests)}", model), "text/event-stream"


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
            for name, value in (fake.error_headers if status >= 400 else {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
