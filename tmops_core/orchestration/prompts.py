"""What an agent of one phase is given: its prompt, its role instructions, the trigger
checkpoint that hands it the work, and the notes that tell a retry or a rework what went wrong.

Pure text and one file write (the trigger, atomically, never over an existing one). It never
starts an agent and never touches the store or git.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tmops_core.config import Config
from tmops_core.workspace.layout import atomic_write, utc_now
from tmops_hookspecs import FeatureContext, PhaseSpec, TmopsError

__all__ = ["phase_prompt", "retry_note", "rework_note", "role_instructions", "write_trigger"]


def phase_prompt(spec: PhaseSpec, context: FeatureContext, task_spec: Path) -> str:
    """The phase's prompt template filled in with absolute paths."""
    try:
        return spec.prompt.format(
            feature=context.feature,
            run=context.run,
            task_spec=task_spec,
            checkpoint_dir=context.checkpoint_dir,
            trigger_checkpoint=spec.trigger_checkpoint or "",
            completion_checkpoint=spec.completion_checkpoint,
            worktree=context.worktree,
            branch=context.branch,
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise TmopsError(
            f"the prompt of phase {spec.name!r} cannot be filled in: {exc!r}",
            hint="a phase prompt may use {feature}, {run}, {task_spec}, {checkpoint_dir}, "
            "{trigger_checkpoint}, {completion_checkpoint}, {worktree} and {branch}",
        ) from exc


def role_instructions(
    spec: PhaseSpec, settings: Mapping[str, Any], config: Config, project_root: Path
) -> str:
    """The role's instructions: ``<instructions folder>/<role>.md`` if configured, else built in."""
    folder = settings.get("instructions_dir") or config.paths.instructions
    if folder:
        path = Path(folder).expanduser()
        if not path.is_absolute():
            path = project_root / path
        candidate = path / f"{spec.role}.md"
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return spec.instructions


def retry_note(spec: PhaseSpec, checkpoint: Path, reason: str) -> str:
    """What a retry is told: why the last attempt did not hand off, and what to write."""
    return (
        f"Your previous attempt at the {spec.role} role did not complete: {reason}. "
        f"Fix that, then write {checkpoint} again."
    )


def rework_note(spec: PhaseSpec, review: Path, reason: str, checkpoint_dir: Path) -> str:
    """What a rework round is told: the reviewer refused the work, and where its findings are."""
    return (
        f"The work was sent back for rework: {reason}. Read the review in {review}, fix what it "
        f"finds without weakening the tests, then write "
        f"{checkpoint_dir / spec.completion_checkpoint} again."
    )


def write_trigger(spec: PhaseSpec, context: FeatureContext) -> None:
    """Write the phase's trigger checkpoint, unless one is there (a person's stays as written)."""
    if not spec.trigger_checkpoint:
        return
    path = context.checkpoint_dir / spec.trigger_checkpoint
    if os.path.lexists(path):
        return
    atomic_write(
        path,
        f"# Checkpoint: {spec.trigger_checkpoint}\n"
        f"**From:** tmops (orchestration)\n"
        f"**To:** {spec.role.capitalize()}\n"
        f"**Timestamp:** {utc_now():%Y-%m-%d %H:%M:%S}\n"
        f"**Feature:** {context.feature}\n"
        f"**Run:** {context.run}\n"
        f"**Status:** trigger\n\n"
        f"## Action Required\n{spec.description or spec.name}\n\n"
        f"## Expected Response\nWrite {spec.completion_checkpoint} in this folder.\n",
    )
