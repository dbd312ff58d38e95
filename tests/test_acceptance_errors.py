"""The seed spec's error-injection scenarios, with real processes, files and git.

Each one drives tmops as a person would, through the real ``tmops`` command in processes of
its own (``acceptance_support.Site``), with the scripted agent and its injected faults:

1. the agent killed (kill -9) during the orchestrator phase;
2. a corrupted completion checkpoint (malformed JSON, YAML front matter, junk);
3. write permission removed on ``.tmops/<feature>/``;
4. the feature branch rewritten by an outside git command while a phase runs;
5. more features started than ``features.concurrent_limit``: the queue and its positions.

Timing is read from what tmops recorded (event and attempt timestamps), never from sleeps.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance_support import RUN, Site, assert_test_first, branch_subjects, make_site
from tests.engine_support import SHORT_WORKFLOW, WAIT_S
from tests.takeover_support import wait_until
from tmops_core.agents.processes import process_alive
from tmops_core.service.demo_project import DEMO_FEATURE

F = DEMO_FEATURE
#: ``tmops watch`` and ``start --wait`` exit codes
FAILED, PAUSED = 1, 3


@pytest.fixture
def sites() -> Iterator[list[Site]]:
    made: list[Site] = []
    yield made
    for site in made:
        site.close()


def _site(sites: list[Site], base: Path, **settings: Any) -> Site:
    site = make_site(base, **settings)
    sites.append(site)
    site.init(F)
    return site


def _status(site: Site, feature: str = F) -> dict[str, Any]:
    done = site.cli("status", feature, "--json")
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- 1. the agent killed during the orchestrator phase ----------------------------------------


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_an_agent_killed_in_the_orchestrator_phase_is_detected_recoverable_and_resumable(
    tmp_path: Path, sites: list[Site]
) -> None:
    site = _site(sites, tmp_path, fault="orchestrator:slow=60", max_retries=0)
    spec_before = (site.run_dir(F) / "TASK_SPEC.md").read_text()
    assert site.cli("start", F).returncode == 0
    agent = wait_until(lambda: site.live_agent(F, "orchestrator"), timeout=WAIT_S, what="agent")
    assert agent.pid is not None
    assert _status(site)["sessions"]["orchestrator"]["pid"] == agent.pid  # status names it
    killed_at = datetime.now(UTC).replace(microsecond=0)  # the store stamps to the second
    os.kill(agent.pid, signal.SIGKILL)

    watched = site.cli("watch", F)
    assert watched.returncode == FAILED, watched.stdout + watched.stderr

    # detected within 30 s, by what tmops recorded
    [ended] = site.events(F, "session.ended")
    assert (ended["data"]["phase"], ended["data"]["returncode"]) == ("orchestrator", -9)
    assert ended["data"]["outcome"] == "crashed"
    lag = (_stamp(ended["timestamp"]) - killed_at).total_seconds()
    assert 0 <= lag <= 30, f"the kill was recorded {lag} s after it happened"
    [attempt] = site.attempts(F, "orchestrator")
    assert attempt.state == "failed"
    assert attempt.finished_at is not None
    assert (_stamp(attempt.finished_at) - killed_at).total_seconds() <= 30
    # a recovery point: the phase-start ref, the spec untouched, nothing committed
    start_ref = site.git("rev-parse", f"refs/tmops/{F}/{RUN}/orchestrator-start")
    assert start_ref == attempt.start_commit == site.git("rev-parse", f"feature/{F}")
    assert (site.run_dir(F) / "TASK_SPEC.md").read_text() == spec_before
    # the failure in status, with a manual override offered
    status = _status(site)
    assert (status["status"], status["current_phase"]) == ("failed", "orchestrator")
    assert status["sessions"]["orchestrator"]["state"] == "failed"
    assert "SIGKILL" in status["last_error"]
    assert f"tmops resume {F}" in status["next_action"]
    assert f"tmops prompt {F} orchestrator" in status["next_action"]
    assert f"tmops prompt {F} orchestrator" in site.cli("status", F).stdout

    # resumable: once the agent works again, the run goes on from the orchestrator
    site.rewrite_config()
    resumed = site.cli("start", F, "--resume", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [a.state for a in site.attempts(F, "orchestrator")] == ["failed", "completed"]
    assert _status(site)["status"] == "completed"


# -- 2. a corrupted completion checkpoint -----------------------------------------------------

CORRUPTIONS = {
    "malformed JSON": '{"feature": "slugify", "run": "initial", "quality_score": 9,\n',
    "malformed YAML front matter": (
        "---\nfeature: [slugify\nstatus: {complete\n---\n# Checkpoint: 007-verify-complete.md\n"
    ),
    "markdown junk": "# Checkpoint\n\n\x00\x01 lorem ipsum, nothing a verifier would say\n",
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupted_checkpoint_is_rejected_the_valid_state_kept_and_the_operator_alerted(
    tmp_path: Path, sites: list[Site], corruption: str
) -> None:
    # The verifier sleeps and writes no checkpoint: the corrupted file is its only one. tmops
    # stops an agent still running 1 s after its checkpoint appeared.
    site = _site(
        sites, tmp_path, fault="verifier:slow=60,verifier:no-checkpoint", max_retries=0,
        checkpoint_timeout=1,
    )  # fmt: skip
    assert site.cli("start", F).returncode == 0
    wait_until(lambda: site.live_agent(F, "verifier"), timeout=WAIT_S, what="the verifier")
    head = site.git("rev-parse", f"feature/{F}")
    folder = site.checkpoints(F)
    scratch = folder / ".corrupt.tmp"
    scratch.write_text(CORRUPTIONS[corruption])
    scratch.replace(folder / "007-verify-complete.md")  # appears whole, as an agent's would

    watched = site.cli("watch", F)
    assert watched.returncode == FAILED, watched.stdout + watched.stderr
    # rejected: set aside, kept for the person, never taken
    assert not (folder / "007-verify-complete.md").exists()
    [aside] = folder.glob(".007-verify-complete.md.rejected-*")
    assert aside.read_text() == CORRUPTIONS[corruption]
    # the previous valid state kept: the branch where it was, the earlier phases completed
    assert site.git("rev-parse", f"feature/{F}") == head
    assert site.run(F).branch_head == head
    status = _status(site)
    phases = {p["phase"]: p["status"] for p in status["phase_progress"]["phases"]}
    assert phases == {"orchestrator": "completed", "tester": "completed",
                      "implementer": "completed", "verifier": "failed"}  # fmt: skip
    # the operator alerted: events in the store, `tmops watch`, status
    problems = [e["data"] for e in site.events(F, "checkpoint.problem")]
    assert any(p["severity"] == "error" and p["phase"] == "verifier" for p in problems)
    assert "checkpoint.problem" in watched.stdout
    assert "rejected" in status["last_error"]
    assert "007-verify-complete.md" in status["last_error"]

    # and the workflow goes on once the verifier works again
    site.rewrite_config()
    resumed = site.cli("start", F, "--resume", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr


# -- 3. write permission removed on .tmops/<feature>/ -----------------------------------------

#: root ignores file modes; without these two capabilities the kernel checks them for root too
_NO_DAC = ("--bounding-set=-dac_override,-dac_read_search",
           "--inh-caps=-dac_override,-dac_read_search")  # fmt: skip


def _permission_runner() -> list[str]:
    """How to run ``tmops`` so that file modes bite: as is, or (as root) through setpriv
    without the capabilities that let root ignore them, for it and every process it starts."""
    if os.getuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux): as root, file modes bite only without DAC caps")
    return ["setpriv", *_NO_DAC, "--"]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def _set_modes(folder: Path, *, dirs: int, files: int) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(dirs if path.is_dir() else files)


def test_an_unwritable_feature_folder_fails_clearly_loses_nothing_and_resumes_after_the_fix(
    tmp_path: Path, sites: list[Site]
) -> None:
    site = _site(sites, tmp_path)
    site.runner = _permission_runner()
    feature_dir = site.root / ".tmops" / F
    before = _snapshot(feature_dir)
    head = site.git("rev-parse", f"feature/{F}")
    _set_modes(feature_dir, dirs=0o500, files=0o400)  # chmod -R a-w .tmops/slugify
    try:
        started = site.cli("start", F, "--wait")
        status = _status(site)
    finally:
        _set_modes(feature_dir, dirs=0o700, files=0o600)
    # a clear message: the path, the reason, the chmod that fixes it
    output = started.stdout + started.stderr
    assert started.returncode == FAILED, output
    assert "Traceback" not in output
    assert "permission denied" in output
    assert f"chmod u+w {feature_dir}/" in output
    assert status["status"] == "failed"
    assert f"cannot write in {feature_dir}/" in status["last_error"]
    assert f"tmops resume {F}" in status["next_action"]
    # nothing lost: every file as it was, the branch where it was
    assert _snapshot(feature_dir) == before
    assert site.git("rev-parse", f"feature/{F}") == head
    # resumable once the modes are back
    resumed = site.cli("start", F, "--resume", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _status(site)["status"] == "completed"


def test_a_feature_folder_without_write_permission_of_its_own_does_not_stop_the_run(
    tmp_path: Path, sites: list[Site]
) -> None:
    """``chmod 0500 .tmops/slugify`` alone: tmops creates nothing directly in that folder (the
    run's own folders stay writable), so the run completes and the mode is left as it was."""
    site = _site(sites, tmp_path)
    site.runner = _permission_runner()
    feature_dir = site.root / ".tmops" / F
    feature_dir.chmod(0o500)
    try:
        done = site.cli("start", F, "--wait")
    finally:
        mode = feature_dir.stat().st_mode & 0o777
        feature_dir.chmod(0o700)
    assert done.returncode == 0, done.stdout + done.stderr
    assert mode == 0o500


# -- 4. the branch rewritten by an outside process during a phase -----------------------------


def _freeze_an_agent(site: Site, feature: str, phase: str | None = None) -> int:
    """SIGSTOP a live agent of the feature (of the phase, if given): its run stays where it
    is, holding its slot, while the test looks; the caller sends SIGCONT."""
    while True:
        agent = wait_until(lambda: site.live_agent(feature, phase), timeout=WAIT_S, what="an agent")
        assert agent.pid is not None
        assert agent.start_time is not None
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile: take the next one
            os.kill(agent.pid, signal.SIGSTOP)
        if process_alive(agent.pid, agent.start_time):
            return agent.pid


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_a_branch_rewritten_during_a_phase_pauses_the_run_with_a_backup_and_can_go_on(
    tmp_path: Path, sites: list[Site]
) -> None:
    site = _site(sites, tmp_path, fault="tester:slow=3")
    assert site.cli("start", F).returncode == 0
    worktree = site.worktree(F)
    tester = _freeze_an_agent(site, F, "tester")  # held still while someone else works
    try:
        left = site.git("rev-parse", f"feature/{F}")
        assert left == site.git("rev-parse", f"refs/tmops/{F}/{RUN}/tester-start")
        assert not (site.checkpoints(F) / "003-tests-complete.md").exists()
        # someone amends the branch's last commit with plain git while the tester works
        (worktree / "OUTSIDE.txt").write_text("changed by someone else\n")
        site.git("-C", str(worktree), "add", "OUTSIDE.txt")
        site.git("-C", str(worktree), "commit", "-q", "--amend", "-m", "amended outside tmops")
        outside = site.git("rev-parse", f"feature/{F}")
    finally:
        os.kill(tester, signal.SIGCONT)

    watched = site.cli("watch", F)
    assert watched.returncode == PAUSED, watched.stdout + watched.stderr
    status = _status(site)
    assert (status["status"], status["pause_reason"]) == ("paused", "branch_moved")
    assert left in status["last_error"]
    assert "--accept-branch" in status["next_action"]
    # a backup ref of what was found, holding the outside commit; nothing rewritten
    refs = site.git("for-each-ref", "--format=%(refname)", f"refs/tmops/{F}/{RUN}/")
    [backup] = [ref for ref in refs.splitlines() if ref.rsplit("/", 1)[1].startswith("moved-")]
    found = site.git("rev-parse", backup)
    assert found in status["last_error"]
    assert found == site.git("rev-parse", f"feature/{F}")
    site.git("merge-base", "--is-ancestor", outside, found)
    # the worktree is clean for the person
    assert site.git("-C", str(worktree), "status", "--porcelain") == ""
    # resuming without saying what to do with the move is refused ...
    refused = site.cli("start", F, "--resume")
    assert refused.returncode == FAILED
    assert "--accept-branch" in refused.stdout + refused.stderr
    # ... accepting the new head goes on to completion, keeping the outside commit
    accepted = site.cli("start", F, "--resume", "--accept-branch", "--wait")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    subjects = branch_subjects(site, f"feature/{F}")
    assert "amended outside tmops" in site.git("log", "--format=%s", f"feature/{F}")
    assert_test_first(subjects)


# -- 5. more features than the limit: queued, with their place shown -------------------------

QUEUE = ["first-api", "second-api", "third-api"]  # started in this order


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_features_beyond_the_limit_are_queued_in_order_with_their_place_shown(
    tmp_path: Path, sites: list[Site]
) -> None:
    site = make_site(tmp_path, concurrent_limit=1, default_phases=SHORT_WORKFLOW)
    sites.append(site)
    for feature in QUEUE:
        site.init(feature)
    frozen = None
    try:
        for feature in QUEUE:
            started = site.cli("start", feature)
            assert started.returncode == 0, started.stderr
            if frozen is None:
                frozen = _freeze_an_agent(site, feature)
        statuses = {f: _status(site, f) for f in QUEUE}
        status_text = site.cli("status", QUEUE[2]).stdout
        listing = site.cli("list").stdout
        listed = json.loads(site.cli("list", "--json").stdout)["features"]
        [mcp_status, mcp_list] = site.mcp(
            ("tmops_get_status", {"feature": QUEUE[2]}), ("tmops_list_features", {})
        )
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
    # the limit holds: one runs, the others wait in FIFO order, their place shown everywhere
    places = {f: (s["status"], s["queue_position"]) for f, s in statuses.items()}
    assert places == {QUEUE[0]: ("running", None), QUEUE[1]: ("queued", 1),
                      QUEUE[2]: ("queued", 2)}  # fmt: skip
    assert "waiting for a free slot" in statuses[QUEUE[1]]["next_action"]
    assert "queue position: 2" in status_text
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "queued #1" in rows[QUEUE[1]]
    assert "queued #2" in rows[QUEUE[2]]
    assert "#" not in rows[QUEUE[0]]
    assert {r["feature"]: r["queue_position"] for r in listed} == {
        QUEUE[0]: None, QUEUE[1]: 1, QUEUE[2]: 2}  # fmt: skip
    assert mcp_status.structured_content is not None
    assert mcp_status.structured_content["queue_position"] == 2
    assert mcp_list.structured_content is not None
    assert [r["queue_position"] for r in mcp_list.structured_content["features"]] == [None, 1, 2]

    # then each runs in its turn, never two at once, and all complete
    for feature in QUEUE:
        watched = site.cli("watch", feature)
        assert watched.returncode == 0, watched.stdout + watched.stderr
    attempts = sorted((a for f in QUEUE for a in site.attempts(f)), key=lambda a: a.id)
    order = list(dict.fromkeys(a.feature for a in attempts))
    assert order == QUEUE
    runs = [[a for a in attempts if a.feature == f] for f in QUEUE]
    for before, after in itertools.pairwise(runs):
        assert (before[-1].finished_at or "") <= after[0].started_at
    assert all([a.phase for a in r] == SHORT_WORKFLOW for r in runs)
    assert all(_status(site, f)["queue_position"] is None for f in QUEUE)
