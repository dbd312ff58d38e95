"""Claude Code's stream-json output, read, and a finished run, judged.

The ``claude-code`` provider (:mod:`tmops_plugins.claude_code`) builds the ``claude -p``
command line and calls this module for the rest; the ``command`` provider
(:mod:`tmops_plugins.command_provider`) uses it for scripts that speak stream-json. Like the
providers it is PURE: it reads lines and an exit code, never a process, a file or the
environment (the only outside data used is the time zone database, to date a usage-limit
reset). The facts it relies on are in ``reference/claude-code-cli.md`` and were checked
against the real CLI (2.1.329, recordings in ``tests/data/claude/provider/``):

- ``claude -p --output-format stream-json --verbose ...`` prints one JSON object per line:
  ``system``/``init`` (session id), ``assistant`` (tool calls, text), ``user`` (tool results),
  and last the ``result`` object.
- API errors end with exit 1 and a ``result`` whose ``subtype`` is still ``"success"``:
  ``is_error``, ``api_error_status`` and the exit code decide, the wording only refines.

It owns the reading (:func:`decode_stream_line`, :func:`events_from_message`,
:func:`parse_stream_line`) and the judgement (:func:`judge`, with :func:`parse_retry_after`,
:func:`stderr_tail`, :func:`describe_exit` and :data:`RESUME_FAILED`).
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tmops_hookspecs import AgentEvent, AgentResult, Outcome

from ._json_values import count as _count
from ._json_values import number as _number
from ._json_values import text as _str
from ._text import clip as _clip
from ._text import one_line as _one_line

__all__ = [
    "RESUME_FAILED",
    "decode_stream_line",
    "describe_exit",
    "events_from_message",
    "judge",
    "parse_retry_after",
    "parse_stream_line",
    "stderr_tail",
]

#: Words in an AgentResult message that tell a person a ``--resume`` failed; the core reads
#: ``AgentResult.resume_failed`` (set with them) and starts a fresh session.
RESUME_FAILED = "could not be resumed"

_TEXT_PREVIEW = 200
_COMMAND_PREVIEW = 80


# --------------------------------------------------------------------------------------------
# Reading the stream
# --------------------------------------------------------------------------------------------


def decode_stream_line(line: str) -> dict[str, Any] | None:
    """The JSON object of one stream-json line, or ``None`` for anything else (never raises)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return None
    return value


def _tool_summary(name: str, arguments: Mapping[str, Any]) -> str:
    if name == "Bash":
        return f"Bash: {_one_line(str(arguments.get('command', '')), _COMMAND_PREVIEW)}"
    for key in ("file_path", "notebook_path", "path", "pattern", "url", "query", "description"):
        value = arguments.get(key)
        if isinstance(value, str) and value:
            return f"{name} {_one_line(value, _TEXT_PREVIEW)}"
    return name


def _blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, Mapping) else None
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, Mapping)]


