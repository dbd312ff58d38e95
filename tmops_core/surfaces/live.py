"""The live view of a followed run on a terminal (``watch``, ``start --wait``, ``demo``).

:class:`RunPicture` is what the view knows, built from the run's events and status reads
(pure, no drawing): the state and time of each phase, the run's elapsed time and cost, the last
few things that happened (the agents' tool calls and messages among them). :func:`live_run_view`
draws it with rich, which is imported only here, only when a terminal follows a run. Text from
the trail is shown as plain text, never as rich markup (an agent's ``[bold]`` stays text).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tmops_core.orchestration.progress import terminal_safe
from tmops_core.surfaces.follow import format_event

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = ["RunPicture", "live_run_view"]

#: how many of the latest events the view lists
RECENT = 8
#: the fewest seconds between two redraws while nothing new happened (the clocks tick)
_REDRAW_S = 0.25
_STYLES = {
    "completed": ("✓", "green"),
    "in_progress": ("▶", "bold yellow"),
    "failed": ("✗", "red"),
    "needs_review": ("?", "magenta"),
    "written": ("✎", "cyan"),
    "pending": ("·", "dim"),
}


def _moment(stamp: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def seconds(value: float | None) -> str:
    """``4.2 s``, ``3 min 05 s``, ``1 h 02 min``; ``-`` for no time."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RunPicture:
    """What the live view shows of one feature's run."""

    def __init__(self, feature: str, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.feature = feature
        self._now = now
        self.state = "queued"
        self.run: str | None = None
        self.phases: list[tuple[str, str, str]] = []  # (phase, role, state)
        self.elapsed_s: float | None = None
        self.stored_cost = 0.0
        #: the cost the running attempt reported so far (in the run's cost once it ends)
        self.attempt_cost = 0.0
        self.started: dict[str, datetime] = {}
        self.durations: dict[str, float] = {}
        self.recent: deque[str] = deque(maxlen=RECENT)

    @property
    def cost(self) -> float:
        return self.stored_cost + self.attempt_cost

    def event(self, event: dict[str, Any]) -> None:
        kind, data = event["event_type"], event["data"]
        phase = data.get("phase")
        if kind == "orchestration.session.started" and isinstance(phase, str):
            moment = _moment(event["timestamp"])
            if moment is not None and (phase not in self.started or phase in self.durations):
                self.started[phase] = moment  # a phase sent back runs again from here
                self.durations.pop(phase, None)
            self.attempt_cost = 0.0
        elif kind == "orchestration.session.ended":
            self.attempt_cost = 0.0
        elif kind == "orchestration.phase.transition" and isinstance(data.get("from"), str):
            duration = data.get("duration_s")
            if isinstance(duration, int | float):
                self.durations[data["from"]] = float(duration)
        elif kind == "agent.cost" and isinstance(data.get("cost_usd"), int | float):
            self.attempt_cost = float(data["cost_usd"])
        if kind != "agent.cost":
            self.recent.append(format_event(event))

    def status(self, status: dict[str, Any]) -> None:
        self.state = str(status["status"])
        self.run = status.get("run")
        self.elapsed_s = status.get("elapsed_s")
        self.stored_cost = float(status.get("cost_usd") or 0.0)
        self.phases = [
            (str(p["phase"]), str(p["role"]), str(p["status"]))
            for p in status["phase_progress"]["phases"]
        ]

    def phase_time(self, phase: str, state: str) -> float | None:
        """How long the phase took, or has been running."""
        if phase in self.durations:
            return self.durations[phase]
        started = self.started.get(phase)
        if started is None or state != "in_progress":
            return None
        return max(0.0, (self._now() - started).total_seconds())

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        header = Text.assemble(
            (terminal_safe(self.feature), "bold"),
            f"  {self.state}",
            f"  run {terminal_safe(self.run)}" if self.run else "",
            f"  elapsed {seconds(self.elapsed_s)}",
            f"  cost ${self.cost:.4f}",
        )
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for column in ("phase", "role", "state", "time"):
            table.add_column(column)
        for phase, role, state in self.phases:
            mark, style = _STYLES.get(state, ("·", ""))
            table.add_row(
                Text(terminal_safe(phase)),
                Text(terminal_safe(role)),
                Text(f"{mark} {terminal_safe(state)}", style=style),
                Text(seconds(self.phase_time(phase, state))),
            )
        recent = Text(
            "\n".join(self.recent) or "(waiting for the first event)",
            style="dim",
            no_wrap=True,
            overflow="ellipsis",
        )  # one line per event, never wrapped: the frame keeps its height
        return Group(header, table, Text("latest:", style="bold"), recent)


class LiveRunView:
    """Draws a :class:`RunPicture` with rich's Live, redrawn on news and as the clocks tick."""

    def __init__(self, picture: RunPicture, live: Any) -> None:
        self.picture = picture
        self._live = live
        self._drawn = 0.0

    def event(self, event: dict[str, Any]) -> None:
        self.picture.event(event)
        self._drawn = 0.0  # news: redraw at the next status read

    def status(self, status: dict[str, Any]) -> None:
        self.picture.status(status)
        now = time.monotonic()
        if now - self._drawn >= _REDRAW_S:
            self._live.update(self.picture.render(), refresh=True)
            self._drawn = now


@contextmanager
def live_run_view(feature: str, *, console: Console | None = None) -> Iterator[LiveRunView]:
    """A live view of ``feature``'s run for as long as the block lasts; its last frame stays."""
    from rich.live import Live

    picture = RunPicture(feature)
    with Live(picture.render(), console=console, auto_refresh=False, transient=False) as live:
        view = LiveRunView(picture, live)
        try:
            yield view
        finally:
            live.update(picture.render(), refresh=True)
