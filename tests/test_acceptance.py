"""The seed spec's acceptance scenarios (``tests/features/*.feature``), executable.

Each step drives tmops from outside, for real: the ``tmops mcp`` server over stdio with the MCP
SDK's client, and the ``tmops`` command in processes of their own, on a real git project; the
agents are the bundled scripted agent (no model), run by the real claude-code provider. The
store is read only to check what happened. The helpers are in ``acceptance_support.py``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from mcp.types import CallToolResult
from pytest_bdd import given, parsers, scenarios, then, when

from tests.acceptance_support import RUN, Site, assert_test_first, branch_subjects, make_site
from tests.engine_support import COMPLETIONS, PHASES, jsonl_events
from tests.mcp_support import text_of
from tests.takeover_support import assert_no_overlap
from tmops_plugins.scripted_roles import CODE_FILE, CODE_SOURCE, TEST_FILE, TEST_SOURCE

scenarios(
    "features/initialize_feature.feature",
    "features/orchestration.feature",
    "features/concurrent_isolation.feature",
    "features/manual_fallback.feature",
)


@dataclass
class World:
    """What the steps of one scenario share."""

    tmp_path: Path
    site: Site | None = None
    answer: CallToolResult | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)

    @property
    def here(self) -> Site:
        assert self.site is not None, "no project yet"
        return self.site

    def make(self, **settings: Any) -> Site:
        self.site = make_site(self.tmp_path, jsonl=self.tmp_path / "events.jsonl", **settings)
        return self.site


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    if made.site is not None:
        made.site.close()


def _status(site: Site, feature: str) -> dict[str, Any]:
    done = site.cli("status", feature, "--json")
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


# -- Initialize feature via MCP ---------------------------------------------------------------


@given("an MCP client connected to tmops in a git project")
def mcp_client(world: World) -> None:
    world.make()


@when(parsers.parse('the client calls tmops_init_feature with the feature name "{feature}"'))
def init_via_mcp(world: World, feature: str) -> None:
    [world.answer] = world.here.mcp(("tmops_init_feature", {"feature": feature}))
    assert world.answer.is_error is False, text_of(world.answer)


@then(parsers.parse('the branch "{branch}" exists in the project'))
def branch_exists(world: World, branch: str) -> None:
    assert world.here.git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")


@then(parsers.parse('the worktree of "{feature}" is checked out on that branch'))
def worktree_on_branch(world: World, feature: str) -> None:
    worktree = world.here.worktree(feature)
    listed = world.here.git("worktree", "list", "--porcelain").splitlines()
    assert f"worktree {worktree}" in listed
    head = world.here.git("-C", str(worktree), "rev-parse", "--abbrev-ref", "HEAD")
    assert head == f"feature/{feature}"


@then(parsers.parse('the run folder "{folder}" holds TASK_SPEC.md and checkpoints/'))
def run_folder(world: World, folder: str) -> None:
    run_dir = world.here.root / folder
    assert (run_dir / "TASK_SPEC.md").is_file()
    assert (run_dir / "TASK_SPEC.md").read_text().strip()
    assert (run_dir / "checkpoints").is_dir()
    assert list((run_dir / "checkpoints").iterdir()) == []


@then("the answer names the branch, the worktree, the task spec and the checkpoint folder")
def answer_names_them(world: World) -> None:
    assert world.answer is not None
    data = world.answer.structured_content
    assert data is not None
    feature = data["feature"]
    assert data["branch"] == f"feature/{feature}"
    assert data["run"] == RUN
    assert data["created"] is True
    assert Path(data["worktree"]) == world.here.worktree(feature)
    assert Path(data["task_spec"]) == world.here.run_dir(feature) / "TASK_SPEC.md"
    assert Path(data["checkpoint_dir"]) == world.here.checkpoints(feature)
    assert feature in text_of(world.answer)


@then("the answer says what to do next")
def answer_next_steps(world: World) -> None:
    assert world.answer is not None
    data = world.answer.structured_content
    assert data is not None
    steps = " ".join(data["next_steps"])
    assert "TASK_SPEC.md" in steps
    assert "tmops_start_orchestration" in steps or "tmops start" in steps


@then("the feature's initialization is recorded as an event")
def init_event(world: World) -> None:
    assert world.answer is not None
    feature = (world.answer.structured_content or {})["feature"]
    events = jsonl_events(world.tmp_path / "events.jsonl")
    kinds = [(e["event_type"], e["feature"]) for e in events]
    assert ("orchestration.feature.initialized", feature) in kinds


# -- Automated workflow orchestration ----------------------------------------------------------


@given(parsers.parse('the feature "{feature}" has been initialized with a written TASK_SPEC.md'))
def initialized(world: World, feature: str) -> None:
    world.make().init(feature)


@when(parsers.parse('an MCP client calls tmops_start_orchestration for "{feature}"'))
def start_via_mcp(world: World, feature: str) -> None:
    [world.answer] = world.here.mcp(("tmops_start_orchestration", {"feature": feature}))
    assert world.answer.is_error is False, text_of(world.answer)


@when("follows it with tmops_get_status until the run ends")
def follow_via_mcp(world: World) -> None:
    assert world.answer is not None
    feature = (world.answer.structured_content or {})["feature"]
    world.seen = world.here.mcp_follow(feature)


@then(parsers.parse('tmops_get_status says "{feature}" is completed'))
def mcp_says_completed(world: World, feature: str) -> None:
    final = world.seen[-1]
    assert final["feature"] == feature
    assert final["status"] == "completed", final["last_error"]
    assert final["phase_progress"]["completed"] == final["phase_progress"]["total"] == 4
    assert world.answer is not None
    assert final["run_id"] == (world.answer.structured_content or {})["run_id"]
    assert {s["status"] for s in world.seen[:-1]} <= {"queued", "running"}


@then("the orchestrator, tester, implementer and verifier ran in that order, one at a time")
def phases_in_order(world: World) -> None:
    feature = world.seen[-1]["feature"]
    attempts = world.here.attempts(feature)
    assert [a.phase for a in attempts] == list(PHASES)
    assert_no_overlap(attempts)
    moves = [
        (e["data"]["from"], e["data"]["to"]) for e in world.here.events(feature, "phase.transition")
    ]
    assert moves == [*zip(PHASES, [*PHASES[1:], None], strict=True)]  # None: the run's end


@then("each phase's completion checkpoint was detected and accepted")
def checkpoints_accepted(world: World) -> None:
    feature = world.seen[-1]["feature"]
    detected = [e["data"]["checkpoint"] for e in world.here.events(feature, "checkpoint.detected")]
    assert detected == [COMPLETIONS[phase] for phase in PHASES]
    assert [a.state for a in world.here.attempts(feature)] == ["completed"] * 4
    for name in COMPLETIONS.values():
        assert (world.here.checkpoints(feature) / name).is_file()


@then(parsers.parse('the tests were committed on "{branch}" before the code'))
def code_after_tests(world: World, branch: str) -> None:
    assert_test_first(branch_subjects(world.here, branch))


@then("SUMMARY.md and metrics.json were written for the run")
def summary_written(world: World) -> None:
    feature = world.seen[-1]["feature"]
    run_dir = world.here.run_dir(feature)
    assert feature in (run_dir / "checkpoints" / "SUMMARY.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics


# -- Concurrent feature isolation --------------------------------------------------------------


@given(parsers.parse('the features "{first}" and "{second}" are initialized with their task specs'))
def two_features(world: World, first: str, second: str) -> None:
    site = world.make()
    for feature in (first, second):
        site.init(feature)
        worktree = site.worktree(feature)
        (worktree / "MARKER.txt").write_text(f"{feature}\n")  # tells the branches apart
        site.git("-C", str(worktree), "add", "MARKER.txt")
        site.git("-C", str(worktree), "commit", "-q", "-m", f"chore: marker of {feature}")
    world.results["features"] = [first, second]


@given(parsers.parse("the engine may run {limit:d} features at once"))
def limit(world: World, limit: int) -> None:
    world.here.rewrite_config(concurrent_limit=limit, jsonl=world.tmp_path / "events.jsonl")


@when('both features are started with "tmops start"')
def start_both(world: World) -> None:
    features = world.results["features"]
    for feature in features:
        started = world.here.cli("start", feature)
        assert started.returncode == 0, started.stderr
    world.results["watched"] = {f: world.here.cli("watch", f) for f in features}


@then("both runs complete")
def both_complete(world: World) -> None:
    for feature, watched in world.results["watched"].items():
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert world.here.run(feature).status == "completed"


SESSION_EVENTS = "orchestration.session."


@then("both runs were running at the same time")
def overlapped(world: World) -> None:
    spans = []
    for feature in world.results["features"]:
        run_id = world.here.run(feature).run_id
        mine = [
            e
            for e in jsonl_events(world.tmp_path / "events.jsonl")
            if e["correlation_id"] == run_id and e["event_type"].startswith(SESSION_EVENTS)
        ]
        stamps = [datetime.fromisoformat(e["timestamp"]).timestamp() for e in mine]
        spans.append((min(stamps), max(stamps)))
    (a0, a1), (b0, b1) = spans
    assert max(a0, b0) < min(a1, b1), f"the runs did not overlap: {spans}"


@then("each feature's branch holds only its own commits and files")
def own_commits(world: World) -> None:
    first, second = world.results["features"]
    for feature, other in ((first, second), (second, first)):
        branch = f"feature/{feature}"
        subjects = branch_subjects(world.here, branch)
        assert subjects[0] == f"chore: marker of {feature}"
        assert [s.split(":")[0] for s in subjects] == ["chore", "test(slug)", "feat(slug)"]
        for sha in world.here.git("log", "--format=%H", f"main..{branch}").split():
            holders = world.here.git("branch", "--format=%(refname:short)", "--contains", sha)
            assert holders.split() == [branch], (feature, sha)
        marker = world.here.git("show", f"{branch}:MARKER.txt")
        assert marker == feature, f"{other}'s marker on {branch}"
        assert (
            world.here.git("-C", str(world.here.worktree(feature)), "status", "--porcelain") == ""
        )


@then("each feature's run folder and logs name only its own feature and worktree")
def own_run_folder(world: World) -> None:
    first, second = world.results["features"]
    for feature, other in ((first, second), (second, first)):
        run_dir = world.here.run_dir(feature)
        for name in COMPLETIONS.values():
            assert f"**Feature:** {feature}\n" in (run_dir / "checkpoints" / name).read_text()
        for path in run_dir.rglob("*"):
            if path.is_file():
                text = path.read_text(errors="replace")
                assert str(world.here.worktree(other)) not in text, path
                assert f"**Feature:** {other}" not in text, path
        logs = (run_dir / "logs" / "tester.log").read_text()
        assert str(world.here.worktree(feature)) in logs


# -- Manual fallback at every phase ------------------------------------------------------------

#: what a person writes as each phase's completion checkpoint (the body after the header)
HAND_CHECKPOINTS = {
    "orchestrator": ("Tester", """\
