"""The scheduler with REAL agent processes: features side by side, the limit, FIFO, isolation.

Every feature runs the scripted agent through the claude-code provider in its own git worktree.
Before the runs, each feature's branch gets a commit of its own (a marker file), so the commits
the agents make on one branch can be told apart from those on another (the scripted agent does
the same work for every feature, and git would give identical commits the same id).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import (
    COMPLETIONS,
    FEAT_SUBJECT,
    PHASES,
    SHORT_WORKFLOW,
    TEST_SUBJECT,
    git,
    in_memory_service,
    jsonl_events,
    new_feature,
    open_store,
    scripted_config,
)
from tmops_core.service.demo_project import create_demo_project
from tmops_core.service.operations import Service
from tmops_core.store import AttemptRecord, Store
from tmops_core.workspace.features import InitResult

MARKER_SUBJECT = "chore: marker of "


@dataclass
class Project:
    service: Service
    root: Path
    inits: dict[str, InitResult]
    answers: dict[str, dict[str, Any]]
    store: Store
    jsonl: Path
    #: the features whose run was "running", sampled while the engine served the queue
    samples: list[set[str]]

    def attempts(self, feature: str) -> list[AttemptRecord]:
        return self.store.attempts(feature, self.inits[feature].run)

    def sessions(self, feature: str) -> list[tuple[float, float]]:
        """(start, end) in seconds of every agent session of the feature, from the jsonl sink."""
        run_id = self.answers[feature]["run_id"]
        events = [e for e in jsonl_events(self.jsonl) if e["correlation_id"] == run_id]
        starts = [e for e in events if e["event_type"] == "orchestration.session.started"]
        ends = [e for e in events if e["event_type"] == "orchestration.session.ended"]
        assert len(starts) == len(ends) > 0
        return [(_seconds(s), _seconds(e)) for s, e in zip(starts, ends, strict=True)]

    def span(self, feature: str) -> tuple[float, float]:
        sessions = self.sessions(feature)
        return sessions[0][0], sessions[-1][1]

    def close(self) -> None:
        self.store.close()
        self.service.close()


def _seconds(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def _serve_sampling(service: Service, root: Path, features: list[str]) -> list[set[str]]:
    """Serve the queue in a thread; meanwhile sample which features' runs are running."""
    served: list[bool] = []
    engine = threading.Thread(
        target=lambda: served.append(
            service.serve_engine(workspace=root, idle_exit_s=0.2, retry_backoff_s=(0.05,))
        )
    )
    engine.start()
    samples = []
    while engine.is_alive():
        states = {
            f: service.status(f, workspace=root, include_sessions=False, include_checkpoints=False)
            for f in features
        }
        samples.append({f for f, s in states.items() if s["status"] == "running"})
        time.sleep(0.05)
    engine.join()
    assert served == [True]
    return samples


def _project(base: Path, features: list[str], **settings: Any) -> tuple[Service, Path, dict]:
    root = create_demo_project(base / "p").path
    service = in_memory_service(
        scripted_config(base / "state", jsonl=base / "events.jsonl", **settings)
    )
    inits = {}
    for feature in features:
        init = new_feature(service, root, feature)
        (init.worktree / "MARKER.txt").write_text(f"{feature}\n")
        git(init.worktree, "add", "MARKER.txt")
        git(init.worktree, "commit", "-q", "-m", f"{MARKER_SUBJECT}{feature}")
        inits[feature] = init
    return service, root, inits


# -- two features, limit 2 ------------------------------------------------------------------------

