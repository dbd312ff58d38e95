"""Gemini CLI's stream-json output, read, and a finished run, judged.

The ``gemini`` provider (:mod:`tmops_plugins.gemini_provider`) builds the command line and
calls this module for the rest. Like every provider it is PURE: it reads lines and an exit
code, never a process, a file or the environment. The facts were checked against the real CLI
(0.61.0, recordings in ``tests/data/gemini/``):

- ``gemini -p ... -o stream-json`` prints one JSON object per line: ``init`` (session id,
  model), ``message`` (user and assistant text), ``tool_use`` (``tool_name``, ``parameters``),
  ``tool_result`` (``status``, ``output`` or ``error``) and last ``result`` with ``status``
  (``success`` or ``error``), an ``error`` object on failure and ``stats`` (tokens, no cost).
- An API error after the CLI's own retries ends the run with a ``result`` whose ``error``
  message carries the API's JSON (``"code":401``...); a fatal error exits with the CLI's code:
  41 authentication, 42 bad input, 44 sandbox, 52 config, 53 turn limit, 54 tool failure,
  55 untrusted folder, 130 cancelled.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from datetime import time as time_of_day
from typing import Any
from zoneinfo import ZoneInfo

from tmops_hookspecs import AgentEvent, AgentResult, Outcome

from ._json_values import count as _count
from ._json_values import text as _str
from ._text import clip as _clip
from ._text import one_line as _one_line
from .claude_stream import (
    RESUME_FAILED,
    decode_stream_line,
    describe_exit,
    parse_retry_after,
    stderr_tail,
)

__all__ = ["EXIT_CODES", "judge", "parse_stream_line"]

_TEXT_PREVIEW = 200
_COMMAND_PREVIEW = 80

#: The CLI's fatal exit codes (``FatalError`` subclasses) and what they mean.
EXIT_CODES: Mapping[int, str] = {
    41: "authentication failed",
    42: "bad input",
    44: "sandbox error",
    52: "configuration error",
    53: "turn limit reached",
    54: "tool execution failed",
    55: "untrusted workspace",
    130: "cancelled",
}


def _tool_summary(name: str, parameters: Mapping[str, Any]) -> str:
    if name == "run_shell_command":
        command = str(parameters.get("command", ""))
        return f"run_shell_command: {_one_line(command, _COMMAND_PREVIEW)}"
    for key in ("file_path", "absolute_path", "dir_path", "path", "pattern", "url", "query"):
        value = parameters.get(key)
        if isinstance(value, str) and value:
            return f"{name} {_one_line(value, _TEXT_PREVIEW)}"
    return name


def _stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Tokens of the whole session and, when only one model answered, its name."""
    found: dict[str, Any] = {}
    for key in ("input_tokens", "output_tokens", "tool_calls", "duration_ms"):
        if (value := _count(stats.get(key))) is not None:
            found[key] = value
    models = stats.get("models")
    if isinstance(models, Mapping):
        # the router's classifier call counts as a model of its own: name the one that worked
        used = [
            name
            for name, entry in models.items()
            if isinstance(entry, Mapping) and (_count(entry.get("output_tokens")) or 0) > 0
        ]
        if len(used) == 1:
            found["model"] = used[0]
    return found


def _events(message: Mapping[str, Any]) -> list[AgentEvent]:
    kind = message.get("type")
    session_id = _str(message.get("session_id"))
    if kind == "init":
        return [
            AgentEvent(kind="session", session_id=session_id, data={"model": message.get("model")})
        ]
    if kind == "tool_use":
        name = _str(message.get("tool_name")) or "tool"
        parameters = message.get("parameters")
        summary = _tool_summary(name, parameters if isinstance(parameters, Mapping) else {})
        data: dict[str, Any] = {"tool": name, "tool_use_id": message.get("tool_id")}
        if name == "run_shell_command" and isinstance(parameters, Mapping):
            data["command"] = _one_line(str(parameters.get("command", "")), _COMMAND_PREVIEW)
        return [AgentEvent(kind="progress", message=summary, data=data)]
    if kind == "tool_result" and message.get("status") == "error":
        error = message.get("error")
        text = _str(error.get("message")) if isinstance(error, Mapping) else _str(error)
        return [
            AgentEvent(
                kind="progress",
                message=f"tool error: {_one_line(text or 'failed', _TEXT_PREVIEW)}",
                data={"tool_use_id": message.get("tool_id"), "tool_error": True},
            )
        ]
    if kind == "message" and message.get("role") == "assistant":
        text = _str(message.get("content"))
        return [AgentEvent(kind="progress", message=text[:_TEXT_PREVIEW])] if text else []
    if kind == "error":
        text = _str(message.get("message")) or "error"
        return [AgentEvent(kind="error", message=text, data={"severity": message.get("severity")})]
    if kind == "result":
        error = message.get("error")
        stats = message.get("stats")
        data = {
            "status": message.get("status"),
            "error_type": error.get("type") if isinstance(error, Mapping) else None,
            **(_stats(stats) if isinstance(stats, Mapping) else {}),
        }
        text = _str(error.get("message")) if isinstance(error, Mapping) else None
        return [AgentEvent(kind="result", message=text or "", data=data)]
    return []


def parse_stream_line(line: str) -> list[AgentEvent]:
    """Events of one line of ``gemini -o stream-json`` (garbage: none)."""
    message = decode_stream_line(line)
    return [] if message is None else _events(message)


# --------------------------------------------------------------------------------------------
# Judging the end
# --------------------------------------------------------------------------------------------

