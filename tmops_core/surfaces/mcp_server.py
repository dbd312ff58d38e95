"""The MCP server: a thin adapter exposing the operations of
:class:`~tmops_core.service.operations.Service` as MCP tools, resources and prompts.

Built on the official SDK (major version 2, ``MCPServer``). Tool schemas come from the type
hints and refuse unknown arguments (``additionalProperties: false``); each tool's title and
hints (read-only, destructive, idempotent) come from one table, :data:`TOOL_HINTS`. Arguments
are strict (:mod:`~tmops_core.surfaces.mcp_input`) and every ``workspace`` is confined
(:mod:`~tmops_core.surfaces.mcp_workspace`). Errors are
raised as ``ToolError`` so the client sees ``isError`` with a clear message, never a success
text. The resources are in :mod:`~tmops_core.surfaces.mcp_resources`; the prompts are the
phases' role instructions. Nothing but protocol goes to stdout: logs go to stderr and the
telemetry sinks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Prompt
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from tmops_core import __version__
from tmops_core.service.operations import Service
from tmops_core.surfaces.manual import prompt_text
from tmops_core.surfaces.mcp_actor import ActorMiddleware
from tmops_core.surfaces.mcp_control import control_tools
from tmops_core.surfaces.mcp_input import StrictTool, make_strict
from tmops_core.surfaces.mcp_resources import (
    CHECKPOINT_URI,
    FEATURES_URI,
    STATUS_URI,
    SUMMARY_URI,
    add_resources,
)
from tmops_core.surfaces.mcp_workspace import WorkspaceGuard
from tmops_core.workspace.features import InitRequest
from tmops_hookspecs import PhaseSpec, TmopsError

__all__ = ["TOOL_HINTS", "build_server", "serve_stdio"]

_FEATURE_PATTERN = "^[a-z0-9][a-z0-9-]{1,18}[a-z0-9]$"

INSTRUCTIONS = f"""\
tmops runs the TeamOps test-first workflow (orchestrator -> tester -> implementer -> verifier)
with one coding-agent session per role. Create a feature with tmops_init_feature, let the user
edit the TASK_SPEC.md it returns, start it with tmops_start_orchestration, then follow it with
tmops_get_status; tmops_list_features shows every feature of the project; tmops_get_prompt
gives what a person needs to do a phase by hand; tmops_pause (now: at once) and tmops_resume
stop and continue a run; tmops_retry runs it again from a phase; tmops_approve lets it past an
approval gate; tmops_rollback sends phases back by their preserve rules after a backup;
tmops_cancel stops a run for good (its files stay); tmops_cleanup removes the worktrees of
finished features whose work is merged or pushed (dry_run by default).
Resources (the server's workspace; a read starts nothing): {FEATURES_URI} lists the features;
{STATUS_URI} is a feature's status;
{CHECKPOINT_URI} is one checkpoint its status lists;
{SUMMARY_URI} is its SUMMARY.md once the run completes.
Prompts, one per phase, take a feature: the role's instructions and the phase's prompt, to do
that phase by hand:"""


def _hints(
    title: str, *, destructive: bool = False, idempotent: bool = False, open_world: bool = False
) -> ToolAnnotations:
    """A tool that changes something. Every hint is explicit: an unset destructiveHint means
    true to a client."""
    return ToolAnnotations(
        title=title, read_only_hint=False, destructive_hint=destructive,
        idempotent_hint=idempotent, open_world_hint=open_world,
    )  # fmt: skip


def _read_only(title: str) -> ToolAnnotations:
    return ToolAnnotations(
        title=title, read_only_hint=True, destructive_hint=False, idempotent_hint=True,
        open_world_hint=False,
    )  # fmt: skip


#: Each tool's title and hints, one line a tool; a tool without a line is refused at start.
#: tmops_get_status counts as a read: its one side effect, an engine started to take over a run
#: whose engine died, carries the run on without changing it.
TOOL_HINTS: dict[str, ToolAnnotations] = {
    "tmops_init_feature": _hints("Initialise a feature", idempotent=True),
    # a second start of a queued or running run answers with the same run id; the agents it
    # starts reach the model's service, outside this machine
    "tmops_start_orchestration": _hints("Start a feature's workflow", idempotent=True,
                                        open_world=True),
    "tmops_list_features": _read_only("List the features"),
    "tmops_get_status": _read_only("Status of a feature"),
    "tmops_get_prompt": _read_only("Prompt of a phase to do by hand"),
    "tmops_cancel": _hints("Cancel a feature's run", destructive=True, idempotent=True),
    # stopping an agent (pause now) or undoing commits destroys work in progress (backed up)
    "tmops_pause": _hints("Pause a feature's run", destructive=True, idempotent=True),
    "tmops_rollback": _hints("Roll back a feature's run", destructive=True),
    # removes worktrees (their branches stay; unmerged work only forced, after a backup ref)
    "tmops_cleanup": _hints("Remove finished features' worktrees", destructive=True,
                            idempotent=True),
    # these queue the run again: its agents reach the model's service
    "tmops_resume": _hints("Resume a feature's run", open_world=True),
    "tmops_retry": _hints("Retry a feature's run from a phase", open_world=True),
    "tmops_approve": _hints("Approve a gated phase", idempotent=True, open_world=True),
}  # fmt: skip

FeatureName = Annotated[
    str,
    Field(
        description="Feature name: 3-20 of a-z, 0-9 and '-', starting and ending with a "
        "letter or digit (e.g. 'auth-api')",
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


class InitFeatureOutput(BaseModel):
    feature: str
    run: str
    branch: str
    workspace: str
    task_spec: str
    worktree: str
    checkpoint_dir: str
    created: bool
    changes: list[str]
    timestamp: str
    execution_time_ms: float
    next_steps: list[str]


class StartOutput(BaseModel):
    run_id: str | None
    feature: str
    run: str
    status: str
    provider: str
    queued_at: str | None
    message: str


class FeatureRow(BaseModel):
    feature: str
    branch: str
    run: str | None
    status: str
    #: a queued run's place in the queue (1 starts next), else None
    queue_position: int | None = None
    current_phase: str | None
    updated: str | None
    #: seconds since the run was first admitted (to its end if it ended), None if never run
    elapsed_s: float | None = None
    cost_usd: float = 0.0
    #: a run paused by a usage limit: when it lifts (ISO, UTC)
    resume_at: str | None = None
    #: a queued run another run's usage limit holds back: until when (ISO, UTC)
    held_until: str | None = None


class ListFeaturesOutput(BaseModel):
    features: list[FeatureRow]
    #: the worktrees' disk against features.worktree_disk_budget_gb (None: no budget)
    worktree_disk: dict[str, Any] | None = None
    #: what every run of the project cost so far, in USD
    total_cost_usd: float = 0.0


class StatusOutput(BaseModel):
    # Nested parts are plain objects in the schema on purpose: clients validate every result
    # against the output schema, and a deep schema made each status call measurably slower.
    feature: str
    status: str
    current_phase: str | None
    run: str | None
    branch: str
    worktree: str | None
    task_spec: str | None
    phase_progress: dict[str, Any]
    next_action: str
    updated: str | None
    run_id: str | None
    provider: str | None
    cost_usd: float
    last_error: str | None
    #: why a paused run is paused (requested, awaiting_approval, branch_moved, ...)
    pause_reason: str | None = None
    #: a queued run's place among the queued runs, 1-based, in the order the engine admits them
    queue_position: int | None = None
    #: a queued or running run's engine: alive, dead (taken over on this read) or none
    engine: str | None = None
    #: seconds since the run was first admitted (to its end if it ended), None if never run
    elapsed_s: float | None = None
    #: a run paused by a usage limit: when it lifts (ISO, UTC)
    resume_at: str | None = None
    #: a queued run another run's usage limit holds back: until when (ISO, UTC)
    held_until: str | None = None
    sessions: dict[str, dict[str, Any]] | None = None
    #: every attempt: phase, number, state, cost_usd, tokens, duration (with the sessions)
    attempts: list[dict[str, Any]] | None = None
    checkpoints: list[dict[str, Any]] | None = None
    #: the worktrees' disk against features.worktree_disk_budget_gb (None: no budget)
    worktree_disk: dict[str, Any] | None = None


class PromptOutput(BaseModel):
    """What tmops_get_prompt answers."""

    feature: str
    run: str
    phase: str
    role: str
    instructions: str
    prompt: str
    worktree: str
    checkpoint: str


class CancelOutput(BaseModel):
    """What tmops_cancel answers."""

    feature: str
    run: str
    status: str
    agents_stopped: int
    message: str


def _result(text: str, data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _person_tools(
    service: Service, resolve: Callable[[str | None], Path]
) -> tuple[Callable[..., Any], ...]:
    """The tools of a person in control of a run: the prompt of a phase to do by hand, cancel."""

    async def tmops_get_prompt(
        feature: FeatureName,
        phase: Annotated[str, Field(description="A phase of the workflow, e.g. 'tester'")],
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, PromptOutput]:
        """What to paste into a manual agent session to do one phase by hand: the role
        instructions and the prompt, with absolute paths, and the checkpoint to write; the next
        start with resume: true takes that checkpoint exactly like an agent's."""
        try:
            answer = service.prompt(feature, phase, workspace=resolve(workspace))
        except TmopsError as exc:
            raise ToolError(str(exc)) from exc
        return _result(f"{answer['role']} of {feature}: write {answer['checkpoint']}", answer)

    async def tmops_cancel(
        feature: FeatureName, workspace: Workspace = None
    ) -> Annotated[CallToolResult, CancelOutput]:
        """Stop a feature's run for good: its agents are stopped and the run ends cancelled;
        the branch, the worktree and the files stay (resume it with tmops_start_orchestration
        and resume: true)."""
        try:
            answer = await anyio.to_thread.run_sync(
                lambda: service.cancel(feature, workspace=resolve(workspace))
            )
        except TmopsError as exc:
            raise ToolError(str(exc)) from exc
        return _result(answer["message"], answer)

    return (tmops_get_prompt, tmops_cancel)


def _phase_names(service: Service) -> list[str]:
    """Every installed phase: the workflow's in order, then any other (an extra phase can be
    done by hand too)."""
    installed = service.plugins.phases()
    workflow = [name for name in service.config.features.default_phases if name in installed]
    return workflow + sorted(set(installed) - set(workflow))


def _phase_prompt(service: Service, workspace: Path, spec: PhaseSpec) -> Prompt:
    def render(feature: FeatureName) -> str:
        try:
            answer = service.prompt(feature, spec.name, workspace=workspace)
        except TmopsError as exc:
            # An MCPError reaches the client as is; any other error would be only "Error
            # rendering prompt".
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from exc
        return prompt_text(answer)

    return Prompt.from_function(
        render,
        name=spec.name,
        title=f"Do the {spec.role}'s phase by hand",
        description=f"The {spec.role}'s instructions and the {spec.name} phase's prompt for a "
        f"feature, with absolute paths ({spec.description or spec.name}); when done, write "
        f"{spec.completion_checkpoint}.",
    )


def _tool(function: Callable[..., Any]) -> Tool:
    hints = TOOL_HINTS.get(function.__name__)
    if hints is None:
        raise LookupError(f"{function.__name__} has no line in TOOL_HINTS (title and hints)")
    return make_strict(
        StrictTool.from_function(
            function,
            title=hints.title,
            description=inspect.cleandoc(function.__doc__ or ""),
            annotations=hints,
        )
    )


def build_server(service: Service, *, workspace: Path | None = None) -> MCPServer:
    """An MCP server whose tools call ``service``; ``workspace`` is the default project."""
    default_workspace = (workspace or Path.cwd()).resolve()
    # Every tool's workspace goes through this: the project served, or one of server.workspaces.
    resolve = WorkspaceGuard(service, default_workspace).resolve

    async def tmops_init_feature(
        feature: FeatureName,
        runType: Literal["initial", "retry"] = "initial",  # the seed's camelCase name
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, InitFeatureOutput]:
        """Initialise a TeamOps feature: branch feature/<feature>, its git worktree, the
        .tmops/<feature>/runs/<run>/ folders and a TASK_SPEC.md template to fill in."""
        request = InitRequest(feature=feature, run_type=runType, workspace=resolve(workspace))
        try:
            result = await anyio.to_thread.run_sync(service.init, request)
        except TmopsError as exc:
            raise ToolError(str(exc)) from exc
        return _result(result.message, result.to_dict())

    async def tmops_list_features(
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, ListFeaturesOutput]:
        """List every feature of the project with its branch, run, status and last update."""
        try:
            rows = service.list_features(workspace=resolve(workspace))
            disk = service.worktree_disk(workspace=resolve(workspace))
            total = service.project_cost(workspace=resolve(workspace))
        except TmopsError as exc:
            raise ToolError(str(exc)) from exc
        summary = ", ".join(f"{r['feature']} ({r['status']})" for r in rows) or "no features yet"
        warning = f"; warning: {disk['warning']}" if disk and disk["warning"] else ""
        text = f"{len(rows)} feature(s): {summary}{warning}"
        answer = {"features": rows, "total_cost_usd": total}
        return _result(text, {**answer, **({"worktree_disk": disk} if disk else {})})

    async def tmops_get_status(
        feature: FeatureName,
        include_sessions: bool = True,
        include_checkpoints: bool = True,
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, StatusOutput]:
        """Current phase, progress, sessions, checkpoints and next action of a feature."""
        try:
            status = service.status(
                feature,
                workspace=resolve(workspace),
                include_sessions=include_sessions,
                include_checkpoints=include_checkpoints,
            )
        except TmopsError as exc:
            raise ToolError(str(exc)) from exc
        progress = status["phase_progress"]
        text = (
            f"{status['feature']}: {status['status']}, {progress['completed']}/"
            f"{progress['total']} phases completed; next: {status['next_action']}"
        )
        return _result(text, status)

    async def tmops_start_orchestration(
        feature: FeatureName,
        provider: Annotated[
            str | None,
            Field(description="Agent provider of every phase (default: the configured ones)"),
        ] = None,
        phase_providers: Annotated[
            dict[str, str] | None,
            Field(
                description="Phase -> its provider, e.g. {implementer: NAME}; wins "
                "over provider for those phases"
            ),
        ] = None,
        resume: Annotated[
            bool, Field(description="Continue a failed, paused or cancelled run")
        ] = False,
        accept_branch: Annotated[
            bool,
            Field(
                description="With resume: continue a run paused because its branch moved, "
                "from the branch's new head"
            ),
        ] = False,
        force: Annotated[
            bool, Field(description="Start even though TASK_SPEC.md is still the template")
        ] = False,
        workspace: Workspace = None,
    ) -> Annotated[CallToolResult, StartOutput]:
        """Start the automated workflow for an initialised feature (orchestrator, tester,
        implementer, verifier). Returns at once with the run id; follow it with
        tmops_get_status."""
        try:
            answer = await anyio.to_thread.run_sync(
                lambda: service.start(
                    feature,
                    provider=provider,
                    resume=resume,
                    accept_branch=accept_branch,
                    workspace=resolve(workspace),
                    force=force,
                    phase_providers=phase_providers,
                )
            )
        except TmopsError as exc:
            raise ToolError(str(exc)) from exc
        return _result(answer["message"], answer)

    functions: tuple[Callable[..., Any], ...] = (
        tmops_init_feature,
        tmops_start_orchestration,
        tmops_list_features,
        tmops_get_status,
        *_person_tools(service, resolve),
        *control_tools(service, resolve),
    )
    phases = _phase_names(service)
    server = MCPServer(
        name=service.config.server.name,
        version=service.config.server.version or __version__,
        instructions=f"{INSTRUCTIONS} {', '.join(phases)}.",
        tools=[_tool(function) for function in functions],
        # the audit trail names the client of each call (HTTP adds its own, inner, actor)
        middleware=[ActorMiddleware("mcp-stdio")],
    )
    add_resources(server, service, default_workspace)
    installed = service.plugins.phases()
    for name in phases:
        server.add_prompt(_phase_prompt(service, default_workspace, installed[name].spec))
    return server


def serve_stdio(service: Service, *, workspace: Path | None = None) -> None:
    """Serve over stdio until the client disconnects."""
    build_server(service, workspace=workspace).run()
