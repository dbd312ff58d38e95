"""``tmops doctor`` on real projects: every check ok on a sound one (exit 0); a loose file
mode, a missing agent program or a damaged store fails it (exit 1) with the fix; a dead
engine and a lost worktree are warnings."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import attrs
import pytest

from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.service.doctor import run_doctor
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import ProviderSpec

from .engine_support import AGENT, WAIT_S, in_memory_service, scripted_config, write_config
from .takeover_support import Project, make_project, wait_until


def doctor(project: Project) -> tuple[int, dict[str, dict[str, Any]]]:
    done = project.cli("doctor", "--json")
    answer = json.loads(done.stdout)
    assert answer["ok"] is (done.returncode == 0), done.stderr
    return done.returncode, {check["name"]: check for check in answer["checks"]}


def test_a_sound_project_passes_every_check(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    try:
        code, checks = doctor(project)
        assert code == 0
        assert {name: c["status"] for name, c in checks.items()} == {
            "git": "ok", "provider claude-code": "ok", "permissions": "ok", "disk": "ok",
            "store": "ok", "engines": "ok", "worktrees": "ok",
        }  # fmt: skip
        # the provider's program asked its version (the scripted agent stands in for claude)
        assert checks["provider claude-code"]["found"].endswith(": 0.0.0 (tmops scripted agent)")
        assert checks["git"]["found"].startswith("git 2.")
        text = project.cli("doctor")
        assert text.returncode == 0
        assert "ok    store: " in text.stdout
    finally:
        project.close()


def test_a_file_open_to_others_fails_with_the_chmod_to_run(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    try:
        spec = project.root / ".tmops" / DEMO_FEATURE / "runs" / "initial" / "TASK_SPEC.md"
        spec.chmod(0o644)
        code, checks = doctor(project)
        assert code == 1
        assert checks["permissions"]["status"] == "fail"
        assert f"{spec} (644)" in checks["permissions"]["found"]
        assert "chmod -R go-rwx" in checks["permissions"]["fix"]
        text = project.cli("doctor")
        assert "fix: `chmod -R go-rwx" in text.stdout
    finally:
        project.close()


def test_a_missing_agent_program_fails_and_says_how_to_fix_it(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    try:
        data = scripted_config(project.state, provider={"command": str(tmp_path / "no-agent")})
        write_config(project.config, data)
        code, checks = doctor(project)
        assert code == 1
        provider = checks["provider claude-code"]
        assert provider["status"] == "fail"
        assert "not on the agents' PATH" in provider["found"]
        assert "providers.claude-code.command" in provider["fix"]
    finally:
        project.close()


def test_a_damaged_store_fails_the_integrity_check(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    try:
        project.store.close()
        project.service.close()  # the last connection gone, the WAL is in the file
        path = project.root / ".tmops" / "tmops.db"
        assert not path.with_name("tmops.db-wal").exists()
        data = bytearray(path.read_bytes())
        data[4096 + 100 : 8192] = b"\xff" * (4096 - 100)  # a page of the features table
        path.write_bytes(bytes(data))
        code, checks = doctor(project)
        assert code == 1
        assert checks["store"]["status"] == "fail"
        assert "integrity" in checks["store"]["found"]
        assert "tmops restore" in checks["store"]["fix"]
    finally:
        project.close()


def test_a_dead_engine_and_a_lost_worktree_are_warnings(tmp_path: Path) -> None:
    project = make_project(tmp_path, fault="orchestrator:slow=30", default_phases=["orchestrator"])
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine = project.engine()
        wait_until(lambda: project.live_agent("orchestrator"), timeout=WAIT_S, what="agent")
        engine.send_signal(signal.SIGKILL)
        engine.wait()
        shutil.rmtree(Path(project.store.feature(DEMO_FEATURE).worktree))  # type: ignore[union-attr]
        code, checks = doctor(project)
        assert code == 0  # warnings only
        assert checks["engines"]["status"] == "warn"
        assert f"engine pid {engine.pid} holds the lease but is dead" in checks["engines"]["found"]
        assert f"{DEMO_FEATURE}/initial is running for a dead engine" in checks["engines"]["found"]
        assert checks["worktrees"]["status"] == "warn"
        assert checks["worktrees"]["fix"] == "`git worktree prune`"
    finally:
        project.close()


def test_each_enabled_provider_is_checked_by_its_own_rules(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    try:
        data = scripted_config(project.state, provider={"permission_mode": "anything-goes"})
        data["providers"]["command"] = {"command": AGENT, "args": ["-p", "{prompt}"]}
        write_config(project.config, data)
        code, checks = doctor(project)
        assert code == 1
        refused = checks["provider claude-code"]
        assert refused["status"] == "fail"
        assert "anything-goes" in refused["found"]
        assert refused["fix"].startswith("fix providers.claude-code")
        # a provider that names no version argument: found, its version not asked
        assert checks["provider command"] == {
            "name": "provider command", "status": "ok",
            "found": f"{AGENT} (the provider names no way to ask its version)", "fix": "",
        }  # fmt: skip
    finally:
        project.close()


def test_a_provider_spec_takes_its_version_arguments_as_a_list_of_strings() -> None:
    def factory(settings: Any) -> Any:
        return settings

    spec = ProviderSpec(name="p", factory=factory, version_args=["--version"])
    assert spec.version_args == ("--version",)
    assert ProviderSpec(name="p", factory=factory).version_args == ()
    with pytest.raises(TypeError, match="a list of strings"):
        ProviderSpec(name="p", factory=factory, version_args="--version")


def test_outside_a_git_repository_the_worktree_check_fails_saying_what_to_do(
    tmp_path: Path,
) -> None:
    service = in_memory_service(scripted_config(tmp_path / "state"))
    found = run_doctor(Layout(tmp_path), service.config, service.plugins)
    checks = {check.name: check for check in found}
    assert checks["worktrees"].status == "fail"
    assert "is not inside a git repository" in checks["worktrees"].found
    assert "git init" in checks["worktrees"].fix
    assert checks["store"].found.startswith("no store at")


def test_a_store_of_another_workspace_fails_saying_which_and_what_to_do(tmp_path: Path) -> None:
    project = make_project(tmp_path)  # its store made for the default workspace
    try:
        config = project.service.config
        other = attrs.evolve(config, server=attrs.evolve(config.server, workspace_id="team_b"))
        checks = {
            c.name: c for c in run_doctor(Layout(project.root), other, project.service.plugins)
        }
        assert checks["store"].status == "fail"
        assert "made for workspace 'default'" in checks["store"].found
        assert "server.workspace_id is 'team_b'" in checks["store"].found
        assert "set server.workspace_id back to 'default'" in checks["store"].fix
    finally:
        project.close()
