"""The example plugin's provider, ``security-review-agent``: the security-review phase played by
a review with no model, run by the real engine in a real git repository, its agent and scanner
real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tmops_core.config import LoadedConfig, parse_config
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.doctor import run_doctor
from tmops_core.service.operations import Service
from tmops_core.store import AttemptRecord, SQLiteStore
from tmops_core.surfaces.demo import scripted_agent_config
from tmops_core.workspace.features import InitRequest
from tmops_core.workspace.layout import Layout
from tmops_hookspecs import ProviderError

from .conftest import git, make_repo
from .engine_support import run_workflow

pytest.importorskip("tmops_security_review")

TMOPS = str(Path(sys.executable).with_name("tmops"))
PROVIDER = "security-review-agent"
# built in two parts, so that no scanner of this repository takes it for a real key
PLANTED_KEY = "AKIA" + "Q7RZ4EXAMPLEKEY2"


@dataclass
class Review:
    status: dict[str, Any]
    attempts: list[AttemptRecord]
    events: list[dict[str, Any]]
    report: str | None


def _review(
    tmp_path: Path,
    *,
    files: dict[str, str] | None = None,
    phases: tuple[str, ...] = ("security-review",),
    max_retries: int = 0,
    **options: Any,
) -> Review:
    """A project (with ``files`` committed), its feature run through the security-review phase
    by the example provider, with ``options`` in its config section."""
    root = make_repo(tmp_path / "project")
    for name, text in (files or {}).items():
        (root / name).write_text(text)
        git(root, "add", name)
    if files:
        git(root, "commit", "-q", "-m", "the code under review")
    data = {
        "providers": {PROVIDER: options},
        "features": {
            "default_provider": PROVIDER,
            "default_phases": list(phases),
            "test_command": [sys.executable, "-c", "pass"],
            "max_retries": max_retries,
        },
    }
    service = Service(LoadedConfig(parse_config(data), None), create_plugin_manager())
    try:
        init = service.init(InitRequest(feature="audit", workspace=root))
        init.task_spec.write_text("# Task Specification: audit\n\nReview the code.\n")
        service.start("audit", workspace=root, spawn=False)
        service.serve_engine(workspace=root, idle_exit_s=0.1, retry_backoff_s=(0.05,))
        status = service.status("audit", workspace=root)
        events = service.events_since("audit", workspace=root)
    finally:
        service.close()
    store = SQLiteStore(root / ".tmops" / "tmops.db")
    attempts = store.attempts("audit", init.run)
    store.close()
    found = list((root / ".tmops").rglob("009-security-complete.md"))
    text = found[0].read_text() if found else None
    return Review(status, attempts, events, text)


def _tools(review: Review) -> list[tuple[str, str]]:
    return [
        (e["data"]["tool"], e["data"]["target"])
        for e in review.events
        if e["event_type"] == "agent.tool"
    ]


def test_a_clean_project_passes_and_the_live_view_sees_each_step(tmp_path: Path) -> None:
    review = _review(tmp_path, files={"app.py": "print('hello')\n"})
    assert review.status["status"] == "completed", review.status["last_error"]
    [attempt] = review.attempts
    assert (attempt.phase, attempt.state, attempt.outcome) == (
        "security-review",
        "completed",
        "succeeded",
    )
    assert attempt.session_id is not None
    assert len(attempt.session_id) == 32  # the review's id
    assert review.report is not None
    assert "Security verdict: PASS" in review.report
    tools = _tools(review)
    assert ("ListFiles", "2 files") in tools  # README.md and app.py
    assert [tool for tool, _ in tools][-1] == "Write"


def test_a_planted_key_fails_the_verdict_and_the_report_never_quotes_it(
    tmp_path: Path,
) -> None:
    review = _review(tmp_path, files={"settings.py": f"DEBUG = True\nKEY = '{PLANTED_KEY}'\n"})
    # the review itself succeeded: its verdict is for a person to read
    assert review.status["status"] == "completed", review.status["last_error"]
    assert review.report is not None
    assert "settings.py:2: AWS access key" in review.report
    assert "Security verdict: FAIL" in review.report
    assert PLANTED_KEY not in review.report  # else the no-secrets validator refuses it
    assert ("Secret", "settings.py:2 (AWS access key)") in _tools(review)


def test_the_kinds_the_plugin_ignores_are_not_reported(tmp_path: Path) -> None:
    root = tmp_path / "ignoring"
    root.mkdir()
    config = root / "tmops.yaml"
    config.write_text(
        "plugins:\n  settings:\n    security-review: {ignore: [AWS access key]}\n"
        f"providers:\n  {PROVIDER}: {{}}\n"
    )
    config.chmod(0o600)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tmops_core.service.operations import Service\n"
        "from tmops_hookspecs import AgentRequest\n"
        "service = Service.load(sys.argv[1])\n"
        f"spec = service.plugins.providers()[{PROVIDER!r}].spec\n"
        "provider = spec.factory({})\n"
        "request = AgentRequest(feature='audit', run='initial', phase='security-review',\n"
        "    role_instructions='', prompt='', working_dir=Path('/w'),\n"
        "    extra_dirs=(Path('/c'),))\n"
        "print(' '.join(provider.build_invocation(request).argv[3:]))\n"
        "service.close()\n"
    )
    argv = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        capture_output=True, text=True, check=True, cwd=root, timeout=60,
    ).stdout  # fmt: skip
    assert "--ignore=AWS access key" in argv
    assert "--checkpoint=/c/009-security-complete.md" in argv


def test_a_scanner_that_finds_problems_fails_the_verdict_with_its_output(
    tmp_path: Path,
) -> None:
    scanner = [sys.executable, "-c", "print('B602: subprocess with shell=True'); exit(1)"]
    review = _review(tmp_path, scanner=scanner)
    assert review.status["status"] == "completed", review.status["last_error"]
    assert review.report is not None
    assert "B602: subprocess with shell=True" in review.report
    assert "Security verdict: FAIL" in review.report
    messages = [e["data"]["text"] for e in review.events if e["event_type"] == "agent.message"]
    assert "B602: subprocess with shell=True" in messages


def test_a_scanner_that_fails_is_a_failed_attempt_with_its_reason(tmp_path: Path) -> None:
    scanner = [sys.executable, "-c", "print('no rules configured'); exit(3)"]
    review = _review(tmp_path, scanner=scanner, findings_exit_codes=[1, 2])
    assert review.status["status"] == "failed"
    [attempt] = review.attempts
    assert attempt.outcome == "failed"
    assert "exited 2" in (attempt.message or "")
    assert "failed with exit code 3: no rules configured" in review.status["last_error"]


def test_an_agent_killed_by_a_signal_is_a_crash(tmp_path: Path) -> None:
    # the scanner's parent is the review agent: it dies mid-review, as a crash would end it
    scanner = [sys.executable, "-c", "import os, signal; os.kill(os.getppid(), signal.SIGKILL)"]
    review = _review(tmp_path, scanner=scanner)
    assert review.status["status"] == "failed"
    [attempt] = review.attempts
    assert attempt.outcome == "crashed"
    assert "killed by signal SIGKILL" in review.status["last_error"]
    assert review.report is None


def test_the_agent_gets_the_variables_its_spec_allows_and_no_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "env.json"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-agents")
    dump = f"import json, os; json.dump(sorted(os.environ), open({str(seen)!r}, 'w'))"
    review = _review(tmp_path, scanner=[sys.executable, "-c", dump])
    assert review.status["status"] == "completed", review.status["last_error"]
    names = json.loads(seen.read_text())
    assert "PYTHONPATH" in names  # the spec's env_names
    assert "AWS_SECRET_ACCESS_KEY" not in names


def test_another_phase_is_refused_when_the_run_starts(tmp_path: Path) -> None:
    """The preflight builds the first phase's invocation: a workflow this agent cannot play
    is refused by name before any run is queued."""
    root = make_repo(tmp_path / "project")
    data = {
        "providers": {PROVIDER: {}},
        "features": {"default_provider": PROVIDER, "default_phases": ["orchestrator"]},
    }
    service = Service(LoadedConfig(parse_config(data), None), create_plugin_manager())
    try:
        init = service.init(InitRequest(feature="audit", workspace=root))
        init.task_spec.write_text("# Task Specification: audit\n\nPlan it.\n")
        with pytest.raises(ProviderError, match="cannot play the phase 'orchestrator'"):
            service.start("audit", workspace=root, spawn=False)
        assert service.status("audit", workspace=root)["status"] != "queued"
    finally:
        service.close()


def test_a_later_phase_it_cannot_play_is_a_failed_attempt_naming_it(tmp_path: Path) -> None:
    """The provider refuses the request (ProviderError): each attempt of that phase ends
    failed with the provider's reason, none is left running, and the run fails."""
    review = _review(tmp_path, phases=("security-review", "orchestrator"), max_retries=1)
    assert review.status["status"] == "failed"
    assert "cannot play the phase 'orchestrator'" in review.status["last_error"]
    rows = [(a.phase, a.state, a.outcome) for a in review.attempts]
    assert rows == [
        ("security-review", "completed", "succeeded"),
        ("orchestrator", "rejected", "failed"),
        ("orchestrator", "failed", "failed"),
    ]
    assert all("cannot play" in (a.message or "") for a in review.attempts[1:])


