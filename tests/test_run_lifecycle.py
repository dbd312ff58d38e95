"""The run loop on the lifecycle: the verifier's verdict counts, status says only what the store
says, adopted work is committed under its phase, the branch guard, fencing, retries that work
with a provider that cannot resume."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmops_core.agents.processes import boot_clock, boot_id, process_start_time
from tmops_core.git import Git
from tmops_core.lifecycle import AttemptState
from tmops_core.orchestration.daemon import engine_alive
from tmops_core.store import LostOwnership
from tmops_core.surfaces.follow import follow_run
from tmops_core.workspace.layout import iso, utc_now
from tmops_hookspecs import FeatureError
from tmops_plugins.scripted_roles import CODE_FILE, CODE_SOURCE

from .engine_support import (
    AGENT,
    Finished,
    in_memory_service,
    run_workflow,
    scripted_config,
    serve,
)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def _worktree(finished: Finished) -> Path:
    return Path(finished.init.worktree)


def _exit_code(finished: Finished) -> int:
    return follow_run(
        finished.service, finished.feature, workspace=finished.root, echo=lambda _: None
    )


# -- the verifier's verdict ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def refused_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("refused-once")
    finished = run_workflow(base, scripted_config(base / "state", fault="verifier:refuse"))
    yield finished
    finished.close()


def test_a_verdict_of_no_sends_the_work_back_to_the_implementer(refused_once: Finished) -> None:
    rows = [(a.phase, a.state) for a in refused_once.attempts() if a.phase != "orchestrator"]
    assert rows == [
        ("tester", "completed"),
        ("implementer", "completed"),
        ("verifier", "rework"),
        ("implementer", "completed"),
        ("verifier", "completed"),
    ]
    assert refused_once.status()["status"] == "completed"
    assert _exit_code(refused_once) == 0


def test_the_rework_round_is_told_where_the_findings_are(refused_once: Finished) -> None:
    started = [e["data"] for e in refused_once.events("session.started")]
    told = [e["told"] for e in started if e["phase"] == "implementer"]
    assert told[0] is None
    assert told[1].startswith("The work was sent back for rework: the verifier says")
    [review] = refused_once.root.glob(".tmops/slugify/runs/initial/checkpoints/.007-*rework-1")
    assert "Feature ready for merge: NO" in review.read_text()


@pytest.fixture(scope="module")
def refused_always(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("refused-always")
    finished = run_workflow(base, scripted_config(base / "state", fault="verifier:refuse:always"))
    yield finished
    finished.close()


def test_a_verdict_of_no_after_the_rework_rounds_ends_needs_review(
    refused_always: Finished,
) -> None:
    status = refused_always.status()
    assert status["status"] == "needs_review"
    assert status["next_action"].startswith("read 007-verify-complete.md and decide")
    assert "merge" not in status["next_action"]
    phases = {p["phase"]: p["status"] for p in status["phase_progress"]["phases"]}
    assert phases["verifier"] == "needs_review"
    assert [a.state for a in refused_always.attempts("verifier")] == ["rework", "refused"]
    assert (
        refused_always.root / ".tmops/slugify/runs/initial/checkpoints/007-verify-complete.md"
    ).exists()


def test_needs_review_has_its_own_exit_code(refused_always: Finished) -> None:
    assert _exit_code(refused_always) == 5


def test_list_says_needs_review(refused_always: Finished) -> None:
    [row] = refused_always.service.list_features(workspace=refused_always.root)
    assert row["status"] == "needs_review"


# -- status is the store's ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def summary_fails(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("summary-fails")

    def block_metrics(init: object) -> None:
        # A folder where metrics.json goes: the summary writer fails after every phase passed.
        (Path(init.run_dir) / "metrics.json").mkdir()  # type: ignore[attr-defined]

    finished = run_workflow(base, scripted_config(base / "state"), prepare=block_metrics)
    yield finished
    finished.close()


def test_a_failing_summary_fails_the_run_in_status_list_and_exit_code(
    summary_fails: Finished,
) -> None:
    status = summary_fails.status()
    assert status["status"] == "failed"
    assert "metrics.json" in status["last_error"]
    assert "merge" not in status["next_action"]
    [row] = summary_fails.service.list_features(workspace=summary_fails.root)
    assert row["status"] == "failed"
    assert _exit_code(summary_fails) == 1


def test_completed_only_once_summary_and_metrics_exist(refused_once: Finished) -> None:
    completed = refused_once.events("feature.completed")
    transitions = refused_once.events("phase.transition")
    assert completed
    assert completed[-1]["id"] > transitions[-1]["id"]
    run_dir = refused_once.root / ".tmops/slugify/runs/initial"
    assert (run_dir / "metrics.json").is_file()
    assert (run_dir / "checkpoints/SUMMARY.md").is_file()


# -- adoption commits under the phase that did the work -------------------------------------------


@pytest.fixture(scope="module")
def adopted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """The implementer always crashes; a person writes the code and 005 by hand and resumes."""
    base = tmp_path_factory.mktemp("adopted")
    failed = run_workflow(
        base, scripted_config(base / "state", fault="implementer:crash:always", max_retries=0)
    )
    worktree = _worktree(failed)
    (worktree / CODE_FILE).write_text(CODE_SOURCE)  # left uncommitted, as a person might
    checkpoints = failed.root / ".tmops/slugify/runs/initial/checkpoints"
    (checkpoints / "005-impl-complete.md").write_text(
        "# Checkpoint: 005-impl-complete.md\n**From:** Implementer\n**To:** Orchestrator\n"
        "**Feature:** slugify\n**Run:** initial\n**Status:** complete\n\n"
        "## Work Completed\n- slugify written by hand\n## Metrics\n- Passing: 6/6\n"
    )
    resumed = in_memory_service(scripted_config(base / "state"))
    resumed.start(failed.feature, workspace=failed.root, spawn=False, resume=True)
    serve(resumed, failed.root)
    failed.service.close()
    yield Finished(resumed, failed.root, failed.init, failed.answer, 0.0, "", failed.store)
    resumed.close()
    failed.store.close()


def test_adopted_work_is_committed_under_the_phase_that_did_it(adopted: Finished) -> None:
    assert adopted.status()["status"] == "completed", adopted.status()["last_error"]
    worktree = _worktree(adopted)
    subjects = _git(worktree, "log", "--format=%s", "--", CODE_FILE).splitlines()
    assert subjects == ["tmops(slugify): implementer work left uncommitted"]
    assert _git(worktree, "status", "--porcelain") == ""


def test_an_adopted_checkpoint_is_made_private(adopted: Finished) -> None:
    path = adopted.root / ".tmops/slugify/runs/initial/checkpoints/005-impl-complete.md"
    assert path.stat().st_mode & 0o777 == 0o600


# -- the branch guard ---------------------------------------------------------------------------


@pytest.fixture
def stopped_at_implementer(tmp_path: Path) -> Iterator[Finished]:
    failed = run_workflow(
        tmp_path,
        scripted_config(tmp_path / "state", fault="implementer:crash:always", max_retries=0),
    )
    yield failed
    failed.close()


@pytest.mark.parametrize("how", ["reset", "update-ref"])
def test_a_branch_moved_by_someone_else_pauses_the_run_and_keeps_a_backup_ref(
    stopped_at_implementer: Finished, how: str
) -> None:
    finished = stopped_at_implementer
    worktree = _worktree(finished)
    left = _git(worktree, "rev-parse", "HEAD")
    if how == "reset":
        _git(worktree, "reset", "--hard", "HEAD~1")
    else:
        elsewhere = _git(finished.root, "rev-parse", "main")
        _git(worktree, "update-ref", "refs/heads/feature/slugify", elsewhere)
    found = _git(worktree, "rev-parse", "refs/heads/feature/slugify")
    resumed = in_memory_service(scripted_config(finished.root.parent / "state"))
    try:
        resumed.start(finished.feature, workspace=finished.root, spawn=False, resume=True)
        serve(resumed, finished.root)
        status = resumed.status(finished.feature, workspace=finished.root)
        assert status["status"] == "paused"
        assert status["pause_reason"] == "branch_moved"
        assert left in status["last_error"]
        assert found in status["last_error"]
        assert "--accept-branch" in status["next_action"]
        backups = _git(
            finished.root, "for-each-ref", "--format=%(objectname)", "refs/tmops/slugify/initial/"
        )
        assert found in backups.splitlines()
        assert _git(worktree, "rev-parse", "refs/heads/feature/slugify") == found  # not rewritten
        # Resuming without accepting the move is refused, naming both commits.
        with pytest.raises(FeatureError, match="accept-branch") as refused:
            resumed.start(finished.feature, workspace=finished.root, spawn=False, resume=True)
        assert left in str(refused.value)
        assert found in str(refused.value)
        # Accepting it continues from the found head.
        answer = resumed.start(
            finished.feature, workspace=finished.root, spawn=False, resume=True,
            accept_branch=True,
        )  # fmt: skip
        assert answer["status"] == "queued"
        record = finished.store.run(finished.feature, "initial")
        assert record is not None
        assert record.branch_head == found
    finally:
        resumed.close()


# -- fencing ------------------------------------------------------------------------------------


def test_a_stale_attempt_can_neither_commit_nor_move_the_run(
    stopped_at_implementer: Finished,
) -> None:
    finished = stopped_at_implementer
    store = finished.store
    feature, run = finished.feature, "initial"
    stale = store.run(feature, run).fencing  # type: ignore[union-attr]
    store.queue_run(feature, run, run_id="new", provider="claude-code", now=iso(utc_now()))
    # a new owner: an engine that holds the lease admits the run again
    start_time = process_start_time(os.getpid())
    assert start_time is not None
    owner, _ = store.acquire_lease(
        pid=os.getpid(), start_time=start_time, boot_id=boot_id(),
        lease_until=boot_clock() + 60, now=iso(utc_now()), alive=engine_alive,
    )  # fmt: skip
    store.admit_run(feature, run, engine_id=owner.id, engine_pid=os.getpid(), now=iso(utc_now()))
    store.release_lease(owner.id, now=iso(utc_now()))
    worktree = _worktree(finished)
    head = _git(worktree, "rev-parse", "HEAD")
    (worktree / "late.txt").write_text("written by a runner that lost the run\n")
    with pytest.raises(LostOwnership):
        Git(worktree).commit_work(
            "late", branch="feature/slugify", expected=head,
            guard=lambda: store.fenced(feature, run, stale),
        )  # fmt: skip
    assert _git(worktree, "rev-parse", "refs/heads/feature/slugify") == head
    attempt = store.attempts(feature, run)[-1]
    with pytest.raises(LostOwnership):
        store.finish_attempt(
            attempt.id, feature, run, stale, state=AttemptState.COMPLETED, outcome="succeeded",
            message="late", session_id=None, cost_usd=None, turns=None, now=iso(utc_now()),
        )  # fmt: skip
    with pytest.raises(LostOwnership):
        store.attempt_session(attempt.id, feature, run, stale, "a-stale-session")
    with pytest.raises(LostOwnership):
        store.add_event(feature, run, "orchestration.late", "{}", iso(utc_now()), fencing=stale)
    with pytest.raises(LostOwnership):
        store.end_run(feature, run, stale, status="completed", now=iso(utc_now()))
    assert store.run(feature, run).status == "running"  # type: ignore[union-attr]


# -- retries with a provider that cannot resume ---------------------------------------------------


def test_retries_of_a_provider_that_cannot_resume_run_the_role_afresh(tmp_path: Path) -> None:
    """The command provider without {resume_session_id}: the first session of each role exits
    without its checkpoint; the retry gets the whole prompt again and completes the role."""
    wrapper = tmp_path / "agent.py"
    wrapper.write_text(
        "import os, sys\n"
        "marker = os.path.join(sys.argv[1], 'seen-' + sys.argv[2])\n"
        "fault = '' if os.path.exists(marker) else sys.argv[2] + ':no-checkpoint'\n"
        "open(marker, 'w').close()\n"
        "os.environ['TMOPS_SCRIPTED_FAULT'] = fault\n"
        f"os.execv({AGENT!r}, [{AGENT!r}, '-p', sys.argv[3], '--output-format', 'stream-json',"
        " '--verbose'])\n"
    )
    markers = tmp_path / "markers"
    markers.mkdir()
    data = scripted_config(tmp_path / "state", max_retries=1)
    data["providers"] = {
        "command": {
            "command": sys.executable,
            "args": [str(wrapper), str(markers), "{phase}", "{prompt}"],
            "env": {"TMOPS_SCRIPTED_STATE_DIR": str(tmp_path / "state")},
        }
    }
    data["features"]["default_provider"] = "command"
    finished = run_workflow(tmp_path, data)
    try:
        assert finished.status()["status"] == "completed", finished.status()["last_error"]
        assert [a.state for a in finished.attempts("orchestrator")] == ["rejected", "completed"]
    finally:
        finished.close()


def test_a_retry_after_the_api_asked_for_is_waited_out(tmp_path: Path) -> None:
    """A 429 that says when to come back is retried after that, not after the short backoff
    (0.05 s in these tests)."""
    wrapper = tmp_path / "agent.py"
    wrapper.write_text(
        "import json, os, sys, time\n"
        "log = os.path.join(sys.argv[1], 'starts')\n"
        "with open(log, 'a') as out: out.write(f'{sys.argv[2]} {time.time()}\\n')\n"
        "marker = os.path.join(sys.argv[1], 'limited-' + sys.argv[2])\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close()\n"
        "    print(json.dumps({'type': 'result', 'subtype': 'success', 'is_error': True,\n"
        "        'api_error_status': 429, 'session_id': 'x', 'num_turns': 1,\n"
        "        'result': 'API Error: 429 rate_limit_error. Retry after 2 seconds'}),\n"
        "        flush=True)\n"
        "    with open(os.path.join(sys.argv[1], 'ended'), 'w') as out:\n"
        "        out.write(str(time.time()))\n"
        "    sys.exit(1)\n"
        f"os.execv({AGENT!r}, [{AGENT!r}, '-p', sys.argv[3], '--output-format', 'stream-json',"
        " '--verbose'])\n"
    )
    markers = tmp_path / "markers"
    markers.mkdir()
    data = scripted_config(tmp_path / "state", max_retries=1, default_phases=["orchestrator"])
    data["providers"] = {
        "command": {
            "command": sys.executable,
            "args": [str(wrapper), str(markers), "{phase}", "{prompt}"],
            "env": {"TMOPS_SCRIPTED_STATE_DIR": str(tmp_path / "state")},
        }
    }
    data["features"]["default_provider"] = "command"
    finished = run_workflow(tmp_path, data)
    try:
        assert finished.status()["status"] == "completed", finished.status()["last_error"]
        first = finished.attempts("orchestrator")[0]
        assert (first.state, first.outcome) == ("rejected", "transient_error")
        ended = float((markers / "ended").read_text())
        second = float((markers / "starts").read_text().splitlines()[1].split()[1])
        assert second - ended >= 2.0  # the API's 2 s, not the 0.05 s backoff
    finally:
        finished.close()