_STATUS = re.compile(r'"code"\s*:\s*(\d{3})|\b(?:status|code)\s*:?\s*(\d{3})\b', re.I)
_AUTH_TEXT = re.compile(
    r"UNAUTHENTICATED|PERMISSION_DENIED|API key not valid|invalid api key|GEMINI_API_KEY", re.I
)
#: A quota that lifts at a set time (a daily or monthly limit), not a per-minute rate.
_USAGE_TEXT = re.compile(
    r"exhausted your daily quota|quota exceeded for quota metric|per ?day|daily (?:limit|quota)"
    r"|usage limit|TerminalQuotaError",
    re.I,
)
#: Where Google's daily quotas reset at midnight, when the error names no time.
_QUOTA_ZONE = ZoneInfo("America/Los_Angeles")
_RETRY_DELAY = re.compile(
    r'"retryDelay"\s*:\s*"(\d+(?:\.\d+)?)s"|retry in (\d+(?:\.\d+)?)\s*s', re.I
)
_CONNECTION_TEXT = re.compile(
    r"ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|fetch failed|socket hang up", re.I
)
_RESUME_TEXT = re.compile(
    r"invalid session identifier|no previous sessions|session .{0,80}not found", re.I
)


def _status(text: str) -> int | None:
    match = _STATUS.search(text)
    return int(match.group(1) or match.group(2)) if match else None


def _retry_after(text: str, now: float) -> float | None:
    match = _RETRY_DELAY.search(text)
    if match:
        return float(match.group(1) or match.group(2))
    return parse_retry_after(text, now)


def _until_quota_midnight(now: float) -> float:
    current = datetime.fromtimestamp(now, _QUOTA_ZONE)
    midnight = datetime.combine(current.date() + timedelta(days=1), time_of_day(0), _QUOTA_ZONE)
    return midnight.timestamp() - now


def _classify(text: str, now: float) -> tuple[Outcome, str, float | None] | None:
    """The outcome an API error message names, or None when it names none."""
    status = _status(text)
    if status in {401, 403} or _AUTH_TEXT.search(text):
        return Outcome.AUTH_ERROR, f"authentication failed: {text}", None
    if status in {429, None} and _USAGE_TEXT.search(text):
        # the CLI words a daily quota without the HTTP status (0.61.0)
        retry_after = _retry_after(text, now)
        if retry_after is None:
            retry_after = _until_quota_midnight(now)
        return Outcome.USAGE_LIMITED, f"usage limit reached: {text}", retry_after
    if status is not None and (status in {408, 409, 429} or status >= 500):
        message = f"API error (HTTP {status}), worth retrying: {text}"
        return Outcome.TRANSIENT_ERROR, message, _retry_after(text, now)
    if _CONNECTION_TEXT.search(text):
        return Outcome.TRANSIENT_ERROR, f"could not reach the API: {text}", None
    if status is not None:
        return Outcome.FAILED, f"the API rejected the request (HTTP {status}): {text}", None
    return None


def _by_exit(returncode: int, text: str, program: str) -> tuple[Outcome, str]:
    meaning = EXIT_CODES.get(returncode)
    detail = f"{program} ended with {describe_exit(returncode)}"
    detail += f" ({meaning})" if meaning else ""
    detail += f": {text}" if text else ""
    if returncode == 41:
        return Outcome.AUTH_ERROR, detail
    if returncode == 130:
        return Outcome.CANCELLED, detail
    if returncode < 0:
        return Outcome.CRASHED, detail
    return Outcome.FAILED, detail


def judge(
    returncode: int,
    events: Sequence[AgentEvent],
    stderr: str,
    *,
    now: float | None = None,
    program: str = "gemini",
) -> AgentResult:
    """Turn a finished Gemini CLI run into an :class:`AgentResult`.

    The exit code and the result's ``status`` decide success; the API error in the result (or
    on stderr) refines a failure. Gemini reports tokens but no cost: ``cost_usd`` stays None
    so tmops prices the tokens from ``providers.<name>.prices``.
    """
    clock = time.time() if now is None else now
    result = next((e for e in reversed(events) if e.kind == "result"), None)
    session = next((e for e in events if e.kind == "session"), None)
    session_id = session.session_id if session is not None else None
    tail = stderr_tail(stderr)
    text = (result.message if result is not None else "") or ""
    if _RESUME_TEXT.search(stderr) or _RESUME_TEXT.search(text):
        return AgentResult(
            outcome=Outcome.FAILED,
            message=_clip(f"resume failed: the session {RESUME_FAILED}: {text or tail}"),
            resume_failed=True,
        )
    retry_after: float | None = None
    if result is not None and returncode == 0 and result.data.get("status") == "success":
        outcome, message = Outcome.SUCCEEDED, "finished"
    elif returncode == 53:
        outcome, message = Outcome.FAILED, f"reached the session's turn limit: {text or tail}"
    elif (found := _classify(text or stderr, clock)) is not None:
        outcome, message, retry_after = found
    elif result is None and returncode not in EXIT_CODES:
        outcome = Outcome.CRASHED
        message = f"{program} ended without a result ({describe_exit(returncode)})"
        message += f"; stderr: {tail}" if tail else "; nothing on stderr"
    else:
        outcome, message = _by_exit(returncode, text or tail, program)
    data = result.data if result is not None else {}
    model = _str(data.get("model"))
    if model is None and session is not None:
        model = _str(session.data.get("model"))
    return AgentResult(
        outcome=outcome,
        session_id=session_id,
        cost_usd=None,
        message=_clip(message),
        retry_after_s=retry_after,
        input_tokens=_count(data.get("input_tokens")),
        output_tokens=_count(data.get("output_tokens")),
        model=model if model != "auto" else None,
    )
