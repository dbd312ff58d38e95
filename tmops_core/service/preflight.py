"""What ``start`` checks before it queues anything: that the run can get past its first step.

A run sure to fail or to waste its agents' time (a TASK_SPEC.md still the untouched template, a
workflow naming a phase no plugin provides, a provider section its provider refuses, an agent
program that is not installed) is refused with a message saying what to do, before a run is
queued and before any paid agent session starts. It never starts a process and never writes
anything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from tmops_core.agents.env import build_env, provider_allow
from tmops_core.config import Config, provider_settings
from tmops_core.orchestration.providers import workflow_providers
from tmops_core.plugins import Plugins
from tmops_core.workspace.layout import Layout, read_checked, shown
from tmops_core.workspace.project_files import is_untouched_template
from tmops_hookspecs import AgentRequest, FeatureError, TmopsError

__all__ = ["check_before_start", "provider_program", "resolve_program", "start_providers"]

#: the template is under 1 KiB: a longer spec is not it
_SPEC_READ_LIMIT = 64 * 1024
_FIX_CONFIG = "fix the config (`tmops config check` lists every problem), then start again"


def start_providers(
    config: Config, plugins: Plugins, *, provider: str | None,
    phase_providers: Mapping[str, str],
) -> dict[str, str]:  # fmt: skip
    """Phase -> the provider it runs with, for a run started with ``provider`` (the whole run)
    and ``phase_providers`` (per phase); FeatureError for a phase not in the workflow, a
    provider not installed or one disabled in the config."""
    workflow = config.features.default_phases
    for phase in phase_providers:
        if phase not in workflow:
            raise FeatureError(
                f"no phase {phase!r} in the workflow ({', '.join(workflow)})",
                hint="name a phase of features.default_phases: --phase-provider PHASE=PROVIDER",
            )
    chosen = workflow_providers(config, plugins, run_provider=provider, run_phases=phase_providers)
    installed = plugins.providers()
    for phase, name in chosen.items():
        if name not in installed:
            raise FeatureError(
                f"no provider named {shown(name)} (for the {phase} phase)",
                hint=f"installed providers: {', '.join(sorted(installed)) or 'none'}",
            )
        if not provider_settings(config, name).get("enabled", True):
            raise FeatureError(
                f"the provider {name!r} is disabled in the config (providers.{name}.enabled)",
                hint="enable it, or start with another --provider",
            )
    return chosen


def check_before_start(
    config: Config, plugins: Plugins, layout: Layout, *, feature: str, run: str, worktree: Path,
    phase_providers: Mapping[str, str], force: bool = False,
) -> None:  # fmt: skip
    """Raise :class:`~tmops_hookspecs.FeatureError` (or the provider's ConfigError) for a run
    that cannot start (``phase_providers``: phase -> the provider it runs with); ``force`` lets
    a run start on the untouched TASK_SPEC.md template."""
    if not force:
        _check_task_spec(layout, feature, run)
    phases = plugins.phases()
    workflow = list(config.features.default_phases)
    missing = [name for name in workflow if name not in phases]
    if missing:
        raise FeatureError(
            f"the workflow names phases no installed plugin provides: {', '.join(missing)} "
            f"(installed: {', '.join(sorted(phases)) or 'none'})",
            hint=f"{_FIX_CONFIG}: features.default_phases",
        )
    if not workflow:
        raise FeatureError(
            "the workflow has no phases", hint=f"{_FIX_CONFIG}: features.default_phases"
        )
    first_phases: dict[str, str] = {}  # provider -> the first phase it plays
    for phase, name in phase_providers.items():
        first_phases.setdefault(name, phase)
    for provider_name, phase in first_phases.items():
        program, path = provider_program(
            config, plugins, layout, provider_name, feature=feature, run=run, worktree=worktree,
            phase=phase,
        )  # fmt: skip
        if resolve_program(program, path) is None:
            raise FeatureError(
                f"the agent program {program!r} of provider {provider_name!r} is not installed "
                "(not found on the agents' PATH)",
                hint=f"install it, set providers.{provider_name}.command to its path, or start "
                "with another --provider",
            )


def provider_program(
    config: Config, plugins: Plugins, layout: Layout, provider_name: str, *, feature: str,
    run: str, worktree: Path, phase: str | None = None,
) -> tuple[str, str]:  # fmt: skip
    """The program the provider would run for ``phase`` (the first it plays; default: the
    workflow's first), and the agents' PATH it is looked up on. The provider checks its own
    section (permission modes, templates) as it is built: a bad one raises its ConfigError."""
    settings = provider_settings(config, provider_name)
    provider_spec = plugins.providers()[provider_name].spec
    provider = provider_spec.factory(settings)
    workflow = list(config.features.default_phases)
    phases = plugins.phases()
    wanted = phase or (workflow[0] if workflow else None)
    first = phases[wanted].spec.name if wanted is not None and wanted in phases else "orchestrator"
    # Providers are pure: building an invocation starts nothing, and names the program.
    invocation = provider.build_invocation(
        AgentRequest(
            feature=feature,
            run=run,
            phase=first,
            role_instructions="",
            prompt="preflight",
            working_dir=worktree,
            extra_dirs=(layout.checkpoint_dir(feature, run),),
        )
    )
    env = build_env(
        {**settings.get("env", {}), **invocation.env},
        allow=provider_allow(provider_spec, config.features.env_allowlist),
    )
    return invocation.argv[0], env.get("PATH", os.defpath)


def _check_task_spec(layout: Layout, feature: str, run: str) -> None:
    # Agents given the template would invent a task and spend a whole paid run on it.
    spec = layout.task_spec(feature, run)
    try:
        data = read_checked(spec, limit=_SPEC_READ_LIMIT)
    except (TmopsError, OSError):
        return  # a link or an unreadable spec fails the run with its reason, as before
    # a missing spec is reported where the run checks its paths
    if data is not None and is_untouched_template(data.decode("utf-8", "replace"), feature):
        raise FeatureError(
            f"the task spec {spec} is still the template `tmops init` wrote: the agents would "
            "have no task to work on",
            hint=f"write the feature's user story, acceptance criteria and constraints in {spec}, "
            f"then start again; or start anyway with `tmops start {feature} --force` "
            "(MCP: force: true)",
        )


def resolve_program(program: str, path: str) -> str | None:
    """Where ``program`` is: itself when it names a path and is executable, else found on
    ``path``; None when it cannot be run."""
    if os.sep in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program, path=path)
