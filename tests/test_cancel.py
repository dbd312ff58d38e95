"""tmops cancel: a person stops a run for good; nothing of its work is lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tmops_core.agents.processes import process_alive
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_hookspecs import FeatureError

from .engine_support import SHORT_WORKFLOW, WAIT_S, run_workflow, scripted_config
from .takeover_support import make_project, wait_until


def test_cancel_stops_a_live_run_its_agents_and_keeps_the_work(tmp_path: Path) -> None:
    project = make_project(tmp_path, fault="tester:slow=60", default_phases=SHORT_WORKFLOW)
    try:
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        engine = project.engine()
        agent = wait_until(lambda: project.live_agent("tester"), timeout=WAIT_S, what="tester")
        head = subprocess.run(
            ["git", "rev-parse", f"refs/heads/feature/{DEMO_FEATURE}"], cwd=project.root,
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

        cancelled = project.cli("cancel", DEMO_FEATURE)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "cancelled" in cancelled.stdout

        assert not process_alive(agent.pid or 0, agent.start_time or 0)
        assert engine.wait(timeout=60) == 0  # its driver lost the run and the engine idled out
        run = project.run()
        assert (run.status, run.last_error) == ("cancelled", "cancelled by a person")
        assert [a.state for a in project.attempts("tester")] == ["cancelled"]
        # the work stays: the branch where it was, the orchestrator's checkpoint, the worktree
        assert subprocess.run(
            ["git", "rev-parse", f"refs/heads/feature/{DEMO_FEATURE}"], cwd=project.root,
            capture_output=True, text=True, check=True,
        ).stdout.strip() == head  # fmt: skip
        assert (project.root / ".tmops/worktrees" / DEMO_FEATURE).is_dir()
        assert project.cli("watch", DEMO_FEATURE).returncode == 4
        # and the run can go on from its phase
        resumed = project.cli("start", DEMO_FEATURE, "--resume")
        assert resumed.returncode == 0, resumed.stderr
    finally:
        project.close()


def test_a_completed_run_cannot_be_cancelled(tmp_path: Path) -> None:
    finished = run_workflow(tmp_path, scripted_config(tmp_path / "state"))
    try:
        with pytest.raises(FeatureError, match="has completed: nothing to cancel"):
            finished.service.cancel(finished.feature, workspace=finished.root)
        assert finished.status()["status"] == "completed"
    finally:
        finished.close()
