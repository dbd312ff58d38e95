"""The real Prometheus scrapes a real ``tmops mcp --http`` on 127.0.0.1, with the bearer token from
a credentials file, and finds the numbers of a real run of the project (the scripted agent
through the engine) in its query API; a job without the token is refused; the example alert
rules load.

Needs the ``prometheus`` binary (Debian's ``prometheus`` package): skipped where it is missing,
except under ``TMOPS_REQUIRE_PROMETHEUS=1`` (CI), where the test fails. No assertion is timed:
the deadline only keeps a broken setup from hanging the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine_support import SHORT_WORKFLOW, Finished, run_workflow, scripted_config

from .conftest import REPO
from .mcp_support import TIMEOUT_S
from .test_mcp_http import HttpServer, StartServer, start_server, token_of

# left out of the main run: CI runs the slow tests in a step of their own (pytest -m slow)
pytestmark = pytest.mark.slow

__all__ = ["start_server"]  # the fixture of test_mcp_http.py, serving this module's project

REQUIRE_ENV = "TMOPS_REQUIRE_PROMETHEUS"
_DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    found = shutil.which("prometheus")
    if found is None:
        why = "no prometheus binary (Debian: apt-get install prometheus)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}")
        pytest.skip(why)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def finished(tmp_path: Path) -> Iterator[Finished]:
    run = run_workflow(tmp_path, scripted_config(tmp_path / "state", default_phases=SHORT_WORKFLOW))
    yield run
    run.close()


@pytest.fixture
def repo(finished: Finished) -> Path:
    """The project ``start_server`` serves: the one with the finished run."""
    return finished.root


@pytest.fixture
def tmops_http(start_server: StartServer) -> HttpServer:
    return start_server()


class Prometheus:
    def __init__(self, port: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:  # noqa: S310 - http://127.0.0.1
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def values(self, query: str) -> list[tuple[dict[str, str], float]]:
        result = self.api("/api/v1/query", query=query)["result"]
        return [(item["metric"], float(item["value"][1])) for item in result]

    def wait_for(self, query: str) -> list[tuple[dict[str, str], float]]:
        """The query's result once it has one (Prometheus up, the scrape done)."""
        deadline = time.monotonic() + _DEADLINE_S
        while True:
            try:
                found = self.values(query)
            except OSError:  # not listening yet
                found = []
            if found:
                return found
            assert time.monotonic() < deadline, f"no result for {query}: {self.log.read_text()}"
            time.sleep(0.25)


@pytest.fixture
def prometheus(
    prometheus_bin: str, tmops_http: HttpServer, finished: Finished, tmp_path: Path
) -> Iterator[Prometheus]:
    token_file = tmp_path / "tmops.token"
    token_file.write_text(token_of(finished.root))
    token_file.chmod(0o600)
    target = [f"127.0.0.1:{tmops_http.port}"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(REPO / "docs" / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "tmops",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [{"targets": target}],
            },
            {"job_name": "tmops-no-token", "static_configs": [{"targets": target}]},
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [prometheus_bin, f"--config.file={config_file}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    yield Prometheus(port, log)
    process.terminate()
    try:
        process.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_prometheus_scrapes_tmops_with_the_token(
    prometheus: Prometheus, finished: Finished
) -> None:
    assert finished.status()["status"] == "completed"
    [(labels, up)] = prometheus.wait_for('up{job="tmops"} == 1')
    assert up == 1
    assert labels["instance"].startswith("127.0.0.1:")
    [(_, completed)] = prometheus.wait_for('tmops_runs{job="tmops", state="completed"}')
    assert completed == 1
    attempts = prometheus.wait_for('tmops_attempts_total{job="tmops", outcome="completed"}')
    assert sorted((metric["phase"], value) for metric, value in attempts) == [
        (phase, 1.0) for phase in sorted(SHORT_WORKFLOW)
    ]
    [(_, handoffs)] = prometheus.wait_for('tmops_handoff_seconds_count{job="tmops"}')
    assert handoffs == 1
    # the job without the token is refused
    [(_, refused)] = prometheus.wait_for('up{job="tmops-no-token"}')
    assert refused == 0
    targets = prometheus.api("/api/v1/targets")["activeTargets"]
    errors = {t["labels"]["job"]: t["lastError"] for t in targets}
    assert "401" in errors["tmops-no-token"]
    assert errors["tmops"] == ""
    # the example alert rules load and evaluate against the real series
    groups = prometheus.api("/api/v1/rules")["groups"]
    rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert "TmopsRunStuckNoEngine" in rules
    assert set(rules.values()) <= {"ok", "unknown"}
