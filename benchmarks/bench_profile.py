"""The handoff's profile: timing wrappers on the handoff path, and the critical-path analysis.

The wrappers are installed in this process only (:func:`install_tracer`) and removed by
:meth:`Tracer.close`; :func:`analyse_handoff` turns their spans into the steps of each
handoff, which add up to it exactly.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench_stats import dist, ms, percentile


class Tracer:
    """Records spans (label, thread, start, end) and points in ``time.time_ns`` (the clock the
    agents use) by wrapping functions on the handoff path; ``close`` restores them all."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, int, int]] = []
        self.points: list[tuple[str, str, int]] = []
        self.missing: list[str] = []
        self._undo: list[tuple[Any, str, Any]] = []
        self._lock = threading.Lock()

    def point(self, label: str) -> None:
        now = time.time_ns()
        with self._lock:
            self.points.append((label, threading.current_thread().name, now))

    def wrap(
        self,
        owner: Any,
        name: str,
        label: str | Callable[..., str],
        after: Callable[[Any], None] | None = None,
    ) -> None:
        if isinstance(owner, type):
            # wrap it where it is defined: a method may come from a mixin of the class
            owner = next((k for k in owner.__mro__ if name in k.__dict__), owner)
            original = owner.__dict__.get(name)
        else:
            original = getattr(owner, name, None)
        if original is None:  # the source changed under us: profile what is still there
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            return
        spans, lock = self.spans, self._lock

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.time_ns()
            try:
                result = original(*args, **kwargs)
            finally:
                end = time.time_ns()
                text = label(*args, **kwargs) if callable(label) else label
                with lock:
                    spans.append((text, threading.current_thread().name, start, end))
            if after is not None:
                after(result)
            return result

        self._undo.append((owner, name, original))
        setattr(owner, name, wrapper)

    def close(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def _git_label(_git: Any, *args: str, **_: Any) -> str:
    words = list(args)
    while words and words[0] == "-c":
        words = words[2:]
    return "git " + (words[0] if words else "?")


def install_tracer() -> Tracer:
    import tmops_core.agents.supervisor as sup
    import tmops_core.checkpoints.watch as watch_mod
    import tmops_core.git as git_mod
    import tmops_core.orchestration.judge as judge_mod
    import tmops_core.orchestration.prompts as prompts_mod
    import tmops_core.orchestration.run as runner_mod
    import tmops_core.plugins as plugins_mod
    import tmops_core.store.sqlite as store_mod

    tracer = Tracer()
    wrap = tracer.wrap

    def exited(result: Any) -> None:
        if result:
            tracer.point("exit_detected")

    def outcome(result: Any) -> None:
        if result is not None and threading.current_thread().name.startswith("run-"):
            tracer.point("outcome_seen")

    wrap(watch_mod.Arrivals, "__call__", "inotify_callback")
    wrap(sup.AgentProcess, "_has_exited", "has_exited", after=exited)
    wrap(sup, "_terminate", "sweep")
    wrap(sup.AgentProcess, "_finish", "finish")
    wrap(sup.AgentProcess, "wait", "wait", after=outcome)
    wrap(sup.AgentProcess, "start", "agent_start")
    wrap(sup.AgentProcess, "_popen_now", "popen")
    wrap(runner_mod.RunDriver, "_attempt", "attempt")
    wrap(judge_mod.Judge, "judge", "judge")
    wrap(runner_mod.RunDriver, "_run_phase", "run_phase")
    wrap(prompts_mod, "write_trigger", "write_trigger")
    wrap(runner_mod.RunDriver, "emit", "emit")
    wrap(judge_mod, "parse_checkpoint", "parse_checkpoint")
    wrap(judge_mod, "run_validators", "run_validators")
    wrap(git_mod.Git, "run", _git_label)
    wrap(git_mod.Git, "commit_work", "commit_work")
    for method in ("start_attempt", "attempt_process", "finish_attempt", "add_event"):
        wrap(store_mod.SQLiteStore, method, f"store.{method}")
    for method in ("phase_started", "phase_finished"):
        wrap(plugins_mod.Plugins, method, f"hook.{method}")
    return tracer


# The critical path from "checkpoint closed" to "next agent's first statement", as milestones
# in order; each step runs from the previous milestone to this one. Kinds: "point" (a tracer
# point), "end"/"start" (of a span with that label), "agent" (the next agent's first statement).
MILESTONES: list[tuple[str, str, str]] = [
    ("agent exits + exit seen (pidfd poll)", "point", "exit_detected"),
    ("process-tree sweep (_terminate: /proc scan)", "end", "sweep"),
    ("drain output + reap (_finish)", "end", "finish"),
    ("runner notices outcome (wait poll)", "point", "outcome_seen"),
    ("2 events + provider.finish (rest of _attempt)", "end", "attempt"),
    ("parse + validate + gates (Judge.judge)", "end", "judge"),
    ("git commit_work (git status --porcelain)", "end", "commit_work"),
    ("store finish_attempt (transition txn)", "end", "store.finish_attempt"),
    ("transition event + phase_finished hooks", "end", "run_phase"),
    ("next phase: trigger + git rev-parse HEAD", "end", "git rev-parse"),
    ("git update-ref (phase-start marker)", "end", "git update-ref"),
    ("store start_attempt", "end", "store.start_attempt"),
    ("phase_started hooks", "end", "hook.phase_started"),
    ("request/invocation/env build", "start", "agent_start"),
    ("log open + spawner thread handoff", "start", "popen"),
    ("Popen (fork+exec, preexec_fn)", "end", "popen"),
    ("child interpreter start -> first statement", "agent", ""),
]
_NOT_TOTALLED = {"run_phase", "attempt", "wait", "has_exited", "inotify_callback"}


def _first_at_or_after(items: list[tuple[int, str]], label: str, t: int, limit: int) -> int | None:
    for when, what in items:
        if what == label and t <= when <= limit:
            return when
    return None


def analyse_handoff(tracer: Tracer, windows: list[tuple[int, int, int]]) -> dict[str, Any]:
    """Per handoff (close_i, start_i+1, close_i+1): the critical-path steps, the time of each
    span label between close_i and start_i+1, and the inotify detection running in parallel.

    A milestone may land after the next agent's first statement (the parent's ``Popen``
    returns once the child has exec'd, and the child can be running Python by the time the
    spawning thread is scheduled again): it is looked for up to the next agent's close and
    clipped to its start, so the steps always add up to the handoff."""
    sources = {
        "point": sorted((t, label) for label, _, t in tracer.points),
        "start": sorted((s, label) for label, _, s, _ in tracer.spans),
        "end": sorted((e, label) for label, _, _, e in tracer.spans),
    }
    steps: dict[str, list[float]] = defaultdict(list)
    totals: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, list[int]] = defaultdict(list)
    parallel: list[float] = []
    for closed, started, horizon in windows:
        previous = closed
        for title, kind, label in MILESTONES:
            when = started if kind == "agent" else None
            if kind != "agent":
                when = _first_at_or_after(sources[kind], label, previous, horizon)
            if when is None:
                continue
            when = min(when, started)
            steps[title].append(ms(when - previous))
            previous = when
        callback = _first_at_or_after(sources["start"], "inotify_callback", closed, started)
        if callback is not None:
            parallel.append(ms(callback - closed))
        inside: dict[str, list[int]] = defaultdict(list)
        for label, _, start, end in tracer.spans:
            low, high = max(start, closed), min(end, started)
            if label not in _NOT_TOTALLED and high > low:
                inside[label].append(high - low)
        for label, parts in inside.items():
            totals[label].append(ms(sum(parts)))
            calls[label].append(len(parts))
    return {
        "critical_path_ms": {t: dist(steps[t]) for t, _, _ in MILESTONES if t in steps},
        "span_totals_in_window_ms": {
            label: {**dist(values), "calls_per_handoff_p50": percentile(calls[label], 50)}
            for label, values in sorted(totals.items())
        },
        "inotify_detection_parallel_ms": dist(parallel),
    }
