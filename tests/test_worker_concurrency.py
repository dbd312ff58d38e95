"""``tmops worker --concurrency N`` caps the attempts one machine runs at once, over the
config's ``executor.max_concurrent_attempts``: a real Temporal dev server, a real worker
process, two runs whose agents would overlap without the cap."""

from __future__ import annotations

import itertools
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine_support import WAIT_S, new_feature
from tests.takeover_support import TMOPS, wait_until
from tests.temporal_support import DevServer, Fleet, dev_server, make_fleet
from tmops_core.service.demo_project import DEMO_FEATURE
from tmops_plugins.scripted_journal import JOURNAL_ENV, read_journal

pytestmark = pytest.mark.slow


def _worker(fleet: Fleet, clone: Path, *extra: str) -> subprocess.Popen[bytes]:
    log = (clone.parent / f"{clone.name}.log").open("ab")
    process = subprocess.Popen(
        [TMOPS, "--config", str(fleet.project.config), "worker", "--executor", "temporal",
         "--workspace", str(clone), *extra],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    log.close()
    fleet.workers.append(process)
    return process


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DevServer]:
    with dev_server(tmp_path) as started:
        yield started


def test_a_worker_with_concurrency_1_runs_two_queued_attempts_one_after_the_other(
    tmp_path: Path, server: DevServer
) -> None:
    """Two runs start at once (the engine runs both: ``concurrent_limit: 2``), each
    orchestrator sleeping 3 s; the one worker, ``--concurrency 1`` over the config's
    ``max_concurrent_attempts: 4``, runs the second agent only once the first has ended (with
    ``--concurrency 2`` both run at once, and this fails)."""
    fleet = make_fleet(tmp_path, server, fault="orchestrator:slow=3", concurrent_limit=2)
    try:
        project = fleet.project
        journal = tmp_path / "journal"
        journal.mkdir(mode=0o700)
        data = yaml.safe_load(project.config.read_text())
        data["providers"]["claude-code"]["env"][JOURNAL_ENV] = str(journal)
        data["executor"]["max_concurrent_attempts"] = 4  # the flag overrides it
        project.config.write_text(yaml.safe_dump(data))
        new_feature(project.service, project.root, "second")
        _worker(fleet, fleet.clone("w1"), "--concurrency", "1")
        for feature in (DEMO_FEATURE, "second"):
            project.service.start(feature, workspace=project.root, spawn=False)
        project.engine()

        def orchestrators_ended() -> list[dict[str, Any]] | None:
            lines = read_journal(journal)
            ended = {line["pid"] for line in lines if line["event"] == "end"}
            starts = [line for line in lines
                      if line["event"] == "start" and line["role"] == "orchestrator"]  # fmt: skip
            done = [line for line in starts if line["pid"] in ended]
            return lines if len({line["feature"] for line in done}) == 2 else None

        lines = wait_until(orchestrators_ended, timeout=2 * WAIT_S,
                           what="both runs' orchestrators to end")  # fmt: skip
        spans = _spans(lines)
        print(f"agents on the worker: {[(round(s, 2), round(e, 2), f) for s, e, f in spans]}")
        assert {feature for _, _, feature in spans[:2]} == {DEMO_FEATURE, "second"}
        # each agent started after the one before it ended: never two at once
        assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
    finally:
        fleet.close()


def _spans(lines: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """Each agent's (start, end, feature), by start; one still running ends at infinity."""
    ends = {line["pid"]: line["time"] for line in lines if line["event"] == "end"}
    return sorted(
        (line["time"], ends.get(line["pid"], math.inf), line["feature"])
        for line in lines
        if line["event"] == "start"
    )
