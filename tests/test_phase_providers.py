"""A provider per phase, with the real engine and real git repositories: the ``claude-code``
provider and the ``command`` provider each run the scripted agent (its journal kept per
provider, so the agent each phase invoked is known), one for some phases, the other for the
rest; the attempts, status, SUMMARY.md and metrics.json say which ran each phase; the config's
errors point at their ``$.path``; a usage limit holds back only the provider that hit it; and
the default provider is the one a plugin declares."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tmops_core.config import load_config
from tmops_core.orchestration.providers import workflow_providers
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.service.operations import Service
from tmops_core.store import held_providers
from tmops_hookspecs import ConfigError, FeatureError, ProviderSpec, hookimpl
from tmops_plugins.scripted_journal import JOURNAL_ENV, read_journal
from tmops_plugins.scripted_session import FAULT_ENV

from .engine_support import (
    SHORT_WORKFLOW,
    WAIT_S,
    new_feature,
    serve,
    write_config,
)
from .takeover_support import RUN, TMOPS, Project, make_project, wait_until

OTHER = "other-feature"
THIRD = "third-feature"
COMMAND_ARGS = ["-p", "--output-format", "stream-json", "--verbose", "--permission-mode",
                "bypassPermissions", "--add-dir", "{checkpoint_dir}", "--", "{prompt}"]  # fmt: skip


def _mixed(base: Path, *, command_fault: str = "", **features: Any) -> Project:
    """A demo project whose ``claude-code`` and ``command`` providers both run the scripted
    agent, each with its own journal (``base/journal-<provider>``); ``features`` on top."""
    command_env = {JOURNAL_ENV: str(base / "journal-command")}
    if command_fault:
        command_env[FAULT_ENV] = command_fault
    return make_project(
        base, command_env=command_env, default_phases=SHORT_WORKFLOW,
        claude_env={JOURNAL_ENV: str(base / "journal-claude-code")}, **features,
    )  # fmt: skip


def _tmops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TMOPS, *args], capture_output=True, text=True, timeout=60, check=False)


def _roles(journal: Path) -> list[str]:
    return [line["role"] for line in read_journal(journal) if line["event"] == "start"]


def test_each_phase_runs_with_the_provider_the_config_gives_it(tmp_path: Path) -> None:
    project = _mixed(tmp_path, phase_providers={"tester": "command"})
    try:
        answer = project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        assert answer["provider"] == "claude-code, command"
        serve(project.service, project.root)
        assert project.run().status == "completed", project.run().last_error
        assert [(a.phase, a.provider) for a in project.attempts()] == [
            ("orchestrator", "claude-code"), ("tester", "command"),
        ]  # fmt: skip
        # the agent each provider started played only its phases
        assert _roles(tmp_path / "journal-claude-code") == ["orchestrator"]
        assert _roles(tmp_path / "journal-command") == ["tester"]
        status = project.service.status(DEMO_FEATURE, workspace=project.root)
        shown = {p["phase"]: p["provider"] for p in status["phase_progress"]["phases"]}
        assert shown == {"orchestrator": "claude-code", "tester": "command"}
        assert [a["provider"] for a in status["attempts"]] == ["claude-code", "command"]
        text = project.cli("status", DEMO_FEATURE).stdout
        assert "tester         completed     attempts 1" in text
        assert ", command" in text
        run_dir = project.root / ".tmops" / DEMO_FEATURE / "runs" / RUN
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert [p["provider"] for p in metrics["phases"]] == ["claude-code", "command"]
        summary = (run_dir / "checkpoints" / "SUMMARY.md").read_text()
        assert "| orchestrator | claude-code | 1 |" in summary
        assert "| tester | command | 1 |" in summary
    finally:
        project.close()


def test_start_overrides_the_config_for_the_whole_run_and_per_phase(tmp_path: Path) -> None:
    project = _mixed(tmp_path, phase_providers={"tester": "command"})
    try:
        # --provider wins over phase_providers; --phase-provider wins over --provider
        result = project.cli(
            "start", DEMO_FEATURE, "--provider", "command", "--phase-provider",
            "tester=claude-code", "--json", "--wait",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert [(a.phase, a.provider) for a in project.attempts()] == [
            ("orchestrator", "command"), ("tester", "claude-code"),
        ]  # fmt: skip
        assert _roles(tmp_path / "journal-command") == ["orchestrator"]
        assert _roles(tmp_path / "journal-claude-code") == ["tester"]
        assert project.run().provider == "command"
        assert project.run().phase_overrides == {"tester": "claude-code"}
    finally:
        project.close()


def test_start_refuses_a_phase_or_a_provider_it_does_not_know(tmp_path: Path) -> None:
    project = _mixed(tmp_path)
    try:
        with pytest.raises(FeatureError, match="no phase 'implementor' in the workflow"):
            project.service.start(
                DEMO_FEATURE, workspace=project.root, spawn=False,
                phase_providers={"implementor": "command"},
            )  # fmt: skip
        with pytest.raises(FeatureError, match=r"no provider named 'nope' \(for the tester"):
            project.service.start(
                DEMO_FEATURE, workspace=project.root, spawn=False,
                phase_providers={"tester": "nope"},
            )  # fmt: skip
        bad = project.cli("start", DEMO_FEATURE, "--phase-provider", "tester")
        assert bad.returncode == 2
        assert "is not PHASE=PROVIDER" in bad.stderr
        assert project.run().status == "initialized"
    finally:
        project.close()


def test_the_config_errors_name_their_path(tmp_path: Path) -> None:
    project = _mixed(tmp_path)
    data: dict[str, Any] = {"features": {"phase_providers": {"implementor": "command"}}}
    unknown_phase = write_config(tmp_path / "phase.yaml", data)
    with pytest.raises(ConfigError) as raised:
        load_config(unknown_phase)
    (problem,) = raised.value.problems
    assert problem.endswith("@ $.features.phase_providers.implementor")
    assert "add it to features.default_phases" in problem
    data = {"features": {"phase_providers": {"tester": "claude_cod"}}}
    unregistered = write_config(tmp_path / "provider.yaml", data)
    checked = _tmops("--config", str(unregistered), "config", "check")
    assert checked.returncode == 2
    assert "no installed provider is named 'claude_cod'" in checked.stderr
    assert "@ $.features.phase_providers.tester" in checked.stderr
    doctor = _tmops("--config", str(unregistered), "doctor", "--workspace", str(project.root),
                    "--json")  # fmt: skip
    assert doctor.returncode == 1
    rows = {row["name"]: row for row in json.loads(doctor.stdout)["checks"]}
    assert rows["provider claude_cod"]["status"] == "fail"
    project.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_a_usage_limit_holds_back_only_the_provider_of_the_phase_that_hit_it(
    tmp_path: Path,
) -> None:
    project = _mixed(
        tmp_path, command_fault="tester:usage-limit=10", phase_providers={"tester": "command"}
    )
    new_feature(project.service, project.root, OTHER)
    new_feature(project.service, project.root, THIRD)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine = project.engine()
        paused = wait_until(
            lambda: project.run() if project.run().status == "paused" else None,
            timeout=WAIT_S, what="the usage limit",
        )  # fmt: skip
        # the tester's provider hit it, not the run's first phase's
        assert (paused.pause_reason, paused.limited_provider) == ("usage_limited", "command")
        now = paused.updated_at
        assert held_providers(project.store.usage_limited_runs(), now) == {
            "command": paused.resume_at
        }
        # a run on claude-code goes on; one whose next phase is on command waits
        project.service.start(THIRD, workspace=project.root, spawn=False,
                              phase_providers={"orchestrator": "command"})  # fmt: skip
        project.service.start(OTHER, provider="claude-code", workspace=project.root, spawn=False)
        third = project.service.status(THIRD, workspace=project.root)
        assert third["status"] == "queued"
        assert third["held_until"] == paused.resume_at
        assert f"provider command is usage-limited until {paused.resume_at}" in third["next_action"]
        project.wait_completed(OTHER)
        assert project.store.attempts(OTHER, RUN)[0].started_at < str(paused.resume_at)
        # at the reset the limited run resumes by itself, and the held one is admitted
        project.wait_completed(DEMO_FEATURE, THIRD)
        assert engine.wait(timeout=WAIT_S) == 0
        assert [a.state for a in project.attempts("tester")] == ["paused", "completed"]
        assert {a.provider for a in project.attempts("tester")} == {"command"}
        assert project.store.attempts(THIRD, RUN)[0].started_at >= str(paused.resume_at)
    finally:
        project.close()


class _Claims:
    """A test plugin whose provider also says it is the default."""

    @hookimpl
    def tmops_register_providers(self) -> list[ProviderSpec]:
        other = create_plugin_manager().providers()["command"].spec
        return [ProviderSpec(name="claimant", factory=other.factory, is_default=True)]


def test_the_default_provider_is_the_one_a_plugin_declares() -> None:
    plugins = create_plugin_manager()
    assert plugins.default_provider() == "claude-code"
    config = load_config(None).config
    assert config.features.default_provider is None  # the core names none
    assert set(workflow_providers(config, plugins).values()) == {"claude-code"}
    service = Service(load_config(None), plugins)
    assert service.effective_config()["features"]["default_provider"] == "claude-code"
    without = create_plugin_manager(disabled=["claude-code"])
    with pytest.raises(ConfigError, match="no installed provider says it is the default"):
        without.default_provider()
    both = create_plugin_manager(extra=[("claims", _Claims())])
    with pytest.raises(ConfigError, match=r"more than one .* \(claimant, claude-code\)"):
        both.default_provider()


def test_the_old_default_provider_constant_is_deprecated() -> None:
    import tmops_hookspecs

    with pytest.warns(DeprecationWarning, match="is_default"):
        assert tmops_hookspecs.DEFAULT_PROVIDER == "claude-code"
