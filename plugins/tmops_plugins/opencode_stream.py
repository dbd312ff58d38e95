"""OpenCode's ``run --format json`` output, read, and a finished run, judged.

The ``opencode`` provider (:mod:`tmops_plugins.opencode_provider`) builds the command line and
calls this module for the rest. Like every provider it is PURE: lines and an exit code in,
events and an :class:`AgentResult` out. The facts were checked against the real CLI
(``opencode-ai`` 1.18.33 driven against a local fake of the Responses API; recordings in
``tests/data/opencode/``):

- ``opencode run --format json`` prints one JSON object per line, each with ``type``,
  ``timestamp``, ``sessionID`` (``ses_...``, what ``--session`` takes) and a ``part``:
  ``step_start`` (a model call begins), ``tool_use`` (``part.tool``, ``part.state`` with
  ``status`` ``completed`` or ``error``, ``input``, ``metadata.exit`` for ``bash``), ``text``
  (``part.text``), and ``step_finish`` (``part.reason``: ``stop`` when the agent is done,
  ``tool-calls`` when it goes on; ``part.tokens`` and ``part.cost`` of that call).
- ``part.tokens.input`` leaves out the cache reads and writes and ``output`` the reasoning;
  the cost is 0 for a model OpenCode knows no price of.
- An API error, after OpenCode's own retries (5 for a retryable one, waiting what
  ``retry-after``/``retry-after-ms`` say, else 2 s doubling up to 30 s), is one ``error`` line
  (``error.name`` ``APIError``, ``data.statusCode``, ``data.isRetryable``,
  ``data.responseHeaders``, ``data.message``) and exit 1.
- A permission the run may not ask for (a path outside the project that
  ``OPENCODE_PERMISSION`` does not allow) is refused: the tool call ends with ``status``
  ``error``, the session stops after that step, and the exit is still 0.
- ``--session`` with an id the data folder does not hold prints nothing on stdout,
  ``Error: Session not found`` on stderr, exit 1.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tmops_hookspecs import AgentEvent, AgentResult, Outcome

from ._json_values import count as _count
from ._json_values import number as _number
from ._json_values import text as _str
from ._text import MESSAGE_LIMIT
from ._text import clip as _clip
from ._text import one_line as _one_line
from .claude_stream import (
    RESUME_FAILED,
    decode_stream_line,
    describe_exit,
    parse_retry_after,
    stderr_tail,
)

__all__ = ["judge_opencode", "parse_opencode_line"]

_COMMAND_PREVIEW = 80


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _tool_summary(tool: str, arguments: Mapping[str, Any]) -> str:
    if tool == "bash":
        return f"bash: {_one_line(str(arguments.get('command', '')), _COMMAND_PREVIEW)}"
    for key in ("filePath", "path", "pattern", "url", "query", "description"):
        value = _str(arguments.get(key))
        if value:
            return f"{tool} {_one_line(value)}"
    return tool


def _tool_event(part: Mapping[str, Any]) -> AgentEvent:
    tool = _str(part.get("tool")) or "tool"
    state = _mapping(part.get("state"))
    summary = _tool_summary(tool, _mapping(state.get("input")))
    data: dict[str, Any] = {"tool": tool, "call_id": part.get("callID")}
    error = _str(state.get("error"))
    exit_code = _count(_mapping(state.get("metadata")).get("exit"))
    if state.get("status") == "error":
        data.update(tool_error=True, error=_one_line(error or "failed"))
    elif exit_code not in (None, 0):
        data.update(tool_error=True, exit_code=exit_code)
    return AgentEvent(kind="progress", message=summary, data=data)


def _tokens(tokens: Mapping[str, Any]) -> dict[str, int | None]:
    """Prompt tokens with the cache reads and writes, output with the reasoning (both billed)."""
    cache = _mapping(tokens.get("cache"))

    def total(*counts: object) -> int | None:
        known = [value for value in map(_count, counts) if value is not None]
        return sum(known) if known else None

    return {
        "input_tokens": total(tokens.get("input"), cache.get("read"), cache.get("write")),
        "output_tokens": total(tokens.get("output"), tokens.get("reasoning")),
    }


def _retry_after_header(headers: Mapping[str, Any]) -> float | None:
    """Seconds from ``retry-after-ms`` or a ``retry-after`` in seconds (a date: None)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = _str(headers.get(name))
        try:
            seconds = float(value) / scale if value else None
        except ValueError:
            continue
        if seconds is not None and seconds >= 0:
            return seconds
    return None


