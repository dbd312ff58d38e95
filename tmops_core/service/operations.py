"""The operations of tmops, used by both the CLI and the MCP server.

A :class:`Service` holds the loaded config and plugins and offers every operation the surfaces
expose; the CLI and the MCP server only translate arguments and results.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmops_core.agents.processes import reap_orphans
from tmops_core.config import (
    LoadedConfig,
    load_config,
    provider_settings,
)
from tmops_core.events import EventBus, build_event_bus, configure_logging
from tmops_core.lifecycle import PauseReason, RunState
from tmops_core.log import logger, settle
from tmops_core.orchestration.liveness import (
    HEARTBEAT_S,
    LEASE_S,
    engine_running,
    run_engine_alive,
    serving_engine_alive,
)
from tmops_core.orchestration.providers import (
    phase_provider,
    providers_label,
    workflow_providers,
)
from tmops_core.plugins import PluginFailure, PluginInfo, Plugins, create_plugin_manager
from tmops_core.service.actor import os_user
from tmops_core.service.agent_logs import AgentLogs
from tmops_core.service.config_checks import ConfigChecks
from tmops_core.service.control import Controls
from tmops_core.service.metrics import Metrics
from tmops_core.service.status import feature_status, find_project_root, list_features, project_cost
from tmops_core.service.trail import Trail
from tmops_core.service.worktrees import Worktrees
from tmops_core.store import (
    STORE_NAME,
    FeatureRecord,
    RunRecord,
    Store,
    open_existing_store,
    open_store,
)
from tmops_core.workspace.layout import Layout, iso, shown, utc_now, validate_feature_name
from tmops_hookspecs import FeatureContext, FeatureError, TmopsError, WorkspaceError

if TYPE_CHECKING:
    from tmops_core.workspace.features import InitRequest, InitResult

__all__ = ["HEARTBEAT_S", "LEASE_S", "Service"]

# The engine, init, the start checks and the prompts are imported by the operations that use
# them: a read (status, list) must not pay for importing the engine.


class Service(ConfigChecks, Controls, Trail, Worktrees, AgentLogs, Metrics):
    """The loaded config and plugins of one tmops process, and the operations over them."""

    def __init__(self, loaded: LoadedConfig, plugins: Plugins) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.plugins = plugins
        #: who the audit trail names for this service's operations: a surface sets it once
        #: (the CLI: ``cli:<user>``) or per call with ``actor.acting_as`` (MCP, HTTP)
        self.actor = f"local:{os_user()}"
        self._bus: EventBus | None = None
        self._stores: dict[Path, Store] = {}
        self._layouts: dict[str, Layout] = {}
        #: when a status read last started an engine to take a run over, per project
        self._take_overs: dict[Path, float] = {}

    @classmethod
    def load(
        cls,
        config_path: str | os.PathLike[str] | None = None,
        *,
        cwd: Path | None = None,
        debug: bool = False,
    ) -> Service:
        """Read the config (every error at once) and load the plugins it does not disable."""
        loaded = load_config(config_path, cwd=cwd)
        configure_logging(loaded.config.telemetry.level, debug=debug)
        plugins = create_plugin_manager(
            disabled=loaded.config.plugins.disabled, settings=loaded.config.plugins.settings
        )
        settle()  # a plugin that imported loguru itself logs through the configured sink
        return cls(loaded, plugins)

    # -- telemetry ---------------------------------------------------------------------------

    @property
    def events(self) -> EventBus:
        """The event bus over the configured sinks, created on first use."""
        if self._bus is None:
            self._bus = build_event_bus(self.config, self.plugins)
        return self._bus

    def close(self) -> None:
        self.plugins.unconfigure()  # notifiers deliver what they hold before the process ends
        if self._bus is not None:
            self._bus.close()
            self._bus = None
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    # -- features ----------------------------------------------------------------------------

    def _store(self, layout: Layout, *, create: bool) -> Store | None:
        path = layout.tmops_dir / STORE_NAME
        store = self._stores.get(path)
        if store is None:
            url, workspace = self.config.store.url, self.config.server.workspace_id
            opener = open_store if create else open_existing_store
            store = opener(path, url=url, workspace=workspace)
            if store is not None:
                self._stores[path] = store
        return store

    def _create_store(self, layout: Layout) -> Store:
        store = self._store(layout, create=True)
        assert store is not None  # noqa: S101 - create=True always returns a store
        return store

    def init(self, request: InitRequest) -> InitResult:
        """Create a feature (or confirm it exists); emit ``orchestration.feature.initialized``."""
        from tmops_core.workspace.features import init_feature

        result = init_feature(request, self.config, store_for=self._create_store)
        self._record(
            self._create_store(self._layout(result.workspace)), result.feature, result.run,
            "orchestration.feature.initialized",
            {"run": result.run, "branch": result.branch, "created": result.created,
             "execution_time_ms": result.execution_time_ms},
        )  # fmt: skip
        if result.created:
            self.plugins.feature_initialized(self._context(result))
        return result

    def _context(self, result: InitResult) -> FeatureContext:
        return FeatureContext(
            feature=result.feature,
            run=result.run,
            workspace=self.config.server.workspace_id,
            project_root=result.workspace,
            worktree=result.worktree,
            branch=result.branch,
            run_dir=result.run_dir,
            checkpoint_dir=result.checkpoint_dir,
        )

    def _tracked(self, feature: str, workspace: Path | None) -> tuple[Layout, Store, FeatureRecord]:
        """The project, its store and the feature's record, or an error saying what to do."""
        validate_feature_name(feature)
        layout = self._layout(workspace)
        store = self._store(layout, create=False)
        record = store.feature(feature) if store else None
        if store is None or record is None:
            raise FeatureError(
                f"feature '{feature}' was not initialised by tmops in {layout.project_root}",
                hint=f"run `tmops init {feature}` first (it adopts folders made by hand)",
            )
        return layout, store, record

    def _layout(self, workspace: Path | None) -> Layout:
        # Found once per folder asked about: status is polled, and the search stats every
        # folder up to the root.
        start = str(workspace or Path.cwd())
        layout = self._layouts.get(start)
        if layout is None:
            layout = self._layouts[start] = Layout(find_project_root(Path(start)))
        return layout

    # -- orchestration -----------------------------------------------------------------------

    def start(
        self,
        feature: str,
        *,
        provider: str | None = None,
        resume: bool = False,
        accept_branch: bool = False,
        workspace: Path | None = None,
        spawn: bool = True,
        force: bool = False,
        phase_providers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Queue the feature's current run and make sure an engine serves it; returns at once.
        ``provider``: the whole run's, ``phase_providers``: a phase's (each kept for a resume;
        see :mod:`tmops_core.orchestration.providers`); ``force`` starts it on a TASK_SPEC.md
        that is still the untouched template."""
        layout, store, record = self._tracked(feature, workspace)
        run = store.run(feature, record.current_run)
        if run is None:
            raise FeatureError(f"feature '{feature}' has no run '{record.current_run}'")
        from tmops_core.service.preflight import check_before_start, start_providers

        provider = provider or run.provider
        overrides = dict(phase_providers) if phase_providers else run.phase_overrides
        chosen = start_providers(
            self.config, self.plugins, provider=provider, phase_providers=overrides
        )
        name = providers_label(chosen)
        if run.active:  # it runs with what it was queued with
            queued_with = providers_label(self._planned_providers(run))
            return self._start_active(layout, store, run, queued_with, spawn=spawn)
        ended = f"run '{run.run}' of '{feature}' has {run.status}"
        if run.status == RunState.COMPLETED:
            raise FeatureError(ended, hint=f"start a new run: tmops init {feature} --retry")
        if run.status != RunState.INITIALIZED and not resume:
            raise FeatureError(
                f"{ended}: {run.last_error or 'no reason recorded'}",
                hint="continue it from where it stopped with --resume (MCP: resume: true)",
            )
        check_before_start(
            self.config, self.plugins, layout, feature=feature, run=run.run,
            worktree=Path(record.worktree), phase_providers=chosen, force=force,
        )  # fmt: skip
        if run.pause_reason == PauseReason.BRANCH_MOVED:
            self._check_branch(store, record, run, accept=accept_branch)
        run_id = uuid.uuid4().hex[:12]
        store.queue_run(feature, run.run, run_id=run_id, provider=provider, now=iso(utc_now()),
                        phase_providers=overrides)  # fmt: skip
        self._record(store, feature, run.run, "orchestration.run.queued",
                     {"run": run.run, "provider": name, "providers": chosen},
                     correlation_id=run_id)  # fmt: skip
        queued = store.run(feature, run.run)  # as queued: the engine may take it at once
        assert queued is not None  # noqa: S101 - it was just updated
        if spawn:
            self._spawn_engine(layout, store, feature, run.run)
        return self._start_answer(queued, name, "queued")

    def _start_active(
        self, layout: Layout, store: Store, run: RunRecord, provider: str, *, spawn: bool
    ) -> dict[str, Any]:
        """A run already queued or running: an error while a live engine serves it; if its
        engine died, the engine started now takes the run over, at its place in the queue."""
        # A serving engine holds the project's lock; one whose lock is free is dead or dying,
        # though its record may still read alive for a moment after a kill -9.
        served = engine_running(layout) and (
            run_engine_alive(store, run)
            if run.status == RunState.RUNNING
            else serving_engine_alive(store)
        )
        if served:
            raise FeatureError(
                f"run '{run.run}' of '{run.feature}' is already {run.status} (run id "
                f"{run.run_id}): an engine serves it",
                hint=f"follow it with `tmops watch {run.feature}`, or stop it with "
                f"`tmops cancel {run.feature}` (then `tmops start {run.feature} --resume`)",
            )
        if spawn:
            self._spawn_engine(layout, store, run.feature, run.run)
        if run.status == RunState.RUNNING:
            state = "its engine had stopped; a new engine takes the run over"
        else:
            state = "already queued" + ("; no engine served it: one was started" if spawn else "")
        return self._start_answer(run, provider, state)

    def _spawn_engine(self, layout: Layout, store: Store, feature: str, run: str) -> None:
        """Make sure an engine serves the project; if none can start, the run that waits for
        it fails with the reason, and the caller gets that reason as an error."""
        from tmops_core.orchestration.spawn import spawn_engine

        try:
            spawn_engine(layout, config_path=self.loaded.source, store=store)
        except TmopsError as exc:
            reason = f"the engine could not start: {exc.message}"
            now = iso(utc_now())
            if store.fail_queued_run(feature, run, error=reason, now=now):
                data = {"run": run, "status": "failed", "message": reason}
                self.events.emit("orchestration.error", data, feature=feature)
                store.add_event(feature, run, "orchestration.error", json.dumps(data), now)
            raise WorkspaceError(
                f"run '{run}' of '{feature}' failed: {reason}",
                hint=f"{exc.hint or 'fix that'}, then `tmops start {feature} --resume`",
            ) from exc

    def prompt(self, feature: str, phase: str, *, workspace: Path | None = None) -> dict[str, Any]:
        """What a person pastes into a manual agent session to do ``phase`` by hand: the role
        instructions and the prompt, with absolute paths, and the checkpoint to write (taken
        exactly like an agent's by the next ``tmops start --resume``)."""
        layout, store, record = self._tracked(feature, workspace)
        phases = self.plugins.phases()
        if phase not in phases:
            raise FeatureError(
                f"no phase named {shown(phase)}",
                hint=f"installed phases: {', '.join(sorted(phases)) or 'none'}; the workflow: "
                f"{', '.join(self.config.features.default_phases)}",
            )
        spec = phases[phase].spec
        run = record.current_run
        context = FeatureContext(
            feature=feature, run=run, workspace=self.config.server.workspace_id,
            project_root=layout.project_root, worktree=Path(record.worktree),
            branch=record.branch, run_dir=layout.run_dir(feature, run),
            checkpoint_dir=layout.checkpoint_dir(feature, run), phase=phase,
        )  # fmt: skip
        run_record = store.run(feature, run)
        provider = phase_provider(
            self.config, self.plugins, phase,
            run_provider=run_record.provider if run_record else None,
            run_phases=run_record.phase_overrides if run_record else None,
        )  # fmt: skip
        if run_record is not None:  # a person takes the phase over: the audit trail says so
            self._audit(store, run_record, "orchestration.phase.prompt_given",
                        phase=phase)  # fmt: skip
        from tmops_core.orchestration import prompts

        return {
            "feature": feature,
            "run": run,
            "phase": phase,
            "role": spec.role,
            "instructions": prompts.role_instructions(
                spec, provider_settings(self.config, provider), self.config, layout.project_root
            ),
            "prompt": prompts.phase_prompt(spec, context, layout.task_spec(feature, run)),
            "worktree": record.worktree,
            "checkpoint": str(context.checkpoint_dir / spec.completion_checkpoint),
        }

    def cancel(self, feature: str, *, workspace: Path | None = None) -> dict[str, Any]:
        """Stop a run for good: it ends ``cancelled``, its agents are stopped with everything
        they started; the branch, the worktree and every file stay."""
        _, store, record = self._tracked(feature, workspace)
        run = store.run(feature, record.current_run)
        if run is None or run.status == RunState.COMPLETED:
            raise FeatureError(
                f"run '{record.current_run}' of '{feature}' has completed: nothing to cancel",
                hint=f"start a new run with `tmops init {feature} --retry`",
            )
        if run.status == RunState.CANCELLED:
            return self._cancel_answer(run.feature, run.run, 0, "was cancelled already")
        stopped = store.cancel_run(feature, run.run, now=iso(utc_now()))
        # The run's engine lost it in that transaction; its agents go now, trees and all.
        killed = reap_orphans(
            [(a.pid, a.start_time) for a in stopped if a.pid and a.start_time is not None],
            marks=[a.mark for a in stopped if a.mark],
        )
        data = {"run": run.run, "status": RunState.CANCELLED.value, "agents_stopped": len(killed)}
        self._record(store, feature, run.run, "orchestration.run.cancelled", data,
                     correlation_id=run.run_id)  # fmt: skip
        return self._cancel_answer(feature, run.run, len(killed), "cancelled")

    @staticmethod
    def _cancel_answer(feature: str, run: str, killed: int, state: str) -> dict[str, Any]:
        return {
            "feature": feature,
            "run": run,
            "status": RunState.CANCELLED.value,
            "agents_stopped": killed,
            "message": f"{feature} run {run}: {state}; the branch, the worktree and the files "
            f"stay (continue it with `tmops start {feature} --resume`)",
        }

    @staticmethod
    def _check_branch(store: Store, record: FeatureRecord, run: RunRecord, *, accept: bool) -> None:
        """A run paused because its branch moved goes on only from where tmops left it, or
        from the new head when the person accepts it."""
        from tmops_core.git import Git

        found = Git(Path(record.worktree)).rev(f"refs/heads/{record.branch}")
        if found is None or found == run.branch_head:
            return
        if not accept:
            raise FeatureError(
                f"the branch {record.branch} moved: tmops left it at {run.branch_head}, it is "
                f"now at {found}",
                hint=f"continue from the new head with `tmops start {run.feature} --resume "
                f"--accept-branch` (MCP: accept_branch: true), or put the branch back first "
                f"(git update-ref refs/heads/{record.branch} {run.branch_head})",
            )
        store.set_branch_head(run.feature, run.run, None, found)

    @staticmethod
    def _start_answer(run: RunRecord, provider: str, state: str) -> dict[str, Any]:
        return {
            "run_id": run.run_id,
            "feature": run.feature,
            "run": run.run,
            "status": run.status,
            "provider": provider,
            "queued_at": run.queued_at,
            "message": f"{run.feature} run {run.run}: {state} (run id {run.run_id})",
        }

    def serve_engine(
        self,
        *,
        workspace: Path | None = None,
        idle_exit_s: float = 2.0,
        retry_backoff_s: tuple[float, ...] | None = None,
        handle_signals: bool = False,
        lock_fd: int | None = None,
        ready_fd: int | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        lease_s: float = LEASE_S,
    ) -> bool:
        """Drive this project's queue in this process until idle (``tmops engine``); False
        if another engine serves the project. See :class:`~tmops_core.orchestration.daemon.
        Engine` for the signals, the handed-over lock and the lease. ``ready_fd`` (the pipe of
        the ``start`` that spawned this engine) gets :data:`~tmops_core.orchestration.daemon.
        READY` once this engine holds the lease."""
        layout = self._layout(workspace)
        from tmops_core.orchestration.daemon import Engine
        from tmops_core.orchestration.spawn import READY

        engine = Engine(
            config=self.config, plugins=self.plugins, events=self.events,
            store=self._create_store(layout), layout=layout, retry_backoff_s=retry_backoff_s,
            heartbeat_s=heartbeat_s, lease_s=lease_s,
        )  # fmt: skip

        def ready() -> None:
            if ready_fd is not None:
                os.write(ready_fd, READY)
                os.close(ready_fd)

        return engine.serve(
            idle_exit_s=idle_exit_s, handle_signals=handle_signals, lock_fd=lock_fd,
            on_serving=ready,
        )  # fmt: skip

    def events_since(
        self, feature: str, *, after_id: int = 0, workspace: Path | None = None
    ) -> list[dict[str, Any]]:
        """The events recorded for a feature after ``after_id`` (for ``tmops watch``)."""
        store = self._store(self._layout(workspace), create=False)
        if store is None:
            return []
        return [
            {
                "id": row["id"],
                "event_type": row["event_type"],
                "timestamp": row["timestamp"],
                "run": row["run"],
                "workspace": row["workspace_id"],
                "data": json.loads(row["data"]),
            }
            for row in store.events_for(feature, after_id=after_id)
        ]

    def status(
        self,
        feature: str,
        *,
        workspace: Path | None = None,
        include_sessions: bool = True,
        include_checkpoints: bool = True,
        take_over: bool = True,
    ) -> dict[str, Any]:
        """The state of one feature, from the store and the files: no git.

        A running run whose engine died is taken over (``take_over``): an engine is started
        in the background, the only time a status read starts anything.
        """
        layout = self._layout(workspace)
        store = self._store(layout, create=False)
        status = feature_status(
            layout,
            store,
            feature,
            workflow=self.config.features.default_phases,
            phases={name: r.spec for name, r in self.plugins.phases().items()},
            include_sessions=include_sessions,
            include_checkpoints=include_checkpoints,
            auto_resume=self.config.features.resume_after_usage_limit,
            providers=self._planned_providers,
        )
        if take_over and store is not None and status["engine"] == "dead":
            self._take_over(layout, store)
            status["next_action"] = "its engine stopped: a new engine takes the run over"
        # None without a budget; a pure read (no take-over) keeps no sizes either
        status["worktree_disk"] = self.worktree_disk(workspace=workspace, keep=take_over)
        return status

    def _take_over(self, layout: Layout, store: Store) -> None:
        """Start an engine that takes over; from a status poll at most once per lease period:
        a hung engine still holds the lock, which then cannot hold back a second start."""
        now = time.monotonic()
        if now - self._take_overs.get(layout.project_root, -LEASE_S) < LEASE_S:
            return
        from tmops_core.orchestration.spawn import spawn_engine

        try:
            spawned = spawn_engine(layout, config_path=self.loaded.source, store=store)
        except TmopsError as exc:  # a status read reports; `start` says why it cannot start
            logger.warning("could not start an engine to take over: {}", exc)
            return
        if spawned is not None:
            self._take_overs[layout.project_root] = now

    def list_features(self, *, workspace: Path | None = None) -> list[dict[str, Any]]:
        """Every feature of the project with its branch, run, status and last update."""
        layout = self._layout(workspace)
        return list_features(
            layout,
            self._store(layout, create=False),
            workflow=self.config.features.default_phases,
            phases={name: r.spec for name, r in self.plugins.phases().items()},
            auto_resume=self.config.features.resume_after_usage_limit,
            providers=self._planned_providers,
        )

    def _planned_providers(self, run: RunRecord | None) -> dict[str, str]:
        """Phase -> the provider it runs with, as the engine would choose it for ``run``
        (empty when the plugins name no default provider: the run would fail saying so)."""
        try:
            return workflow_providers(self.config, self.plugins, run)
        except TmopsError:
            return {}

    def project_cost(self, *, workspace: Path | None = None) -> float:
        """What every run of the project cost so far, in USD."""
        return project_cost(self._store(self._layout(workspace), create=False))

    # -- plugins -----------------------------------------------------------------------------

    def plugin_report(self) -> tuple[list[PluginInfo], list[PluginFailure]]:
        return self.plugins.info(), list(self.plugins.failures)

    # -- config ------------------------------------------------------------------------------
