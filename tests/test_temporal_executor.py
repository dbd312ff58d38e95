"""The temporal executor for real: a Temporal dev server, ``tmops worker`` processes in clones
of their own, a bare repository as the shared remote, the scripted agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine_support import COMPLETIONS, PHASES, WAIT_S, git
from tests.temporal_support import dev_server, make_fleet
from tmops_core.service.demo_project import DEMO_FEATURE

pytestmark = pytest.mark.slow

RUN = "initial"


def test_a_run_goes_through_its_four_phases_on_a_worker(tmp_path: Path) -> None:
    with dev_server(tmp_path) as server:
        fleet = make_fleet(tmp_path, server)
        try:
            clone = fleet.clone("w1")
            fleet.worker(clone)
            project = fleet.project
            project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
            project.engine()
            project.wait_completed(DEMO_FEATURE, timeout=4 * WAIT_S)

            attempts = project.attempts()
            assert [(a.phase, a.state) for a in attempts] == [
                (phase, "completed") for phase in PHASES
            ]
            # each phase's work came from the worker: its own ref on the shared remote
            refs = fleet.remote_refs(f"refs/tmops/{DEMO_FEATURE}/{RUN}/work/")
            assert sorted(refs) == sorted(
                f"refs/tmops/{DEMO_FEATURE}/{RUN}/work/{phase}-1-a1" for phase in PHASES
            )
            checkpoints = project.root / ".tmops" / DEMO_FEATURE / "runs" / RUN / "checkpoints"
            for name in COMPLETIONS.values():
                assert (checkpoints / name).is_file(), name
            # the agents' own commits, made on the worker, are the branch's: every commit of
            # it is one of the workers' refs (fetched by the engine under the same names)
            log = git(project.root, "log", "--format=%s", f"feature/{DEMO_FEATURE}")
            assert "test(slug):" in log
            assert "feat(slug):" in log
            not_from_workers = git(
                project.root, "rev-list", f"feature/{DEMO_FEATURE}", "--not",
                f"--glob=refs/tmops/{DEMO_FEATURE}/{RUN}/work/*", "main",
            )  # fmt: skip
            assert not_from_workers == ""
            tree = git(project.root, "ls-tree", "-r", "--name-only", f"feature/{DEMO_FEATURE}")
            assert any(path.startswith("tests/") for path in tree.splitlines())
            worker_tree = clone / ".tmops" / "worktrees" / DEMO_FEATURE
            assert worker_tree.is_dir()  # the agent ran there, not in the engine's worktree
        finally:
            fleet.close()
