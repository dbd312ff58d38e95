"""The engine's machine dies: engine A drives a run on a PostgreSQL store with its attempts on a
Temporal worker; A is SIGKILLed mid-tester and its clone made unusable (its folder moved away:
the disk went with the machine); engine B, in a fresh clone of the shared remote with the same
config, takes the run over from the run folder A mirrored to the remote and completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine_support import COMPLETIONS, PHASES, git
from tests.kill_checks import check_duplicates
from tests.scaleout.loopback_support import Loopback, make_loopback, wait_for
from tests.takeover_support import TMOPS
from tests.temporal_support import DevServer, dev_server
from tmops_core.orchestration.run_mirror import folder_ref
from tmops_core.workspace.layout import Layout

pytestmark = pytest.mark.slow

RUN = "initial"
#: the tester sleeps this long before working: the SIGKILL lands mid-phase
TESTER_SLOW_S = 8
COMPLETE_S = 240.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DevServer]:
    with dev_server(tmp_path) as started:
        yield started


@pytest.fixture
def loopback(tmp_path: Path, server: DevServer, pg_url: str) -> Iterator[Loopback]:
    built = make_loopback(
        tmp_path, server, pg_url, count=1, heartbeat_timeout_s=2.0,
        fault=f"tester:slow={TESTER_SLOW_S}",
    )  # fmt: skip
    try:
        yield built
    finally:
        built.fleet.close()


def _engine(loopback: Loopback, root: Path) -> subprocess.Popen[bytes]:
    """``tmops engine`` in the clone ``root`` with the project's config (stopped at the end)."""
    project = loopback.project
    log = (project.base / f"engine-{root.name}.log").open("ab")
    process = subprocess.Popen(
        [TMOPS, "--config", str(project.config), "engine", "--workspace", str(root)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    log.close()
    project.engines.append(process)
    return process


def _status(loopback: Loopback, feature: str) -> str:
    run = loopback.project.store.run(feature, RUN)
    return run.status if run else "missing"


def test_an_engine_in_another_clone_completes_the_run_of_a_dead_machine(
    loopback: Loopback, tmp_path: Path
) -> None:
    project, feature = loopback.project, loopback.features[0]
    loopback.worker("w1")
    project.service.start(feature, workspace=project.root, spawn=False)
    engine_a = _engine(loopback, project.root)
    wait_for(
        lambda: any(line.get("role") == "tester" for line in loopback.journal_starts()),
        timeout=120, pending=lambda: f"the tester's agent to start ({_status(loopback, feature)})",
    )  # fmt: skip
    os.kill(engine_a.pid, signal.SIGKILL)
    engine_a.wait()
    killed_at = time.monotonic()
    # the machine is gone: its clone, run folder and worktree with it
    project.root.rename(tmp_path / "dead-machine")
    assert git(loopback.fleet.remote, "rev-parse", folder_ref(feature, RUN)).strip()

    clone_b = tmp_path / "machine-b"
    subprocess.run(["git", "clone", "--quiet", str(loopback.fleet.remote), str(clone_b)],
                   check=True)  # fmt: skip
    _engine(loopback, clone_b)
    wait_for(
        lambda: _status(loopback, feature) in ("completed", "failed", "paused", "needs_review"),
        timeout=COMPLETE_S, pending=lambda: f"the run to end ({_status(loopback, feature)})",
    )  # fmt: skip
    took_s = time.monotonic() - killed_at
    run = project.store.run(feature, RUN)
    assert run is not None
    report = {"status": run.status, "kill_to_completion_s": round(took_s, 1),
              "error": run.last_error}  # fmt: skip
    print("\nthe engine's machine died: " + json.dumps(report))
    assert run.status == "completed", run.last_error

    attempts = project.store.attempts(feature, RUN)
    assert [a.phase for a in attempts if a.state == "completed"] == list(PHASES)
    assert any(a.phase == "tester" and a.state == "abandoned" for a in attempts)
    overlaps = check_duplicates(project.store, loopback.journal, [(feature, RUN)])
    assert not overlaps, overlaps.all()

    record = project.store.feature(feature)
    assert record is not None
    subjects = git(loopback.fleet.remote, "log", "--format=%s", f"refs/heads/{record.branch}")
    assert any(s.startswith("test(") for s in subjects.splitlines()), subjects
    assert any(s.startswith("feat(") for s in subjects.splitlines()), subjects

    layout = Layout(clone_b.resolve())
    folder = layout.run_dir(feature, RUN)
    for name in COMPLETIONS.values():
        assert (layout.checkpoint_dir(feature, RUN) / name).is_file(), name
    assert (layout.checkpoint_dir(feature, RUN) / "SUMMARY.md").is_file()
    assert (folder / "metrics.json").is_file()
    assert (folder / "TASK_SPEC.md").is_file()
    worktree = layout.tmops_dir / "worktrees" / feature
    assert (
        git(worktree, "rev-parse", "HEAD").strip()
        == git(loopback.fleet.remote, "rev-parse", f"refs/heads/{record.branch}").strip()
    )
