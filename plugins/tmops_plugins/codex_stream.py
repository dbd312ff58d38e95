"""Codex CLI's ``exec --json`` output, read, and a finished run, judged.

The ``codex`` provider (:mod:`tmops_plugins.codex_provider`) builds the command line and calls
this module for the rest. Like the providers it is PURE: lines and an exit code in, events and
an :class:`AgentResult` out. The facts it relies on were checked against the real CLI
(``@openai/codex`` 0.171.0 driven against a local fake of the Responses API; recordings in
``tests/data/codex/``):

- ``codex exec --json`` prints one JSON object per line: ``thread.started`` (``thread_id``,
  the session id ``codex exec resume`` takes), ``turn.started``, ``item.started`` /
  ``item.completed`` (``command_execution``, ``file_change``, ``agent_message``,
  ``reasoning``, ``error``...), then ``turn.completed`` (``usage``: tokens, no cost) or an
  ``error`` followed by ``turn.failed``.
- An API error ends the turn with ``turn.failed`` and exit 1; its message carries the HTTP
  status (``unexpected status 401 Unauthorized: ...``, ``exceeded retry limit, last status:
  429 ...``) or the API's own words (``Quota exceeded...``).
- A ``resume`` of an unknown thread prints nothing on stdout and ``no rollout found for thread
  id`` on stderr, exit 1.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tmops_hookspecs import AgentEvent, AgentResult, Outcome

from ._json_values import count as _count
from ._text import clip as _clip
from ._text import one_line as _one_line
from .claude_stream import (
    RESUME_FAILED,
    decode_stream_line,
    describe_exit,
    parse_retry_after,
    stderr_tail,
)

__all__ = ["judge_codex", "parse_codex_line"]


def _item_event(kind: str, item: Mapping[str, Any]) -> AgentEvent | None:
    item_type = item.get("type")
    data: dict[str, Any] = {"tool": item_type, "item_id": item.get("id")}
    if item_type == "command_execution":
        command = _one_line(str(item.get("command", "")), 80)
        exit_code = _count(item.get("exit_code"))
        if kind == "item.started":
            return AgentEvent(kind="progress", message=f"command: {command}", data=data)
        if exit_code not in (None, 0):
            data["tool_error"] = True
        return AgentEvent(
            kind="progress", message=f"command ended ({exit_code}): {command}", data=data
        )
    if kind != "item.completed":
        return None
    if item_type == "file_change":
        changes = item.get("changes")
        paths = [
            str(change.get("path"))
            for change in (changes if isinstance(changes, list) else [])
            if isinstance(change, Mapping)
        ]
        return AgentEvent(kind="progress", message="edit " + ", ".join(paths), data=data)
    text = item.get("text") if item_type != "error" else item.get("message")
    if isinstance(text, str) and text.strip():
        if item_type == "error":
            data["warning"] = True
        return AgentEvent(kind="progress", message=_one_line(text), data=data)
    return None


def parse_codex_line(line: str) -> list[AgentEvent]:
    """Events of one line of ``codex exec --json`` (garbage and unknown shapes: none)."""
    message = decode_stream_line(line)
    if message is None:
        return []
    kind = message["type"]
    if kind == "thread.started" and isinstance(message.get("thread_id"), str):
        return [AgentEvent(kind="session", session_id=message["thread_id"])]
    if kind in {"item.started", "item.completed"} and isinstance(message.get("item"), Mapping):
        event = _item_event(kind, message["item"])
        return [] if event is None else [event]
    if kind == "turn.completed":
        usage = message.get("usage")
        usage = usage if isinstance(usage, Mapping) else {}
        data = {
            "status": "completed",
            "input_tokens": _count(usage.get("input_tokens")),
            "output_tokens": _count(usage.get("output_tokens")),
            "cached_input_tokens": _count(usage.get("cached_input_tokens")),
        }
        return [AgentEvent(kind="result", message="finished", turns=1, data=data)]
    if kind == "turn.failed":
        error = message.get("error")
        text = error.get("message") if isinstance(error, Mapping) else None
        text = text if isinstance(text, str) else "the turn failed"
        return [AgentEvent(kind="result", message=text, data={"status": "failed"})]
    return []


# --------------------------------------------------------------------------------------------
# Judging the end
# --------------------------------------------------------------------------------------------

_STATUS = re.compile(r"(?:unexpected status|last status:?)\s+(\d{3})\b", re.I)
_AUTH_TEXT = re.compile(
    r"unauthorized|invalid api key|incorrect api key|not logged in|codex login|missing.*api key",
    re.I,
)
_USAGE_TEXT = re.compile(
    r"quota exceeded|exceeded your current quota|insufficient_quota|usage limit"
    r"|hit your (?:[\w-]+ )?limit",
    re.I,
)
_CONNECTION_TEXT = re.compile(
    r"stream disconnected|error sending request|connection (?:refused|reset|closed)"
    r"|timed out|reconnecting",
    re.I,
)
_RESUME_TEXT = re.compile(r"no rollout found|thread/resume failed", re.I)


def _sum(counts: Iterable[int | None]) -> int | None:
    known = [count for count in counts if count is not None]
    return sum(known) if known else None


def _classify(text: str, now: float) -> tuple[Outcome, str, float | None]:
    match = _STATUS.search(text)
    status = int(match.group(1)) if match else None
    if _USAGE_TEXT.search(text):
        return Outcome.USAGE_LIMITED, text, parse_retry_after(text, now)
    if status in {401, 403} or (status is None and _AUTH_TEXT.search(text)):
        return Outcome.AUTH_ERROR, text, None
    if status is not None and (status in {408, 409, 429} or status >= 500):
        return (
            Outcome.TRANSIENT_ERROR,
            f"API error, worth retrying: {text}",
            (parse_retry_after(text, now)),
        )
    if status is None and _CONNECTION_TEXT.search(text):
        return Outcome.TRANSIENT_ERROR, f"could not reach the API: {text}", None
    return Outcome.FAILED, text, None


def judge_codex(
    returncode: int,
    events: Sequence[AgentEvent],
    stderr: str,
    *,
    now: float | None = None,
    program: str = "codex",
) -> AgentResult:
    """Turn a finished ``codex exec`` into an :class:`AgentResult`.

    Tokens are summed over the turns; the CLI reports no cost, so ``cost_usd`` stays None and
    tmops prices the tokens from ``providers.<name>.prices``.
    """
    session = next((event.session_id for event in events if event.session_id), None)
    results = [event for event in events if event.kind == "result"]
    input_tokens = _sum(_count(event.data.get("input_tokens")) for event in results)
    output_tokens = _sum(_count(event.data.get("output_tokens")) for event in results)
    if _RESUME_TEXT.search(stderr) and not results:
        message = f"resume failed: the session {RESUME_FAILED}: {stderr_tail(stderr)}"
        return AgentResult(outcome=Outcome.FAILED, message=_clip(message), resume_failed=True)
    if not results:
        ended = f"{program} ended without finishing a turn ({describe_exit(returncode)})"
        tail = stderr_tail(stderr)
        outcome = Outcome.FAILED if returncode > 0 and not events else Outcome.CRASHED
        return AgentResult(
            outcome=outcome,
            session_id=session,
            message=_clip(f"{ended}; stderr: {tail}" if tail else ended),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
    last = results[-1]
    if last.data.get("status") == "completed" and returncode == 0:
        outcome, message, retry_after = Outcome.SUCCEEDED, "finished", None
    elif last.data.get("status") == "completed":
        outcome = Outcome.CRASHED if returncode < 0 else Outcome.FAILED
        message = f"{program} finished its turn but ended with {describe_exit(returncode)}"
        retry_after = None
    else:
        clock = time.time() if now is None else now
        outcome, message, retry_after = _classify(last.message or "", clock)
    return AgentResult(
        outcome=outcome,
        session_id=session,
        turns=sum(event.turns or 0 for event in results) or None,
        message=_clip(message),
        retry_after_s=retry_after,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