def _tool_result_text(block: Mapping[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def _result_message(message: Mapping[str, Any]) -> str:
    text = _str(message.get("result"))
    if text:
        return text
    errors = message.get("errors")
    if isinstance(errors, list):
        return "; ".join(str(error) for error in errors if error)
    return ""


def _api_retry(message: Mapping[str, Any], session_id: str | None) -> AgentEvent:
    """The CLI failed to reach the API and tries again (otherwise a silent wait of minutes):
    ``{"type": "system", "subtype": "api_retry", "attempt": 1, "max_retries": 10,
    "retry_delay_ms": 621, "error_status": null, "error": "unknown"}``."""
    attempt, most = _count(message.get("attempt")), _count(message.get("max_retries"))
    delay_ms = _number(message.get("retry_delay_ms"))
    status = _count(message.get("error_status"))
    why = f"HTTP {status}" if status is not None else _str(message.get("error")) or "no answer"
    text = f"API retry {attempt or '?'}/{most or '?'}"
    if delay_ms is not None:
        text += f" in {delay_ms / 1000:.1f} s"
    data = {"api_retry": attempt, "max_retries": most, "error_status": status}
    return AgentEvent(kind="progress", session_id=session_id, message=f"{text} ({why})", data=data)


_USAGE_KEYS = (
    ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"),
    ("output_tokens",),
)
#: the same counts per model in ``modelUsage``, which a result stopped at its budget (2.1.329)
#: fills while its ``usage`` says 0
_MODEL_USAGE_KEYS = (
    ("inputTokens", "cacheCreationInputTokens", "cacheReadInputTokens"),
    ("outputTokens",),
)


def _summed(counts: Sequence[Mapping[str, Any]], keys: tuple[str, ...]) -> int | None:
    found = [_count(entry.get(key)) for entry in counts for key in keys]
    return sum(n or 0 for n in found) if any(n is not None for n in found) else None


def _tokens(result: Mapping[str, Any]) -> dict[str, Any]:
    """The input and output tokens of a result (input counts the prompt cache's reads and
    writes too), from ``modelUsage`` when it has them, else ``usage``; and the one model of
    ``modelUsage``. Nothing for what it does not report."""
    per_model = result.get("modelUsage")
    models = (
        {name: entry for name, entry in per_model.items() if isinstance(entry, Mapping)}
        if isinstance(per_model, Mapping) else {}
    )  # fmt: skip
    usage = result.get("usage")
    counts, keys = list(models.values()), _MODEL_USAGE_KEYS
    if not any(_summed(counts, k) for k in keys):
        counts, keys = ([usage] if isinstance(usage, Mapping) else []), _USAGE_KEYS
    found: dict[str, Any] = {}
    for name, part in zip(("input_tokens", "output_tokens"), keys, strict=True):
        total = _summed(counts, part)
        if total is not None:
            found[name] = total
    if len(models) == 1:
        found["model"] = next(iter(models))
    return found


def events_from_message(message: Mapping[str, Any]) -> list[AgentEvent]:
    """What one decoded stream-json object means; unknown shapes mean nothing."""
    kind = message.get("type")
    session_id = _str(message.get("session_id"))
    if kind == "system" and message.get("subtype") == "init":
        data = {key: message.get(key) for key in ("model", "cwd", "claude_code_version")}
        return [AgentEvent(kind="session", session_id=session_id, data=data)]
    if kind == "system" and message.get("subtype") == "api_retry":
        return [_api_retry(message, session_id)]
    if kind == "assistant":
        events = []
        for block in _blocks(message):
            if block.get("type") == "tool_use":
                name = _str(block.get("name")) or "tool"
                arguments = block.get("input")
                summary = _tool_summary(name, arguments if isinstance(arguments, Mapping) else {})
                data = {"tool": name, "tool_use_id": block.get("id")}
                events.append(
                    AgentEvent(kind="progress", session_id=session_id, message=summary, data=data)
                )
            elif block.get("type") == "text" and _str(block.get("text")):
                text = str(block["text"])
                events.append(
                    AgentEvent(kind="progress", session_id=session_id, message=text[:_TEXT_PREVIEW])
                )
        return events
    if kind == "user":
        # Tool results are the agent's business; a failed or denied one is worth showing.
        return [
            AgentEvent(
                kind="progress",
                session_id=session_id,
                message=f"tool error: {_one_line(_tool_result_text(block), _TEXT_PREVIEW)}",
                data={"tool_use_id": block.get("tool_use_id"), "tool_error": True},
            )
            for block in _blocks(message)
            if block.get("type") == "tool_result" and block.get("is_error") is True
        ]
    if kind == "result":
        denials = message.get("permission_denials")
        result: dict[str, Any] = {
            "subtype": message.get("subtype"),
            "is_error": message.get("is_error"),
            "api_error_status": message.get("api_error_status"),
            "duration_ms": message.get("duration_ms"),
            "permission_denials": len(denials) if isinstance(denials, list) else 0,
            **_tokens(message),
        }
        return [
            AgentEvent(
                kind="result",
                session_id=session_id,
                message=_result_message(message),
                cost_usd=_number(message.get("total_cost_usd")),
                turns=_count(message.get("num_turns")),
                data=result,
            )
        ]
    return []


def parse_stream_line(line: str) -> list[AgentEvent]:
    """Events of one line of ``claude -p --output-format stream-json`` (garbage: none)."""
    message = decode_stream_line(line)
    return [] if message is None else events_from_message(message)


# --------------------------------------------------------------------------------------------
# Judging the end
# --------------------------------------------------------------------------------------------

_RESUME_TEXT = re.compile(
    r"no conversation found|--resume requires|session .{0,80}not found|could not resume", re.I
)
_USAGE_TEXT = re.compile(
    r"usage limit|hit your (?:[\w-]+ )?limit|(?<!context )(?<!budget )limit (?:reached|will reset)"
    r"|limit\s*[·∙•|-]\s*resets|out of (?:extra )?usage|credit balance is too low",
    re.I,
)
_AUTH_TEXT = re.compile(
    r"not logged in|invalid api key|/login|oauth token|authentication_error|invalid x-api-key"
    r"|authentication failed",
    re.I,
)
_CONNECTION_TEXT = re.compile(
    r"ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|connection refused|unable to connect"
    r"|connection error|fetch failed|socket hang up|request timed out"
    r"|empty or malformed response",
    re.I,
)
_EPOCH = re.compile(r"\|\s*(\d{10})\b")
_RELATIVE = re.compile(
    r"(?:retry[- ]after|try again in|retry in|resets? in|available in)\s*:?\s*"
    r"(?P<spec>\d+(?:\.\d+)?\s*[a-z]*(?:[\s,]+(?:and\s+)?\d+(?:\.\d+)?\s*[a-z]*)*)",
    re.I,
)
_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.I)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_ABSOLUTE = re.compile(
    r"\breset(?:s)?(?:\s+at|\s+on)?\s+"
    r"(?:(?P<month>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+"
    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?,?(?:\s+at)?\s*)?"
    r"(?P<time>\d{1,2}(?::\d{2})?\s*[ap]m|\d{1,2}:\d{2}|midnight|noon)?"
    r"(?:\s*\(?\s*(?P<tz>UTC|GMT|Z|[A-Za-z]+/[A-Za-z0-9_+/-]+)\s*\)?)?",
    re.I,
)


