"""No secret survives a whole workflow: ten secret shapes planted in the environment, the config
file and the task spec (which the scripted agent prints back, so it lands in the agent's
stream) never appear in any file under ``.tmops/`` (the SQLite database and its WAL included),
the telemetry file, the logs, or any CLI or MCP answer. The agent still gets the real values."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from loguru import logger
from mcp import Client

from tmops_core.events import configure_logging
from tmops_core.service.demo_project import DEMO_TASK_SPEC
from tmops_core.surfaces.cli import cli
from tmops_core.surfaces.mcp_server import build_server
from tmops_core.workspace.features import InitResult

from .engine_support import Finished, run_workflow, scripted_config, write_config

URL_PASSWORD = "gw-Pa55-word-9f3k"  # noqa: S105 - a planted test secret
#: name -> secret value; each is one of the shapes tmops must hide
IN_ENVIRONMENT = {
    "ANTHROPIC_BASE_URL": f"https://gwuser:{URL_PASSWORD}@gateway.example/v1",
    "GH_PAT": "patvalue7Hq2Lm9XcQ",
    "SLACK_BOT_TOKEN": "xoxb-2468013579-1357924680-AbCdEfGhIjKl",
    "AWS_ACCESS_KEY_ID": "AKIAQ7XZ3K5M2N4P6R8T",
}
IN_CONFIG_FILE = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-Zq8Kx2Lm7Np4Rt6Vw9Yb1Cd3",
    "db_password": "dbpw-S3cr3t-v4lue",
}
IN_TASK_SPEC = {
    "ghp": "ghp_R4nd0mT0k3nV4lu3F0rT3st1ng0001",
    "github_pat": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstu",
    "aws_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
    "openai": "sk-proj-Hj3Kl5Mn7Pq9Rs1Tu3VwXy",
}
SECRETS = [
    URL_PASSWORD,
    *list(IN_ENVIRONMENT.values())[1:],
    *IN_CONFIG_FILE.values(),
    *IN_TASK_SPEC.values(),
]
SPEC_WITH_SECRETS = DEMO_TASK_SPEC + (
    "\n## Credentials the agent must not leak\n"
    f"- token {IN_TASK_SPEC['ghp']} and {IN_TASK_SPEC['github_pat']}\n"
    f"- aws_secret_access_key = {IN_TASK_SPEC['aws_secret']}\n"
    f"- OPENAI {IN_TASK_SPEC['openai']}\n"
)


def found_in(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [secret for secret in SECRETS if secret.encode() in data]


@pytest.fixture
def debug_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """tmops' own logs, at debug level, into the captured stderr (loguru's default after)."""
    configure_logging("debug")
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture
def finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, debug_logs: None
) -> Iterator[Finished]:
    for name, value in IN_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    data = scripted_config(
        tmp_path / "agent-state",
        jsonl=tmp_path / "events.jsonl",
        env_allowlist=["SLACK_BOT_TOKEN", "AWS_ACCESS_KEY_ID"],
        default_phases=["orchestrator", "tester"],
    )
    env = data["providers"]["claude-code"]["env"]
    env.update(IN_CONFIG_FILE)
    env.update({"ANTHROPIC_BASE_URL": "${ANTHROPIC_BASE_URL}", "GH_PAT": "${GH_PAT}"})
    write_config(tmp_path / "tmops.yaml", data)

    def plant(init: InitResult) -> None:
        init.task_spec.write_text(SPEC_WITH_SECRETS)

    result = run_workflow(tmp_path, data, prepare=plant)
    yield result
    result.close()


def test_no_secret_is_written_or_shown_anywhere(
    finished: Finished, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert finished.status()["status"] == "completed"
    root = finished.root
    leaks: dict[str, list[str]] = {}
    for path in sorted((root / ".tmops").rglob("*")):
        if path.is_symlink() or not path.is_file() or path == finished.init.task_spec:
            continue  # TASK_SPEC.md is the person's own text, the one input holding secrets
        if found := found_in(path.read_bytes()):
            leaks[str(path.relative_to(root))] = found
    for path in tmp_path.glob("events.jsonl"):
        if found := found_in(path.read_bytes()):
            leaks[path.name] = found

    config = str(tmp_path / "tmops.yaml")
    answers = {
        args: CliRunner().invoke(cli, ["--config", config, *args], catch_exceptions=False)
        for args in (
            ("config", "show"),
            ("config", "show", "--json"),
            ("status", finished.feature, "--workspace", str(root), "--json"),
            ("status", finished.feature, "--workspace", str(root)),
            ("events", "--workspace", str(root)),
            ("events", finished.feature, "--workspace", str(root), "--json"),
        )
    }
    for args, answer in answers.items():
        assert answer.exit_code == 0, answer.output
        if found := found_in(answer.output + answer.stderr):
            leaks[" ".join(args)] = found
    if found := found_in(json.dumps(finished.events())):
        leaks["events"] = found
    if found := found_in(_mcp_answers(finished)):
        leaks["mcp"] = found
    if found := found_in("".join(capsys.readouterr())):
        leaks["captured output"] = found
    assert leaks == {}
    # the agent really printed the spec's secrets: its log shows it read them, redacted
    log = (finished.init.run_dir / "logs" / "orchestrator.log").read_text()
    assert "Credentials the agent must not leak" in log
    assert "***redacted***" in log
    shown = answers["config", "show", "--json"].output
    assert "https://***@gateway.example/v1" in shown


def _mcp_answers(finished: Finished) -> str:
    server = build_server(finished.service, workspace=finished.root)

    async def ask() -> str:
        async with Client(server, mode="legacy") as client:
            status = await client.call_tool("tmops_get_status", {"feature": finished.feature})
            listed = await client.call_tool("tmops_list_features", {})
        return repr(status) + repr(listed)

    return anyio.run(ask)


def test_logs_hide_secrets(debug_logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    logger.warning("gateway {} refused key {}", IN_ENVIRONMENT["ANTHROPIC_BASE_URL"],
                   IN_CONFIG_FILE["ANTHROPIC_API_KEY"])  # fmt: skip
    err = capsys.readouterr().err
    assert "gateway https://***@gateway.example/v1 refused key ***redacted***" in err
    assert found_in(err) == []


def test_the_agent_still_gets_the_real_values(finished: Finished) -> None:
    # The agent's environment is not redacted: it needs the keys (checked by the preflight
    # environment builder tmops runs agents with).
    from tmops_core.agents.env import build_env

    env = build_env(
        {"GH_PAT": os.environ["GH_PAT"]}, allow=("SLACK_BOT_TOKEN", "AWS_ACCESS_KEY_ID")
    )
    assert env["GH_PAT"] == IN_ENVIRONMENT["GH_PAT"]
    assert env["SLACK_BOT_TOKEN"] == IN_ENVIRONMENT["SLACK_BOT_TOKEN"]


FAULT_SECRETS = ["xoxp-2468013579-1357924680-AbCdEfGhIjKm", "gho_R4nd0mT0k3nV4lu3F0rT3st1ng0002"]


def test_an_agent_failure_quoting_secrets_is_stored_redacted(tmp_path: Path) -> None:
    # The scripted agent quotes an unknown fault on stderr and exits 1: its stderr becomes the
    # attempt's message and the run's last error, and both secrets are in it.
    fault = ",".join(f"orchestrator:{secret}" for secret in FAULT_SECRETS)
    data = scripted_config(tmp_path / "agent-state", fault=fault, max_retries=0)
    failed = run_workflow(tmp_path, data)
    try:
        status = failed.status()
        assert status["status"] == "failed"
        assert REDACTED_MARK in status["last_error"]
        texts = [json.dumps(status), json.dumps(failed.events())]
        texts += [a.message or "" for a in failed.attempts()]
        files = [p for p in (failed.root / ".tmops").rglob("*") if p.is_file()]
        raw = b"".join(p.read_bytes() for p in files if not p.is_symlink())
        for secret in FAULT_SECRETS:
            assert secret.encode() not in raw
            assert all(secret not in text for text in texts)
    finally:
        failed.close()


REDACTED_MARK = "***redacted***"