def _error_event(session_id: str | None, error: Mapping[str, Any]) -> AgentEvent:
    data = _mapping(error.get("data"))
    text = _str(data.get("message")) or _str(error.get("name")) or "error"
    found = {
        "status": "error",
        "error_name": _str(error.get("name")),
        "status_code": _count(data.get("statusCode")),
        "retryable": data.get("isRetryable") if isinstance(data.get("isRetryable"), bool) else None,
        "retry_after_s": _retry_after_header(_mapping(data.get("responseHeaders"))),
        "body": _one_line(_str(data.get("responseBody")) or "", MESSAGE_LIMIT),
    }
    return AgentEvent(kind="result", session_id=session_id, message=text, data=found)


def _events(message: Mapping[str, Any]) -> list[AgentEvent]:
    kind = message["type"]
    session_id = _str(message.get("sessionID"))
    part = _mapping(message.get("part"))
    if kind == "step_start" and session_id:
        return [AgentEvent(kind="session", session_id=session_id)]
    if kind == "tool_use":
        return [_tool_event(part)]
    if kind == "text":
        text = _str(part.get("text"))
        return [AgentEvent(kind="progress", message=_one_line(text))] if text else []
    if kind == "step_finish":
        reason = _str(part.get("reason")) or "unknown"
        data: dict[str, Any] = {
            "status": reason,
            **_tokens(_mapping(part.get("tokens"))),
            "cost_usd": _number(part.get("cost")),
        }
        return [AgentEvent(kind="result", session_id=session_id, turns=1, data=data)]
    if kind == "error":
        return [_error_event(session_id, _mapping(message.get("error")))]
    return []


def parse_opencode_line(line: str) -> list[AgentEvent]:
    """Events of one line of ``opencode run --format json`` (garbage, unknown types: none)."""
    message = decode_stream_line(line)
    return [] if message is None else _events(message)


# --------------------------------------------------------------------------------------------
# Judging the end
# --------------------------------------------------------------------------------------------

_AUTH_TEXT = re.compile(
    r"incorrect api key|invalid api key|invalid x-api-key|unauthori[sz]ed|authentication"
    r"|api key (?:is )?missing|no api key",
    re.I,
)
_USAGE_TEXT = re.compile(
    r"exceeded your current quota|insufficient_quota|quota exceeded|usage limit"
    r"|credit balance is too low|FreeUsageLimitError|GoUsageLimitError",
    re.I,
)
_CONNECTION_TEXT = re.compile(
    r"ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|fetch failed|unable to connect"
    r"|connection (?:refused|reset|closed|error)|socket hang up|timed out",
    re.I,
)
_RESUME_TEXT = re.compile(r"session not found", re.I)


def _sum(counts: Iterable[object]) -> int | None:
    known = [value for value in map(_count, counts) if value is not None]
    return sum(known) if known else None


def _cost(steps: Sequence[AgentEvent]) -> float | None:
    """The session's cost; None when OpenCode priced nothing (0 for a model it has no price
    of), so tmops prices the tokens from ``providers.<name>.prices``."""
    total = sum(_number(step.data.get("cost_usd")) or 0.0 for step in steps)
    return total if total > 0 else None


