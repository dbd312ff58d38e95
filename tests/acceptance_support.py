"""Helpers of the acceptance tests (``tests/features/*.feature``, ``test_acceptance*.py``).

A :class:`Site` is a real git project (the demo project) with a tmops config FILE that names
the scripted agent as the claude-code provider's command. Everything is driven from outside,
as a person or an MCP client would: the real ``tmops`` command in a process of its own, and the
real ``tmops mcp`` server over stdio with the SDK's client. The store is only read, to check.
A plain module, not a conftest: it holds no fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from tests.engine_support import WAIT_S, ended, git, open_store, scripted_config, write_config
from tests.mcp_support import server_env, text_of
from tests.takeover_support import LIVE, TMOPS, engines_of, leftovers, wait_until
from tmops_core.service.demo_project import DEMO_TASK_SPEC, create_demo_project
from tmops_core.store import AttemptRecord, RunRecord, Store

RUN = "initial"


@dataclass
class Site:
    """A git project and the config every ``tmops`` process of the test reads."""

    base: Path
    root: Path
    config: Path
    state: Path
    #: what the ``tmops`` command is run through (e.g. setpriv), if anything
    runner: Sequence[str] = ()
    _store: Store | None = field(default=None, repr=False)

    # -- driving it --------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The real ``tmops`` command, in a process of its own."""
        return subprocess.run(
            [*self.runner, TMOPS, "--config", str(self.config), *args,
             "--workspace", str(self.root)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def mcp(self, *calls: tuple[str, dict[str, Any]]) -> list[CallToolResult]:
        """The tool calls, in order, in one session with a real ``tmops mcp`` over stdio."""

        async def session() -> list[CallToolResult]:
            with anyio.fail_after(WAIT_S):
                async with Client(self.server()) as client:
                    return [await client.call_tool(name, args) for name, args in calls]

        return anyio.run(session)

    def mcp_follow(self, feature: str) -> list[dict[str, Any]]:
        """``tmops_get_status`` in one MCP session until the run has ended: every status seen."""

        async def session() -> list[dict[str, Any]]:
            seen: list[dict[str, Any]] = []
            with anyio.fail_after(WAIT_S * 2):
                async with Client(self.server()) as client:
                    while not seen or not ended(seen[-1]["status"]):
                        status = await client.call_tool("tmops_get_status", {"feature": feature})
                        assert status.structured_content is not None, text_of(status)
                        seen.append(status.structured_content)
                        await anyio.sleep(0.1)
            return seen

        return anyio.run(session)

    def server(self) -> StdioServerParameters:
        return StdioServerParameters(
            command=TMOPS,
            args=["--config", str(self.config), "mcp", "--workspace", str(self.root)],
            env=server_env(),
            cwd=str(self.root),
        )

    def init(self, feature: str) -> Path:
        """``tmops init FEATURE`` and a written TASK_SPEC.md (the demo task); its run folder."""
        done = self.cli("init", feature)
        assert done.returncode == 0, done.stderr
        run_dir = self.run_dir(feature)
        (run_dir / "TASK_SPEC.md").write_text(DEMO_TASK_SPEC, encoding="utf-8")
        return run_dir

    def rewrite_config(self, **settings: Any) -> None:
        """A new config for the next engine, once the current one has exited (fixed faults)."""
        wait_until(lambda: not engines_of(self.root), timeout=WAIT_S, what="the engine to exit")
        write_config(self.config, scripted_config(self.state, **settings))

    # -- reading it --------------------------------------------------------------------------

    def run_dir(self, feature: str) -> Path:
        return self.root / ".tmops" / feature / "runs" / RUN

    def checkpoints(self, feature: str) -> Path:
        return self.run_dir(feature) / "checkpoints"

    def worktree(self, feature: str) -> Path:
        return self.root / ".tmops" / "worktrees" / feature

    def git(self, *args: str) -> str:
        return git(self.root, *args).strip()

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.root)
        return self._store

    def run(self, feature: str) -> RunRecord:
        record = self.store().run(feature, RUN)
        assert record is not None, f"no run of {feature}"
        return record

    def attempts(self, feature: str, phase: str | None = None) -> list[AttemptRecord]:
        rows = self.store().attempts(feature, RUN)
        return [a for a in rows if phase is None or a.phase == phase]

    def live_agent(self, feature: str, phase: str | None = None) -> AttemptRecord | None:
        """An attempt of the feature whose agent runs (its pid recorded), if there is one."""
        return next(
            (a for a in self.attempts(feature, phase)
             if a.state in LIVE and a.pid and a.start_time),
            None,
        )  # fmt: skip

    def events(self, feature: str, kind: str | None = None) -> list[dict[str, Any]]:
        """The events the store kept for the feature (what ``tmops watch`` shows)."""
        found = [
            {"event_type": row["event_type"], "timestamp": row["timestamp"],
             "data": json.loads(row["data"])}
            for row in self.store().events_for(feature, after_id=0)
        ]  # fmt: skip
        return [e for e in found if kind is None or e["event_type"] == f"orchestration.{kind}"]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        for pid in leftovers(self.state):  # agents a failed test left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def make_site(base: Path, **settings: Any) -> Site:
    """The demo project (no feature yet) and a config file naming the scripted agent."""
    root = create_demo_project(base / "p").path
    state = base / "state"
    config = write_config(base / "tmops.yaml", scripted_config(state, **settings))
    return Site(base, root, config, state)


def branch_subjects(site: Site, branch: str) -> list[str]:
    """The subjects of the branch's own commits (those not on main), oldest first."""
    return site.git("log", "--reverse", "--format=%s", f"main..{branch}").splitlines()


def assert_test_first(subjects: Sequence[str]) -> None:
    """The tester's commit comes before the implementer's on the branch."""
    tests = [i for i, s in enumerate(subjects) if s.startswith("test(") or "tester work" in s]
    code = [i for i, s in enumerate(subjects) if s.startswith("feat(") or "implementer work" in s]
    assert tests, f"no test commit on the branch: {subjects}"
    assert code, f"no code commit on the branch: {subjects}"
    assert max(tests) < min(code), f"code committed before the tests: {subjects}"
