"""An agent's progress in the run's event trail, so that whoever follows the run (``tmops
watch``, ``start --wait``, ``demo``, in any process) sees what the agent does as it happens.

What a provider understood from its agent's output (:class:`~tmops_hookspecs.AgentEvent`)
becomes one of three events: ``agent.tool`` (a tool call: its name and a short target,
``Write tests/test_slug.py``), ``agent.message`` (the first line of a text, clipped) and
``agent.cost`` (the attempt's cost so far). The agent's text is untrusted: escape sequences and
control characters are taken out (a terminal would obey them) and secrets redacted before it is
recorded. A chatty agent cannot flood the store: events pass a token bucket; those over it are
counted in the next event recorded (``skipped``), and the last of them is recorded when the
attempt ends.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tmops_core.secrets import redact_text
from tmops_hookspecs import AgentEvent, PhaseSpec

__all__ = ["AgentProgress", "terminal_safe"]

#: CSI and OSC sequences, other two-byte escapes, C0/C1 controls and the bidi overrides that
#: make a terminal move the cursor, recolour, retitle or reorder what it shows
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[ -~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)
#: the longest target or message an event keeps
TEXT_LIMIT = 160
#: the bucket: a burst of this many events, then ``_REFILL_PER_S`` a second
_BURST = 30
_REFILL_PER_S = 4.0
#: a cost that keeps changing is recorded at most this often (the last one always is)
_COST_EVERY_S = 2.0


def terminal_safe(text: object, limit: int | None = TEXT_LIMIT) -> str:
    """``text`` as one line that is safe to print: escape sequences and control characters
    out, whitespace folded, secrets redacted, clipped to ``limit`` characters."""
    flat = " ".join(_ESCAPES.sub(" ", str(text)).split())
    flat = redact_text(flat)
    if limit is not None and len(flat) > limit:
        return flat[: limit - 1] + "…"
    return flat


class AgentProgress:
    """Turns one attempt's :class:`AgentEvent` stream into throttled trail events.

    ``emit(event_type, **data)`` records an event (the run driver's fenced ``emit``, which
    never raises). Called from the agent's reader thread and, for :meth:`flush`, from the
    driver's.
    """

    def __init__(
        self,
        emit: Callable[..., None],
        phase: PhaseSpec,
        attempt: int,
        *,
        roots: Sequence[Path] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._base = {"phase": phase.name, "role": phase.role, "attempt": attempt}
        #: paths under these (the worktree, the checkpoint folder) are shown relative to them
        self._roots = tuple(f"{root}/" for root in roots)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(_BURST)
        self._refilled = clock()
        self._skipped = 0
        self._held: tuple[str, dict[str, Any]] | None = None
        self._cost: float | None = None
        self._cost_recorded: float | None = None
        self._cost_at = float("-inf")

    def record(self, event: AgentEvent) -> None:
        """One thing the provider understood; most are recorded, a flood is thinned."""
        if event.cost_usd is not None:
            self._record_cost(event.cost_usd, final=event.kind == "result")
        if event.kind != "progress":
            return
        shaped = self._shape(event)
        if shaped is None:
            return
        with self._lock:
            if self._take_token():
                self._send(*shaped)
            else:
                self._skipped += 1
                self._held = shaped

    def flush(self) -> None:
        """The attempt ended: record the last thinned-out event and the last cost."""
        with self._lock:
            if self._held is not None:
                self._skipped -= 1
                self._send(*self._held)
            if self._cost is not None and self._cost != self._cost_recorded:
                self._send_cost(self._cost)

    # -- shaping -----------------------------------------------------------------------------

    def _shape(self, event: AgentEvent) -> tuple[str, dict[str, Any]] | None:
        tool = event.data.get("tool")
        if isinstance(tool, str) and tool:
            return "agent.tool", {
                "tool": terminal_safe(tool, 40),
                "target": self._target(tool, event),
            }
        text = terminal_safe(event.message.strip().splitlines()[0] if event.message.strip() else "")
        if not text:
            return None
        return "agent.message", {"text": self._relative(text)}

    def _target(self, tool: str, event: AgentEvent) -> str:
        """What the call acts on, from the provider's summary (``Write /w/tests/t.py``,
        ``Bash: cmd``): paths inside the worktree shown relative to it, a command's program
        by its name."""
        summary = event.message.strip()
        for prefix in (f"{tool}: ", f"{tool} "):
            if summary.startswith(prefix):
                summary = summary[len(prefix) :]
                break
        else:
            if summary == tool:
                summary = ""
        target = self._relative(terminal_safe(summary))
        if tool == "Bash":
            program, _, rest = target.partition(" ")
            if program.startswith("/"):
                target = f"{Path(program).name} {rest}".rstrip()
        return target

    def _relative(self, text: str) -> str:
        for root in self._roots:
            text = text.replace(root, "")
        return text

    # -- throttling --------------------------------------------------------------------------

    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(_BURST, self._tokens + (now - self._refilled) * _REFILL_PER_S)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _send(self, event_type: str, data: Mapping[str, Any]) -> None:
        extra = {"skipped": self._skipped} if self._skipped else {}
        self._emit(event_type, **self._base, **data, **extra)
        self._skipped = 0
        self._held = None

    def _record_cost(self, cost: float, *, final: bool) -> None:
        with self._lock:
            self._cost = cost
            if cost == self._cost_recorded:
                return
            if final or self._clock() - self._cost_at >= _COST_EVERY_S:
                self._send_cost(cost)

    def _send_cost(self, cost: float) -> None:
        self._emit("agent.cost", **self._base, cost_usd=round(cost, 6))
        self._cost_recorded = cost
        self._cost_at = self._clock()