def _seconds(spec: str) -> float | None:
    total = 0.0
    for number, word in _UNIT.findall(spec):
        unit = word.lower()
        if unit.startswith("h"):
            total += float(number) * 3600
        elif unit.startswith("m") and not unit.startswith("ms"):
            total += float(number) * 60
        elif unit in {"", "s", "sec", "secs", "second", "seconds"}:
            total += float(number)
        else:
            return None
    return total


def _zone(name: str | None, now: float) -> tzinfo:
    if name and name.upper() in {"UTC", "GMT", "Z"}:
        return ZoneInfo("UTC")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    local = datetime.fromtimestamp(now).astimezone().tzinfo
    return local if local is not None else ZoneInfo("UTC")


def _clock_time(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    word = text.lower().replace(" ", "")
    if word == "midnight":
        return 0, 0
    if word == "noon":
        return 12, 0
    suffix = word[-2:] if word[-2:] in {"am", "pm"} else ""
    hour_text, _, minute_text = word.removesuffix(suffix).partition(":")
    hour, minute = int(hour_text), int(minute_text or 0)
    if suffix:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if suffix == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return hour, minute


def _absolute(match: re.Match[str], now: float) -> float | None:
    clock = _clock_time(match.group("time"))
    month = match.group("month")
    if clock is None and month is None:
        return None
    zone = _zone(match.group("tz"), now)
    current = datetime.fromtimestamp(now, zone)
    hour, minute = clock or (0, 0)
    try:
        if month is not None:
            target = current.replace(
                month=_MONTHS.index(month.lower()[:3]) + 1,
                day=int(match.group("day")),
                hour=hour,
                minute=minute,
                second=0,
                microsecond=0,
            )
            if target.timestamp() < now - 86400:  # a date long past means next year's
                target = target.replace(year=target.year + 1)
        else:
            target = current.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if target.timestamp() <= now:
                target = datetime.combine(
                    target.date() + timedelta(days=1), target.timetz()
                ).replace(tzinfo=zone)
    except ValueError:  # Feb 30 and the like
        return None
    return max(0.0, target.timestamp() - now)


def parse_retry_after(text: str, now: float) -> float | None:
    """Seconds until a limit named in ``text`` lifts, or ``None`` when it names no time.

    Understands ``...limit reached|1767225600`` (an epoch, Claude Code 1.x), ``resets 3pm
    (Europe/London)``, ``resets Apr 23 at 4pm (UTC)``, ``will reset at 9am``, ``resets at
    midnight UTC``, ``resets Aug 8`` (local time when no zone is given), and relative
    ``try again in 2h 30m`` / ``retry after 37 seconds`` / ``Retry-After: 37``.
    """
    if match := _EPOCH.search(text):
        return max(0.0, float(match.group(1)) - now)
    if match := _RELATIVE.search(text):
        seconds = _seconds(match.group("spec"))
        if seconds is not None:
            return seconds
    for match in _ABSOLUTE.finditer(text):
        seconds = _absolute(match, now)
        if seconds is not None:
            return seconds
    return None


def stderr_tail(stderr: str, *, lines: int = 10, limit: int = 600) -> str:
    """The last non-empty lines of stderr, on one line, for a message."""
    kept = [line.strip() for line in stderr.splitlines() if line.strip()][-lines:]
    text = " | ".join(kept)
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def describe_exit(returncode: int) -> str:
    """``killed by signal SIGKILL``, ``exit code 143, after SIGTERM`` or ``exit code 2``."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    if returncode > 128:
        try:
            return f"exit code {returncode}, after {signal.Signals(returncode - 128).name}"
        except ValueError:
            pass
    return f"exit code {returncode}"


def _with_stderr(message: str, stderr: str) -> str:
    tail = stderr_tail(stderr)
    return _clip(f"{message}; stderr: {tail}" if tail else f"{message}; nothing on stderr")


def _last(events: Sequence[AgentEvent], kind: str) -> AgentEvent | None:
    return next((event for event in reversed(events) if event.kind == kind), None)


def _session_of(events: Sequence[AgentEvent]) -> str | None:
    return next((event.session_id for event in reversed(events) if event.session_id), None)


def _resume_failed(text: str, cost_usd: float | None) -> AgentResult:
    # No session id: the one in the output names no usable session, so none must be resumed.
    return AgentResult(
        outcome=Outcome.FAILED,
        cost_usd=cost_usd,
        message=_clip(f"resume failed: the session {RESUME_FAILED}: {text}"),
        resume_failed=True,
    )


def _judge_without_result(
    returncode: int, events: Sequence[AgentEvent], stderr: str, program: str
) -> AgentResult:
    session = _session_of(events)
    if _RESUME_TEXT.search(stderr):
        return _resume_failed(stderr_tail(stderr), None)
    if returncode == 1 and not events and stderr.strip():
        # What the CLI does with a bad flag: a line on stderr, exit 1, nothing on stdout.
        return AgentResult(
            outcome=Outcome.FAILED,
            message=_clip(
                f"{program} refused its command line (exit code 1): " + stderr_tail(stderr)
            ),
        )
    return AgentResult(
        outcome=Outcome.CRASHED,
        session_id=session,
        message=_with_stderr(
            f"{program} ended without a result ({describe_exit(returncode)})", stderr
        ),
    )


def _classify(
    returncode: int, result: AgentEvent, stderr: str, now: float, program: str
) -> tuple[Outcome, str, float | None]:
    text = result.message or ""
    subtype = result.data.get("subtype")
    is_error = result.data.get("is_error") is True
    status = _count(result.data.get("api_error_status"))
    if not is_error and returncode == 0 and subtype == "success":
        if _USAGE_TEXT.search(text) and _EPOCH.search(text):
            # Claude Code 1.x reported a subscription limit as a successful "result".
            return Outcome.USAGE_LIMITED, text, parse_retry_after(text, now)
        return Outcome.SUCCEEDED, text or "finished", None
    if subtype == "error_max_turns":
        return Outcome.FAILED, f"reached max turns after {result.turns} turns: {text}", None
    if subtype == "error_max_budget_usd":
        message = f"{program} stopped at the budget it was given (--max-budget-usd): {text}"
        return Outcome.BUDGET_EXHAUSTED, message.rstrip(": "), None
    if _USAGE_TEXT.search(text):
        return Outcome.USAGE_LIMITED, text, parse_retry_after(text, now)
    if status in {401, 403} or (status is None and _AUTH_TEXT.search(text)):
        return Outcome.AUTH_ERROR, f"{text} (HTTP {status})" if status else text, None
    if status is not None and (status in {408, 409, 429} or status >= 500):
        message = f"API error (HTTP {status}), worth retrying: {text}"
        return Outcome.TRANSIENT_ERROR, message, parse_retry_after(text, now)
    if status is not None:
        return Outcome.FAILED, f"the API rejected the request (HTTP {status}): {text}", None
    if _CONNECTION_TEXT.search(text):
        return Outcome.TRANSIENT_ERROR, f"could not reach the API: {text}", None
    detail = text or stderr_tail(stderr)
    if subtype == "error_during_execution":
        return Outcome.FAILED, f"error during execution: {detail}", None
    if is_error:
        return (
            Outcome.FAILED,
            f"{program} reported an error ({describe_exit(returncode)}): {detail}",
            None,
        )
    # A result that says success, but the process did not exit 0.
    ended = f"{program} reported success but ended with {describe_exit(returncode)}"
    outcome = Outcome.CRASHED if returncode < 0 else Outcome.FAILED
    return outcome, _with_stderr(ended, stderr), None


def judge(
    returncode: int,
    events: Sequence[AgentEvent],
    stderr: str,
    *,
    now: float | None = None,
    program: str = "claude",
) -> AgentResult:
    """Turn a finished Claude Code run into an :class:`AgentResult` (reference error table).

    The exit code and ``is_error`` decide success; ``subtype``, ``api_error_status`` and the
    wording of the result refine a failure. ``now`` (epoch seconds) dates a usage-limit reset.
    """
    result = _last(events, "result")
    if result is None:
        return _judge_without_result(returncode, events, stderr, program)
    clock = time.time() if now is None else now
    outcome, message, retry_after_s = _classify(returncode, result, stderr, clock, program)
    if outcome is Outcome.FAILED and (
        _RESUME_TEXT.search(result.message) or _RESUME_TEXT.search(stderr)
    ):
        return _resume_failed(result.message or stderr_tail(stderr), result.cost_usd)
    session = _last(events, "session")
    return AgentResult(
        outcome=outcome,
        session_id=result.session_id or _session_of(events),
        cost_usd=result.cost_usd,
        turns=result.turns,
        message=_clip(message),
        retry_after_s=retry_after_s,
        input_tokens=_count(result.data.get("input_tokens")),
        output_tokens=_count(result.data.get("output_tokens")),
        model=_str(result.data.get("model"))
        or (_str(session.data.get("model")) if session is not None else None),
    )