PAIR = ["alpha-api", "bravo-api"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("pair")
    service, root, inits = _project(base, PAIR, concurrent_limit=2)
    answers = {f: service.start(f, workspace=root, spawn=False) for f in PAIR}
    samples = _serve_sampling(service, root, PAIR)
    jsonl = base / "events.jsonl"
    project = Project(service, root, inits, answers, open_store(root), jsonl, samples)
    yield project
    project.close()


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_two_features_with_limit_two_both_complete(pair: Project) -> None:
    for feature in PAIR:
        assert pair.service.status(feature, workspace=pair.root)["status"] == "completed"


def test_with_limit_two_both_runs_are_running_at_once(pair: Project) -> None:
    assert max(len(sample) for sample in pair.samples) == 2


def test_two_features_with_limit_two_run_at_the_same_time(pair: Project) -> None:
    (a0, a1), (b0, b1) = pair.span(PAIR[0]), pair.span(PAIR[1])
    overlap = min(a1, b1) - max(a0, b0)
    assert overlap > 0.5 * min(a1 - a0, b1 - b0)
    # the store's attempt rows agree (they are stamped to the second)
    first, second = pair.attempts(PAIR[0]), pair.attempts(PAIR[1])
    assert second[0].started_at < (first[-1].finished_at or "")
    assert first[0].started_at < (second[-1].finished_at or "")


def test_each_branch_holds_only_its_own_commits(pair: Project) -> None:
    for feature in PAIR:
        branch = pair.inits[feature].branch
        subjects = git(pair.root, "log", "--format=%s", f"main..{branch}").splitlines()
        assert [s.split(":")[0] for s in subjects] == ["feat(slug)", "test(slug)", "chore"]
        assert subjects[2] == f"{MARKER_SUBJECT}{feature}"
        assert subjects[0].startswith(FEAT_SUBJECT)
        assert subjects[1].startswith(TEST_SUBJECT)
        for sha in git(pair.root, "log", "--format=%H", f"main..{branch}").split():
            contains = git(pair.root, "branch", "--format=%(refname:short)", "--contains", sha)
            assert contains.split() == [branch], (feature, sha)
        assert (pair.inits[feature].worktree / "MARKER.txt").read_text() == f"{feature}\n"


def test_each_worktree_stays_on_its_branch_and_clean(pair: Project) -> None:
    for feature in PAIR:
        init = pair.inits[feature]
        assert git(init.worktree, "rev-parse", "--abbrev-ref", "HEAD").strip() == init.branch
        assert git(init.worktree, "status", "--porcelain") == ""
    # the project's own checkout is untouched
    assert git(pair.root, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(pair.root, "log", "--format=%s", "main").splitlines() == [
        "chore: demo project for tmops"
    ]
    assert git(pair.root, "status", "--porcelain") == ""
    assert not (pair.root / "slug.py").exists()


def test_each_runs_checkpoints_name_its_own_feature(pair: Project) -> None:
    for feature in PAIR:
        folder = pair.inits[feature].checkpoint_dir
        names = sorted(p.name for p in folder.glob("*.md"))
        assert set(COMPLETIONS.values()) <= set(names)
        for name in names:
            text = (folder / name).read_text()
            assert f"**Feature:** {feature}\n" in text, (feature, name)
            assert "**Run:** initial\n" in text, (feature, name)


def test_each_runs_logs_hold_only_its_own_sessions(pair: Project) -> None:
    sessions = {f: {a.session_id for a in pair.attempts(f)} for f in PAIR}
    assert not sessions[PAIR[0]] & sessions[PAIR[1]]
    for feature in PAIR:
        init = pair.inits[feature]
        logs = init.run_dir / "logs"
        assert {p.name for p in logs.glob("*.log")} >= {f"{phase}.log" for phase in PHASES}
        for phase in PHASES:
            lines = (logs / f"{phase}.log").read_text().splitlines()
            seen = {line for line in lines if '"subtype": "init"' in line}
            assert len(seen) == 1, (feature, phase)
            text = "\n".join(lines)
            assert f'"cwd": "{init.worktree}"' in text, (feature, phase)
            other = pair.inits[PAIR[1] if feature == PAIR[0] else PAIR[0]]
            assert str(other.worktree) not in text, (feature, phase)
            found = {sid for sid in sessions[PAIR[0]] | sessions[PAIR[1]] if sid and sid in text}
            assert found <= sessions[feature], (feature, phase)


def test_store_attempts_belong_to_their_feature(pair: Project) -> None:
    rows = {f: pair.attempts(f) for f in PAIR}
    for feature in PAIR:
        assert [a.phase for a in rows[feature]] == list(PHASES)
        assert {a.feature for a in rows[feature]} == {feature}
        assert {a.provider for a in rows[feature]} == {"claude-code"}
    pids = [{a.pid for a in rows[f]} for f in PAIR]
    assert not pids[0] & pids[1]
    for feature in PAIR:
        events = pair.service.events_since(feature, workspace=pair.root)
        pids_seen = {
            e["data"]["pid"] for e in events if e["event_type"] == "orchestration.session.started"
        }
        assert pids_seen == {a.pid for a in rows[feature]}


def test_each_features_phase_start_refs_point_into_its_own_branch(pair: Project) -> None:
    for feature in PAIR:
        init = pair.inits[feature]
        refs = git(
            pair.root, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/tmops/{feature}"
        ).splitlines()
        assert sorted(r.split()[0].rsplit("/", 1)[1] for r in refs) == sorted(
            f"{phase}-start" for phase in PHASES
        )
        for ref in refs:
            sha = ref.split()[1]
            on = git(pair.root, "branch", "--format=%(refname:short)", "--contains", sha).split()
            assert init.branch in on, (feature, ref)
            assert all(b in {init.branch, "main"} for b in on), (feature, ref)


# -- three features, limit 1 ----------------------------------------------------------------------

TRIO = ["feat-a", "feat-b", "feat-c"]  # initialised in this order
START_ORDER = ["feat-c", "feat-a", "feat-b"]  # started in this order


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """Three features, limit 1, two phases each; started in a different order than they were
    initialised, all within one second (the store stamps queue times to the second)."""
    base = tmp_path_factory.mktemp("trio")
    service, root, inits = _project(base, TRIO, concurrent_limit=1, default_phases=SHORT_WORKFLOW)
    fraction = time.time() % 1
    if fraction > 0.2:
        time.sleep(1.0 - fraction)
    answers = {f: service.start(f, workspace=root, spawn=False) for f in START_ORDER}
    samples = _serve_sampling(service, root, TRIO)
    jsonl = base / "events.jsonl"
    project = Project(service, root, inits, answers, open_store(root), jsonl, samples)
    yield project
    project.close()


def _run_order(trio: Project) -> list[str]:
    first_attempt = {f: trio.attempts(f)[0].id for f in TRIO}
    return sorted(TRIO, key=first_attempt.__getitem__)


@pytest.mark.slow  # several whole runs: the main run stays under 10 minutes
def test_three_features_with_limit_one_all_complete(trio: Project) -> None:
    for feature in TRIO:
        status = trio.service.status(feature, workspace=trio.root)
        assert status["status"] == "completed", feature
        assert [p["status"] for p in status["phase_progress"]["phases"]] == ["completed"] * 2


def test_with_limit_one_at_most_one_run_is_running(trio: Project) -> None:
    assert max(len(sample) for sample in trio.samples) == 1
    assert {f for sample in trio.samples for f in sample} == set(TRIO)


def test_with_limit_one_the_runs_never_overlap(trio: Project) -> None:
    order = _run_order(trio)
    ids = [[a.id for a in trio.attempts(f)] for f in order]
    flat = [i for block in ids for i in block]
    assert flat == sorted(flat)  # each run's attempts form one block
    spans = [trio.span(f) for f in order]
    for (_, previous_end), (next_start, _) in itertools.pairwise(spans):
        assert previous_end < next_start
    rows = [trio.attempts(f) for f in order]
    for previous, following in itertools.pairwise(rows):
        assert (previous[-1].finished_at or "") <= following[0].started_at


def test_with_limit_one_the_runs_follow_the_start_order(trio: Project) -> None:
    assert _run_order(trio) == START_ORDER