## Action Required
Test `slugify(text: str) -> str` from `slug.py` in `tests/test_slug.py`, one test per
acceptance criterion of TASK_SPEC.md; every test must fail while `slug.py` does not exist.
- test_words_are_lowercased_and_joined_by_one_dash
- test_punctuation_is_dropped
- test_empty_string_gives_empty_string
"""),
    "tester": ("Orchestrator", """\
## Work Completed
- tests/test_slug.py: one test per acceptance criterion, written by hand
## Metrics
- Tests written: 6
- Passing: 0/6
## Git Commit
{commit}
"""),
    "implementer": ("Orchestrator", """\
## Work Completed
- slug.py: slugify written by hand
## Metrics
- Passing: 6/6
## Git Commit
{commit}
"""),
    "verifier": ("Orchestrator", """\
## Work Completed
- Reviewed by hand: the tests came first and every one passes
## Quality Score
Quality score: 8/10
Feature ready for merge: YES
"""),
}  # fmt: skip
#: what a person commits in each phase: (file, source, commit subject)
HAND_WORK = {
    "tester": (TEST_FILE, TEST_SOURCE, "test(slug): slugify tests, written by hand"),
    "implementer": (CODE_FILE, CODE_SOURCE, "feat(slug): slugify, written by hand"),
}


@given(parsers.parse("the agent of the {phase} phase fails every time"))
def failing_agent(world: World, phase: str) -> None:
    world.here.rewrite_config(fault=f"{phase}:crash:always", max_retries=0)
    world.results["phase"] = phase


@when(parsers.parse('the feature is started with "{command}"'))
@when(parsers.parse('resumes with "{command}"'))
def run_command(world: World, command: str) -> None:
    argv = shlex.split(command)
    assert argv[0] == "tmops"
    world.results["last"] = world.here.cli(*argv[1:])


@then(
    parsers.parse('the run stops failed at the {phase} phase and its status offers "tmops prompt"')
)
def failed_at(world: World, phase: str) -> None:
    assert world.results["last"].returncode == 1, world.results["last"].stdout
    status = _status(world.here, "slugify")
    assert (status["status"], status["current_phase"]) == ("failed", phase)
    done = [p["phase"] for p in status["phase_progress"]["phases"] if p["status"] == "completed"]
    assert done == list(PHASES[: PHASES.index(phase)])
    assert f"tmops prompt slugify {phase}" in status["next_action"]


@when(
    parsers.parse('a person reads "tmops prompt slugify {phase}" and does the {phase} work by hand')
)
def by_hand(world: World, phase: str) -> None:
    done = world.here.cli("prompt", "slugify", phase, "--json")
    assert done.returncode == 0, done.stderr
    world.prompt = json.loads(done.stdout)
    assert world.prompt["phase"] == phase
    assert str(world.here.run_dir("slugify") / "TASK_SPEC.md") in world.prompt["prompt"]
    world.results["commit"] = "none"
    if phase in HAND_WORK:
        name, source, subject = HAND_WORK[phase]
        worktree = Path(world.prompt["worktree"])
        (worktree / name).write_text(source)
        world.here.git("-C", str(worktree), "add", name)
        world.here.git("-C", str(worktree), "commit", "-q", "-m", subject)
        world.results["commit"] = world.here.git("-C", str(worktree), "rev-parse", "HEAD")


@when(parsers.parse("writes the {phase} phase's completion checkpoint named by the prompt"))
def hand_checkpoint(world: World, phase: str) -> None:
    path = Path(world.prompt["checkpoint"])
    assert path.parent == world.here.checkpoints("slugify")
    to, body = HAND_CHECKPOINTS[phase]
    path.write_text(
        f"# Checkpoint: {path.name}\n**From:** {phase.capitalize()}\n**To:** {to}\n"
        f"**Feature:** slugify\n**Run:** {RUN}\n**Status:** complete\n"
        + body.format(commit=world.results["commit"])
    )


@then(
    parsers.parse(
        "the hand-written checkpoint is taken for the {phase} phase without running its agent"
    )
)
def taken_by_hand(world: World, phase: str) -> None:
    adopted = [e["data"] for e in world.here.events("slugify", "phase.adopted")]
    # the phases before it were accepted by this run already; this one is taken from the file
    taken = [(e["phase"], e.get("checkpoint")) for e in adopted if not e.get("accepted")]
    assert taken == [(phase, COMPLETIONS[phase])]
    started = [e["data"]["phase"] for e in world.here.events("slugify", "session.started")]
    assert started.count(phase) == 1, "the phase's agent ran again after the hand-written work"
    attempts = world.here.attempts("slugify", phase)
    assert [a.state for a in attempts] == ["failed", "completed"]
    assert attempts[-1].outcome == "adopted"
    assert (world.here.checkpoints("slugify") / Path(world.prompt["checkpoint"]).name).is_file()


@then("the run completes with every phase completed")
def completes(world: World) -> None:
    last = world.results["last"]
    assert last.returncode == 0, last.stdout + last.stderr
    status = _status(world.here, "slugify")
    assert status["status"] == "completed", status["last_error"]
    assert [p["status"] for p in status["phase_progress"]["phases"]] == ["completed"] * 4