def _classify(error: AgentEvent, now: float) -> tuple[Outcome, str, float | None]:
    text = error.message
    status = _count(error.data.get("status_code"))
    where = f"{text} {error.data.get('body') or ''}"
    waited = _number(error.data.get("retry_after_s"))
    retry_after = waited if waited is not None else parse_retry_after(where, now)
    if _USAGE_TEXT.search(where):
        return Outcome.USAGE_LIMITED, f"usage limit reached: {text}", parse_retry_after(where, now)
    if status in {401, 403} or (status is None and _AUTH_TEXT.search(where)):
        return Outcome.AUTH_ERROR, f"authentication failed (HTTP {status}): {text}", None
    if status is not None and (status in {408, 409, 429} or status >= 500):
        return (
            Outcome.TRANSIENT_ERROR,
            f"API error (HTTP {status}), worth retrying: {text}",
            retry_after,
        )
    if error.data.get("retryable") is True or (status is None and _CONNECTION_TEXT.search(where)):
        return Outcome.TRANSIENT_ERROR, f"could not reach the API: {text}", retry_after
    if status is not None:
        return Outcome.FAILED, f"the API rejected the request (HTTP {status}): {text}", None
    return Outcome.FAILED, text, None


def judge_opencode(
    returncode: int,
    events: Sequence[AgentEvent],
    stderr: str,
    *,
    now: float | None = None,
    program: str = "opencode",
) -> AgentResult:
    """Turn a finished ``opencode run`` into an :class:`AgentResult`.

    Tokens and cost are summed over the steps (model calls). Success is exit 0 with the last
    step finished (``stop``); a last step that asked for tools but got no further is a session
    OpenCode stopped itself (a refused permission), a failure naming the refused call.
    """
    session = next((event.session_id for event in events if event.session_id), None)
    steps = [e for e in events if e.kind == "result" and e.data.get("status") != "error"]
    error = next((e for e in reversed(events) if e.data.get("status") == "error"), None)
    counts: dict[str, Any] = {
        "session_id": session,
        "turns": len(steps) or None,
        "input_tokens": _sum(step.data.get("input_tokens") for step in steps),
        "output_tokens": _sum(step.data.get("output_tokens") for step in steps),
        "cost_usd": _cost(steps),
    }
    if _RESUME_TEXT.search(stderr) and not steps and error is None:
        message = f"resume failed: the session {RESUME_FAILED}: {stderr_tail(stderr)}"
        return AgentResult(outcome=Outcome.FAILED, message=_clip(message), resume_failed=True)
    retry_after: float | None = None
    last = steps[-1] if steps else None
    if error is not None:
        clock = time.time() if now is None else now
        outcome, message, retry_after = _classify(error, clock)
    elif last is None:
        ended = f"{program} ended without finishing a step ({describe_exit(returncode)})"
        tail = stderr_tail(stderr)
        outcome = Outcome.CRASHED if returncode < 0 or not tail else Outcome.FAILED
        message = f"{ended}; stderr: {tail}" if tail else ended
    elif returncode < 0:
        outcome, message = Outcome.CRASHED, f"{program} was stopped ({describe_exit(returncode)})"
    elif last.data.get("status") == "stop" and returncode == 0:
        outcome, message = Outcome.SUCCEEDED, "finished"
    elif last.data.get("status") == "tool-calls" and returncode == 0:
        refused = [e for e in events if e.data.get("tool_error") and e.data.get("error")]
        why = f": {refused[-1].message} ({refused[-1].data['error']})" if refused else ""
        outcome, message = Outcome.FAILED, f"{program} stopped after a tool call{why}"
    elif returncode == 0:  # length (out of output tokens), content-filter, other
        outcome = Outcome.FAILED
        message = f"{program}'s last model call ended with '{last.data.get('status')}'"
    else:
        outcome = Outcome.FAILED
        message = f"{program} ended with {describe_exit(returncode)}"
        message += f"; stderr: {tail}" if (tail := stderr_tail(stderr)) else ""
    return AgentResult(outcome=outcome, message=_clip(message), retry_after_s=retry_after, **counts)
