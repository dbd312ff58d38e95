"""The REAL Claude Code CLI against the fake Messages API of ``tests/fake_anthropic.py``.

Only the model is faked: the CLI runs its whole agent loop, so its tools really write files,
run the tests and commit in a git worktree in ``tmp_path``. The binary is driven directly with
the environment and argv of ``reference/claude-code-cli.md``, not through tmops: these tests
prove the fake and the CLI facts the claude-code provider relies on. The fake's own tests, which
need no binary, are in ``test_claude_real_fake.py``; the shared helpers in
``claude_real_support.py``.

The binary is ``TMOPS_CLAUDE_BIN`` or the one bundled in the ``claude-agent-sdk`` wheel; without
one the tests are skipped, except under ``TMOPS_REQUIRE_CLAUDE=1`` (CI), where they fail.
Recorded stdout of some runs lives in ``tests/data/claude/`` for the provider's tests;
``TMOPS_RECORD_CLAUDE_FIXTURES=1`` rewrites it from a live run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .claude_real_support import (
    FEATURE,
    FIXTURE_ROOT,
    FIXTURES,
    RUN,
    Project,
    flatten,
    free_port,
    header,
    make_project,
    phase_prompt,
    record,
    run_claude,
    tool_names,
)
from .conftest import git
from .fake_anthropic import (
    OTHER,
    CutStream,
    FakeAnthropic,
    HttpError,
    Script,
    bash,
    say,
    write,
)
from .fake_tdd_script import CODE_SOURCE, TEST_FILE, TEST_SOURCE, tdd_script

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


# -- a whole session ----------------------------------------------------------------------------


def test_tester_session_writes_commits_and_checkpoints(
    claude_bin: Path, project: Project, tmp_path: Path
) -> None:
    prompt, instructions = phase_prompt("tester", project)
    with FakeAnthropic(tdd_script()) as fake:
        run = run_claude(claude_bin, project, fake.url, prompt, instructions)
        record("tester-success.jsonl", run, tmp_path, fake.url)
        requests = fake.messages_requests
        by_role = fake.requests_by_role

    assert run.returncode == 0, run.stderr
    # on disk: the test file, its commit on the feature branch, the checkpoint
    assert (project.worktree / TEST_FILE).read_text() == TEST_SOURCE
    subject = git(project.worktree, "log", "-1", "--format=%s", f"feature/{FEATURE}")
    assert subject.startswith("test(slug): ")
    committed = git(project.worktree, "show", "--name-only", "--format=", "HEAD").split()
    assert committed == [TEST_FILE]
    report = project.checkpoints / "003-tests-complete.md"
    fields = header(report)
    assert fields | {"Timestamp": "-"} == {
        "From": "Tester",
        "To": "Orchestrator",
        "Timestamp": "-",
        "Feature": FEATURE,
        "Run": RUN,
        "Status": "complete",
    }
    head = git(project.worktree, "rev-parse", "--short", "HEAD").strip()
    assert report.read_text().endswith(f"## Git Commit\n{head}\n")
    assert sorted(p.name for p in project.checkpoints.iterdir()) == ["003-tests-complete.md"]

    # stdout: system/init, one assistant line per block, tool results, the result last
    init, result = run.init, run.result
    assert init["session_id"]
    assert init["cwd"] == str(project.worktree)
    assert init["claude_code_version"]
    assert tool_names(run) == ["Write", "Bash", "Bash", "Write"]
    results = run.blocks("user", "tool_result")
    assert len(results) == 4
    assert results[1]["is_error"] is True  # the new tests fail: no module named slug
    assert "slug" in str(results[1]["content"])
    assert results[2]["is_error"] is False
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["api_error_status"] is None
    assert result["session_id"] == init["session_id"]
    assert result["num_turns"] == len(requests) == 5
    assert result["total_cost_usd"] > 0
    assert result["result"] == "Tests committed; all 3 fail. Checkpoint 003 written."
    assert result["permission_denials"] == []

    # what the fake saw: one streaming POST per model turn, all read as the tester's
    assert by_role == {"tester": 5}
    assert [r.prompt.turn for r in requests if r.prompt] == [0, 1, 2, 3, 4]
    assert all(r.path == "/v1/messages?beta=true" and r.body["stream"] for r in requests)
    assert {r.headers.get("x-api-key") for r in requests} == {"dummy"}
    # the transcript: in a folder named for the cwd, every "/" and "." turned into "-"
    folder = flatten(str(project.worktree))
    transcript = project.home / ".claude" / "projects" / folder / f"{init['session_id']}.jsonl"
    assert transcript.is_file()


def test_the_tdd_script_runs_all_four_roles(claude_bin: Path, project: Project) -> None:
    with FakeAnthropic(tdd_script()) as fake:
        runs = {}
        for role in ("orchestrator", "tester", "implementer", "verifier"):
            prompt, instructions = phase_prompt(role, project)
            runs[role] = run_claude(claude_bin, project, fake.url, prompt, instructions)
            assert runs[role].returncode == 0, (role, runs[role].stderr)
            assert runs[role].result["is_error"] is False
        by_role = fake.requests_by_role

    assert by_role == {"orchestrator": 2, "tester": 5, "implementer": 5, "verifier": 4}
    assert len({run.result["session_id"] for run in runs.values()}) == 4  # a fresh session each
    log = git(project.worktree, "log", "--format=%s", "main..HEAD").splitlines()
    assert [subject.split(":")[0] for subject in log] == ["feat(slug)", "test(slug)"]
    assert (project.worktree / "slug.py").read_text() == CODE_SOURCE
    # red after the tester, green after the implementer, as the gates will check
    assert runs["tester"].blocks("user", "tool_result")[1]["is_error"] is True
    assert runs["implementer"].blocks("user", "tool_result")[1]["is_error"] is False
    assert "3 passed" in str(runs["implementer"].blocks("user", "tool_result")[1]["content"])
    assert tool_names(runs["verifier"]) == ["Bash", "Bash", "Write"]

    names = sorted(p.name for p in project.checkpoints.iterdir())
    assert names == [
        "001-discovery-trigger.md",
        "003-tests-complete.md",
        "005-impl-complete.md",
        "007-verify-complete.md",
    ]
    senders = {name: header(project.checkpoints / name)["From"] for name in names}
    assert list(senders.values()) == ["Orchestrator", "Tester", "Implementer", "Verifier"]
    assert header(project.checkpoints / names[0])["To"] == "Tester"
    assert {header(project.checkpoints / name)["Feature"] for name in names} == {FEATURE}
    verdict = (project.checkpoints / "007-verify-complete.md").read_text()
    assert verdict.endswith("## Quality Score\nQuality score: 8/10\nFeature ready for merge: YES\n")
    code_commit, test_commit = git(project.worktree, "log", "--format=%h", "main..HEAD").split()
    assert f"test {test_commit} before code {code_commit}" in verdict


def test_parallel_sessions_share_one_fake(claude_bin: Path, tmp_path: Path) -> None:
    projects = [make_project(tmp_path / name) for name in ("one", "two", "three")]
    with FakeAnthropic(tdd_script()) as fake, ThreadPoolExecutor(len(projects)) as pool:
        futures = [
            pool.submit(run_claude, claude_bin, p, fake.url, *phase_prompt("tester", p))
            for p in projects
        ]
        runs = [future.result() for future in futures]
        by_role = fake.requests_by_role

    assert [run.returncode for run in runs] == [0, 0, 0]
    assert by_role == {"tester": 15}
    assert len({run.result["session_id"] for run in runs}) == 3
    for p in projects:  # each session worked in its own worktree only
        assert (p.worktree / TEST_FILE).read_text() == TEST_SOURCE
        assert git(p.worktree, "log", "--format=%s", "main..HEAD").startswith("test(slug): ")
        assert header(p.checkpoints / "003-tests-complete.md")["Status"] == "complete"


# -- sessions -----------------------------------------------------------------------------------


def test_resume_continues_the_same_session(claude_bin: Path, project: Project) -> None:
    script = Script(
        steps={
            "tester": [[write(project.worktree / "first.txt", "one\n")]],
            # the resumed prompt names no role: the fake answers it from OTHER's steps
            OTHER: [[write(project.worktree / "second.txt", "two\n")], [say("resumed")]],
        }
    )
    prompt, instructions = phase_prompt("tester", project)
    with FakeAnthropic(script) as fake:
        first = run_claude(claude_bin, project, fake.url, prompt, instructions)
        session = first.result["session_id"]
        second = run_claude(
            claude_bin, project, fake.url, "Go on.", instructions, "--resume", session
        )
        last_request = fake.messages_requests[-1]

    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    assert second.init["session_id"] == second.result["session_id"] == session
    assert second.result["result"] == "resumed"
    assert (project.worktree / "second.txt").read_text() == "two\n"
    # the resumed request carries the first conversation; the cost adds up over both runs
    assert last_request.prompt is not None
    assert last_request.prompt.role == OTHER
    assert last_request.prompt.feature == FEATURE  # taken from the earlier tmops prompt
    roles = [m["role"] for m in last_request.body["messages"] if m["role"] != "system"]
    assert roles == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert second.result["total_cost_usd"] > first.result["total_cost_usd"]


def test_resume_of_an_unknown_session_fails_before_any_request(
    claude_bin: Path, project: Project
) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    with FakeAnthropic() as fake:
        run = run_claude(claude_bin, project, fake.url, "Go on.", "", "--resume", unknown)
        requests = fake.messages_requests

    assert run.returncode == 1
    assert f"No conversation found with session ID: {unknown}" in run.stderr
    assert requests == []
    # 2.1.329 also prints a result line; the reference says "no JSON": rely on neither
    assert len(run.lines) <= 1
    if run.lines:
        assert run.result["is_error"] is True
        assert run.result["subtype"] == "error_during_execution"


def test_max_turns_stops_with_error_max_turns(
    claude_bin: Path, project: Project, tmp_path: Path
) -> None:
    script = Script(steps={"tester": [[bash("git status --short")], [bash("git log --oneline")]]})
    prompt, instructions = phase_prompt("tester", project)
    with FakeAnthropic(script) as fake:
        run = run_claude(claude_bin, project, fake.url, prompt, instructions, "--max-turns", "1")
        record("max-turns.jsonl", run, tmp_path, fake.url)
        by_role = fake.requests_by_role

    assert run.returncode == 1
    assert run.result["subtype"] == "error_max_turns"
    assert run.result["is_error"] is True
    assert run.result["errors"]
    assert "result" not in run.result
    assert tool_names(run) == ["Bash"]  # the first step ran, the second was never asked for
    assert by_role == {"tester": 1}


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "requests"),
    [
        (401, 1),
        (500, 1),
        (529, 1),
        (400, None),  # sent again, beta features dropped, whatever CLAUDE_CODE_MAX_RETRIES says
    ],
)
def test_an_api_error_on_every_request_fails_with_its_status(
    claude_bin: Path, project: Project, tmp_path: Path, status: int, requests: int | None
) -> None:
    prompt, instructions = phase_prompt("tester", project)
    with FakeAnthropic(Script(faults=[HttpError(status, times=None)])) as fake:
        run = run_claude(claude_bin, project, fake.url, prompt, instructions)
        if status == 401:
            record("api-401.jsonl", run, tmp_path, fake.url)
        count = fake.requests_by_role["tester"]

    assert run.returncode == 1
    assert run.result["is_error"] is True
    assert run.result["subtype"] == "success"  # (sic): check is_error, never the subtype
    assert run.result["api_error_status"] == status
    assert run.result["session_id"] == run.init["session_id"]
    if requests is not None:
        assert count == requests  # CLAUDE_CODE_MAX_RETRIES=0: no retry
    if status == 401:
        assert run.result["result"] == "Invalid API key · Fix external API key"
    else:
        assert str(status) in run.result["result"]


def test_overloaded_once_is_retried_then_succeeds(claude_bin: Path, project: Project) -> None:
    prompt, instructions = phase_prompt("tester", project)
    with FakeAnthropic(Script(faults=[HttpError(529, times=1)])) as fake:
        run = run_claude(
            claude_bin, project, fake.url, prompt, instructions, CLAUDE_CODE_MAX_RETRIES="1"
        )
        by_role = fake.requests_by_role

    assert run.returncode == 0, run.stderr
    assert run.result["is_error"] is False
    assert by_role == {"tester": 2}
    retries = [line for line in run.lines if line.get("subtype") == "api_retry"]
    assert len(retries) == 1
    assert retries[0]["type"] == "system"
    assert retries[0]["error_status"] == 529


def test_connection_refused_fails_without_a_status(
    claude_bin: Path, project: Project, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    prompt, instructions = phase_prompt("tester", project)
    run = run_claude(claude_bin, project, url, prompt, instructions)
    record("connection-refused.jsonl", run, tmp_path, url)

    assert run.returncode == 1
    assert run.result["is_error"] is True
    assert run.result["api_error_status"] is None
    assert re.search(r"ConnectionRefused|ECONNREFUSED|Unable to connect", run.result["result"])


def test_a_cut_stream_is_answered_by_a_non_streaming_request(
    claude_bin: Path, project: Project
) -> None:
    script = Script(
        steps={"tester": [[write(project.worktree / "note.txt", "hi\n")]]},
        faults=[CutStream(times=1)],
    )
    prompt, instructions = phase_prompt("tester", project)
    with FakeAnthropic(script) as fake:
        run = run_claude(claude_bin, project, fake.url, prompt, instructions)
        streams = [r.body["stream"] for r in fake.messages_requests]

    assert run.returncode == 0, run.stderr
    assert run.result["is_error"] is False
    assert streams[:2] == [True, False]  # the cut stream, then the plain-JSON fallback
    assert (project.worktree / "note.txt").read_text() == "hi\n"


# -- the recorded fixtures ----------------------------------------------------------------------

RECORDED = {
    # name: (subtype, is_error, api_error_status); exit codes in tests/data/claude/README.md
    "tester-success.jsonl": ("success", False, None),
    "api-401.jsonl": ("success", True, 401),
    "connection-refused.jsonl": ("success", True, None),
    "max-turns.jsonl": ("error_max_turns", True, None),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_fixture_holds_the_stable_fields(name: str) -> None:
    lines: Sequence[dict[str, Any]] = [
        json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()
    ]
    subtype, is_error, status = RECORDED[name]
    init, result = lines[0], lines[-1]
    assert (init["type"], init["subtype"]) == ("system", "init")
    assert init["session_id"] == result["session_id"]
    assert init["cwd"].startswith(FIXTURE_ROOT)
    assert result["type"] == "result"
    assert (result["subtype"], result["is_error"]) == (subtype, is_error)
    assert result.get("api_error_status") == status
    assert {"num_turns", "duration_ms", "total_cost_usd", "usage"} <= result.keys()