def test_a_five_phase_run_mixes_the_scripted_agent_and_the_review(tmp_path: Path) -> None:
    """One run, a provider per phase: the scripted agent plays the four roles, writing and
    committing tests and code; ``features.phase_providers`` gives the security-review phase to
    the example provider, which reviews that branch: its gate runs the real tests, its report
    covers the files the others made."""
    data = scripted_agent_config(
        default_phases=["orchestrator", "tester", "implementer", "verifier", "security-review"],
        phase_providers={"security-review": PROVIDER},
    )
    run = run_workflow(tmp_path, {**data, "providers": {**data["providers"], PROVIDER: {}}})
    try:
        status = run.status()
        attempts = run.attempts()
        checks = {c.name: c for c in run_doctor(Layout(run.root), run.service.config,
                                                 run.service.plugins)}  # fmt: skip
    finally:
        run.close()
    # the start and the doctor ask each provider about the first phase it plays
    assert checks[f"provider {PROVIDER}"].status == "ok", checks[f"provider {PROVIDER}"]
    assert status["status"] == "completed", status["last_error"]
    assert [(a.phase, a.provider) for a in attempts] == [
        ("orchestrator", "scripted"),
        ("tester", "scripted"),
        ("implementer", "scripted"),
        ("verifier", "scripted"),
        ("security-review", PROVIDER),
    ]
    report = (run.init.checkpoint_dir / "009-security-complete.md").read_text()
    assert "Security verdict: PASS" in report
    tracked = git(run.init.worktree, "ls-files").split()
    assert {"slug.py", "tests/test_slug.py"} <= set(tracked)
    assert f"Reviewed {len(tracked)} file(s)" in report


def test_each_bad_option_is_reported_at_its_path(tmp_path: Path) -> None:
    config = tmp_path / "tmops.yaml"
    config.write_text(
        f"providers:\n  {PROVIDER}:\n"
        "    scanner: bandit -r .\n"
        "    findings_exit_codes: [0]\n"
        "    max_file_bytes: true\n"
        "    model: some-model\n"
        "    scaner: [bandit]\n"
    )
    config.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMOPS_")}
    result = subprocess.run(
        [TMOPS, "--config", str(config), "config", "check"],
        capture_output=True, text=True, check=False, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    for key in ("scanner", "findings_exit_codes", "max_file_bytes", "model", "scaner"):
        assert f"@ $.providers.{PROVIDER}.{key}" in result.stderr, (key, result.stderr)
    good = tmp_path / "good.yaml"
    good.write_text(f"providers:\n  {PROVIDER}:\n    scanner: [bandit, -q, -r, .]\n")
    good.chmod(0o600)
    result = subprocess.run(
        [TMOPS, "--config", str(good), "config", "check"],
        capture_output=True, text=True, check=False, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
