"""The worktree's setup command (``features.worktree_setup``), run once per worktree before the
run's first agent: dependencies installed, code generated, whatever a fresh checkout needs.

It runs as the gates' test command does: an argv list (never a shell) in the worktree, through
the supervisor (its own process group, the agents' environment allowlist, killed with its tree
after ``features.worktree_setup_timeout``), its output in the run's ``logs/setup.log`` (0600,
secrets redacted). That it succeeded is recorded in the worktree's own git directory
(``tmops-setup.json``), which goes with the worktree: a worktree made again sets up again, and
so does one whose configured command changed. A failure fails the run with the tail of the
output and what to do; the worktree and everything in it stay, and the resumed run runs the
setup again. Nothing runs in ``checkout`` isolation (the project root is the user's own).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tmops_core.agents.env import build_env
from tmops_core.agents.supervisor import AgentProcess, Limits
from tmops_core.config import Config
from tmops_core.git import Git
from tmops_core.secrets import redact_text
from tmops_core.store import Store
from tmops_core.workspace.layout import Layout, atomic_write, read_checked, shown
from tmops_hookspecs import TmopsError

__all__ = ["SETUP_LOG", "SETUP_MARKER", "run_worktree_setup"]

SETUP_LOG = "setup.log"
SETUP_MARKER = "tmops-setup.json"
_TAIL_LINES = 20
_POLL_S = 0.2


def run_worktree_setup(
    config: Config, layout: Layout, *, feature: str, run: str, worktree: Path,
    emit: Callable[..., None], cancel: threading.Event, store: Store, fencing: int,
) -> str | None:  # fmt: skip
    """Run the setup command in ``worktree`` unless it ran there already; why it failed (the
    run fails with it), or ``None``. It is stopped, with everything it started, when the
    engine stops (``cancel``) or the run is taken from this engine (a person's cancel, a
    take-over: its ``fencing`` token no longer owns the run)."""

    def stopped() -> bool:
        if cancel.is_set():
            return True
        record = store.run(feature, run)
        return record is None or record.fencing != fencing

    argv = list(config.features.worktree_setup)
    if not argv or config.features.isolation != "worktree" or worktree == layout.project_root:
        return None
    marker = Git(worktree).admin_dir() / SETUP_MARKER
    if _done(marker) == argv:
        return None
    log = layout.logs_dir(feature, run) / SETUP_LOG
    emit("orchestration.worktree.setup_started", argv=argv, log=str(log))
    tail: list[str] = []

    def keep(line: str) -> None:
        tail.append(line)
        del tail[:-_TAIL_LINES]

    timeout = config.features.worktree_setup_timeout
    command = shown(redact_text(" ".join(argv)))
    try:
        process = AgentProcess(
            argv, cwd=worktree, env=build_env({}, allow=config.features.env_allowlist),
            log_path=log, limits=Limits(wall_clock_s=timeout, idle_s=timeout), on_line=keep,
        )  # fmt: skip
        process.start()
    except TmopsError as exc:
        return _failed(emit, feature, log, f"the worktree setup {command} could not start: {exc}")
    outcome = process.wait(_POLL_S)
    while outcome is None:
        outcome = process.stop("cancelled") if stopped() else process.wait(_POLL_S)
    output = redact_text("\n".join([*tail, outcome.stderr_tail]).strip()) or "no output"
    if outcome.stop_reason is not None or outcome.returncode != 0:
        how = (
            f"ran over {timeout} s (features.worktree_setup_timeout)"
            if outcome.timed_out
            else f"was stopped ({outcome.stop_reason})"
            if outcome.stop_reason
            else f"exited {outcome.returncode}"
        )
        return _failed(emit, feature, log, f"the worktree setup {command} {how}:\n{output}")
    atomic_write(marker, json.dumps({"argv": argv, "log": str(log)}), root=marker.parent)
    emit("orchestration.worktree.setup", ok=True, duration_s=round(outcome.duration_s, 3))
    return None


def _done(marker: Path) -> Any:
    """The argv the setup last succeeded with in this worktree, or ``None``."""
    try:
        data = json.loads(read_checked(marker, limit=1 << 16, root=marker.parent) or b"null")
    except (ValueError, TmopsError):
        return None
    return data.get("argv") if isinstance(data, dict) else None


def _failed(emit: Callable[..., None], feature: str, log: Path, reason: str) -> str:
    emit("orchestration.worktree.setup", ok=False, message=reason)
    return (
        f"{reason}\n(the whole output: {log}). Nothing was lost: fix the project or "
        f"features.worktree_setup, then `tmops resume {feature}` runs the setup again"
    )
