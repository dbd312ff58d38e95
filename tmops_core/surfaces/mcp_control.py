"""The MCP tools a person takes control of a run with: pause, resume, retry, approve, rollback;
and cleanup, of the worktrees of finished features.

Each is a thin adapter over the :class:`~tmops_core.service.operations.Service` verb of the
same name, as the CLI's commands are: a refusal is a ``ToolError`` saying what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict, Field

from tmops_core.service.operations import Service
from tmops_hookspecs import TmopsError

__all__ = ["CleanupOutput", "ControlOutput", "RollbackOutput", "control_tools"]

_FEATURE_PATTERN = "^[a-z0-9][a-z0-9-]{1,18}[a-z0-9]$"
FeatureName = Annotated[
    str,
    Field(
        description="Feature name: 3-20 of a-z, 0-9 and '-' (e.g. 'auth-api')",
        json_schema_extra={"pattern": _FEATURE_PATTERN},
    ),
]
Workspace = Annotated[
    str | None,
    Field(
        description="Absolute path of the project (default: the server's working directory); "
        "only the server's project and those of its config's server.workspaces"
    ),
]
Phase = Annotated[str, Field(description="A phase of the workflow, e.g. 'implementer'")]


class ControlOutput(BaseModel):
    """What pause, resume, retry and approve answer: the run's state after the verb, and what
    the verb did (``agents_stopped``, ``retry_from``, ``approved``, ``run_id``...)."""

    model_config = ConfigDict(extra="allow")

    feature: str
    run: str
    status: str
    message: str


class RollbackOutput(BaseModel):
    """What tmops_rollback answers: the plan, done or (dry_run) only shown."""

    feature: str
    run: str
    phase: str
    phases: list[str]
    preserve: list[str]
    branch: str
    worktree: str
    head: str
    target: str | None
    snapshot: str
    undone: list[dict[str, str]]
    reverted: list[str]
    kept: list[str]
    set_aside: list[str]
    backup_ref: str
    backup_dir: str
    dry_run: bool
    message: str
    status: str | None = None


class CleanupOutput(BaseModel):
    """What tmops_cleanup answers: per feature what was (dry_run: would be) done and why."""

    dry_run: bool
    force: bool
    base: str
    freed_bytes: int
    worktrees: list[dict[str, Any]]
    message: str


def control_tools(
    service: Service, resolve: Callable[[str | None], Path]
) -> tuple[Callable[..., Any], ...]:
    """The control tools over ``service``; ``resolve`` turns the workspace argument into the
    project folder (or refuses it)."""

    async def call(verb: Callable[[], dict[str, Any]]) -> CallToolResult:
        try:
            answer = await anyio.to_thread.run_sync(verb)
        except TmopsError as exc:
            raise ToolError(str(exc)) from exc
        return CallToolResult(
            content=[TextContent(type="text", text=answer["message"])], structured_content=answer
        )

    async def tmops_pause(
        feature: FeatureName,
        now: Annotated[
            bool, Field(description="Stop the agent at once; its attempt ends interrupted")
        ] = False,
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, ControlOutput]:
        """Pause a feature's run before its next phase (now: at once, stopping its agent and
        everything the agent started). Resumable with tmops_resume."""
        return await call(lambda: service.pause(feature, now=now, workspace=resolve(workspace)))

    async def tmops_resume(
        feature: FeatureName,
        accept_branch: Annotated[
            bool,
            Field(description="For a run paused because its branch moved: go on from the new head"),
        ] = False,
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, ControlOutput]:
        """Queue a paused, failed or cancelled run again where it stopped (a run waiting for
        an approval needs tmops_approve)."""
        return await call(
            lambda: service.resume(
                feature, accept_branch=accept_branch, workspace=resolve(workspace)
            )
        )

    async def tmops_retry(
        feature: FeatureName,
        phase: Annotated[
            str | None,
            Field(description="Run again from this phase (default: where the run stopped)"),
        ] = None,
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, ControlOutput]:
        """Run a failed, needs_review, paused or cancelled run again from a phase: it and the
        phases after it run again (their checkpoints set aside first); the branch stays."""
        return await call(lambda: service.retry(feature, phase=phase, workspace=resolve(workspace)))

    async def tmops_approve(
        feature: FeatureName,
        phase: Annotated[
            str | None, Field(description="Approve this gated phase ahead of time")
        ] = None,
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, ControlOutput]:
        """Let a run waiting at an approval gate (features.approve_before) go on; with phase,
        approve a gated phase before the run reaches it."""
        return await call(
            lambda: service.approve(feature, phase=phase, workspace=resolve(workspace))
        )

    async def tmops_rollback(
        feature: FeatureName,
        phase: Phase,
        dry_run: Annotated[
            bool, Field(description="Only say what would change; change nothing")
        ] = False,
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, RollbackOutput]:
        """Roll a stopped run back to before a phase, by that phase's preserve rules
        (orchestrator: the initial state, TASK_SPEC.md kept; tester: its tests kept;
        implementer: tests kept, code undone; verifier: only the summary and metrics go), after
        a backup ref of the worktree as it was. The run pauses; tmops_resume runs them again."""
        return await call(
            lambda: service.rollback(
                feature, phase=phase, dry_run=dry_run, workspace=resolve(workspace)
            )
        )

    async def tmops_cleanup(
        dry_run: Annotated[
            bool, Field(description="Only say what would be removed and freed (the default)")
        ] = True,
        force: Annotated[
            bool,
            Field(
                description="Also remove unmerged, unpushed or uncommitted work of finished "
                "runs, after a backup ref of it"
            ),
        ] = False,
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, CleanupOutput]:
        """Remove the worktrees (and the caches in them) of finished features whose branch is
        merged or pushed, and report the disk freed; the branches stay. A run queued, running,
        paused or waiting for a person keeps its worktree. dry_run (the default) changes
        nothing."""
        return await call(
            lambda: service.cleanup(dry_run=dry_run, force=force, workspace=resolve(workspace))
        )

    return (tmops_pause, tmops_resume, tmops_retry, tmops_approve, tmops_rollback, tmops_cleanup)
