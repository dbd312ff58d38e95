"""``tmops backup`` and ``tmops restore`` on real projects: a run stopped mid-way is backed up,
restored onto a fresh clone of the project's remote, and goes on there from where it was."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_core.store import SQLiteStore

from .engine_support import SHORT_WORKFLOW, WAIT_S, git
from .takeover_support import TMOPS, Project, make_project, wait_until


def tmops(project: Project, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``tmops`` CLI with the project's config, in ``root``."""
    return subprocess.run(
        [TMOPS, "--config", str(project.config), *args, "--workspace", str(root)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def answer(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def with_remote(project: Project) -> Path:
    """A bare remote of the project (its main branch pushed), as a team would have."""
    remote = project.base / "remote.git"
    git(project.base, "init", "--quiet", "--bare", str(remote))
    git(project.root, "remote", "add", "origin", str(remote))
    git(project.root, "push", "--quiet", "origin", "main")
    return remote


def fresh_clone(remote: Path, where: Path) -> Path:
    git(remote.parent, "clone", "--quiet", str(remote), str(where))
    return where


def restored_store(root: Path) -> SQLiteStore:
    store = SQLiteStore.open_existing(root / ".tmops" / "tmops.db")
    assert store is not None
    return store


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_a_run_paused_mid_way_goes_on_in_a_fresh_clone_from_its_backup(tmp_path: Path) -> None:
    project = make_project(tmp_path, default_phases=SHORT_WORKFLOW, approve_before=["tester"])
    try:
        remote = with_remote(project)
        assert project.cli("start", DEMO_FEATURE).returncode == 0
        assert project.cli("watch", DEMO_FEATURE, timeout=WAIT_S).returncode == 3
        assert (project.run().status, project.run().current_phase) == ("paused", "tester")
        worktree = Path(project.store.feature(DEMO_FEATURE).worktree)  # type: ignore[union-attr]
        (worktree / "NOTES.md").write_text("work in progress, never committed\n")
        head = git(worktree, "rev-parse", "HEAD").strip()

        backup = answer(tmops(project, project.root, "backup", str(tmp_path), "--json"))
        archive = Path(backup["archive"])
        assert archive.parent == tmp_path
        assert archive.name.startswith("tmops-backup-")
        assert archive.stat().st_mode & 0o777 == 0o600
        assert backup["snapshots"], "the uncommitted NOTES.md is in a snapshot"
        # the snapshot ref went into the bundle; here the work is still in its worktree
        assert git(project.root, "for-each-ref", "refs/tmops/").count("snapshot-") == 0

        clone = fresh_clone(remote, tmp_path / "clone")
        restored = answer(tmops(project, clone, "restore", str(archive), "--json"))
        assert restored["features"][DEMO_FEATURE] == {
            "run": "initial", "status": "paused", "phase": "tester",
        }  # fmt: skip
        new_worktree = clone / ".tmops" / "worktrees" / DEMO_FEATURE
        assert restored["worktrees"] == [str(new_worktree)]
        assert git(new_worktree, "rev-parse", "HEAD").strip() == head
        assert (new_worktree / "NOTES.md").read_text() == "work in progress, never committed\n"
        assert "NOTES.md" in git(new_worktree, "status", "--porcelain")  # still uncommitted
        store = restored_store(clone)
        assert store.feature(DEMO_FEATURE).worktree == str(new_worktree)  # type: ignore[union-attr]
        orchestrated = [a.id for a in store.attempts(DEMO_FEATURE, "initial")]
        store.close()

        done = tmops(project, clone, "approve", DEMO_FEATURE, "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        store = restored_store(clone)
        try:
            run = store.run(DEMO_FEATURE, "initial")
            assert run is not None
            assert run.status == "completed"
            attempts = store.attempts(DEMO_FEATURE, "initial")
            # the orchestrator ran once, before the backup; only the tester ran in the clone
            assert [a.phase for a in attempts if a.id not in orchestrated] == ["tester"]
            assert [a.phase for a in attempts if a.phase == "orchestrator"] == ["orchestrator"]
        finally:
            store.close()
        # the tester's work went on from the head the backup had, the uncommitted notes with it
        log = git(clone, "log", "--format=%s", f"{head}..feature/{DEMO_FEATURE}").splitlines()
        assert log == [f"tmops({DEMO_FEATURE}): tester work left uncommitted", *log[1:]]
        assert any(subject.startswith("test(slug): ") for subject in log)
        assert "NOTES.md" in git(clone, "ls-tree", "--name-only", f"feature/{DEMO_FEATURE}")
        # the original project is untouched: its run still waits there
        assert project.run().status == "paused"
    finally:
        project.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_a_backup_taken_while_an_agent_runs_restores_a_run_to_resume(tmp_path: Path) -> None:
    project = make_project(tmp_path, fault="orchestrator:slow=4", default_phases=SHORT_WORKFLOW)
    try:
        remote = with_remote(project)
        project.service.start(DEMO_FEATURE, workspace=project.root, spawn=False)
        project.engine()
        (project.root / ".tmops" / "http.token").write_text("a secret\n")
        wait_until(lambda: project.live_agent("orchestrator"), timeout=WAIT_S, what="agent")
        archive = Path(answer(tmops(project, project.root, "backup", "--json"))["archive"])
        assert archive.parent == project.root / ".tmops" / "archives"
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            names = set(tar.getnames())
        assert manifest["schema_version"] == project.store.schema_version
        assert {f["path"] for f in manifest["files"]} | {"manifest.json"} == names
        assert "store/tmops.db" in names
        assert "git/refs.bundle" in names
        assert f"tree/{DEMO_FEATURE}/runs/initial/TASK_SPEC.md" in names
        assert not any(name.startswith("tree/worktrees/") for name in names)
        assert "tree/http.token" not in names  # a secret stays out

        clone = fresh_clone(remote, tmp_path / "clone")
        restored = answer(tmops(project, clone, "restore", str(archive), "--json"))
        assert restored["paused"] == [f"{DEMO_FEATURE}/initial"]
        assert restored["abandoned_attempts"] == 1
        store = restored_store(clone)
        try:
            run = store.run(DEMO_FEATURE, "initial")
            assert run is not None
            assert (run.status, run.pause_reason) == ("paused", "requested")
            assert run.engine_id is None
            assert store.serving_engine() is None  # the other project's engine is not ours
        finally:
            store.close()
        events = tmops(project, clone, "events", DEMO_FEATURE, "--json").stdout.splitlines()
        paused = [json.loads(line) for line in events if "orchestration.run.paused" in line]
        assert paused[-1]["data"]["reason"].startswith(f"restored from {archive.name}")
        assert paused[-1]["data"]["actor"].startswith("cli:")
        # the original engine and its agent went on untouched by the restore
        assert project.attempts("orchestrator")[0].state in ("running", "completed")

        done = tmops(project, clone, "resume", DEMO_FEATURE, "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        store = restored_store(clone)
        try:
            states = [(a.phase, a.state) for a in store.attempts(DEMO_FEATURE, "initial")]
        finally:
            store.close()
        assert states[0] == ("orchestrator", "abandoned")
        assert states[-1] == ("tester", "completed")
    finally:
        project.close()
