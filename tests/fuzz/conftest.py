"""Fixtures of the fuzzers: how many examples, a server that can start nothing, and a portal.

``TMOPS_FUZZ_EXAMPLES`` sets each fuzz test's number of examples: small by default so that the
main suite stays fast; CI's fuzz step sets it high (``.ci/run``). Every MCP call counts in
:data:`CALLS`, printed at the end of the session.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter
from hypothesis import HealthCheck, settings

from tests.conftest import make_repo
from tmops_core.service.operations import Service

EXAMPLES = int(os.environ.get("TMOPS_FUZZ_EXAMPLES", "30"))
#: one call answers in milliseconds; a call still running after this is a hang
CALL_TIMEOUT_S = float(os.environ.get("TMOPS_FUZZ_CALL_TIMEOUT_S", "30"))
#: MCP calls made, by transport
CALLS: Counter[str] = Counter()
#: the feature every fuzzed call may name: initialised once, so a mutated argument (not a
#: missing feature) is what an invalid call is refused for
READY_FEATURE = "fuzz-ready"

# The agent program does not exist: no fuzzed start, resume or retry can run an agent, whatever
# it asks for (the preflight refuses it), so the fuzzers never leave an engine behind.
FUZZ_CONFIG = """\
providers:
  claude-code:
    command: /nonexistent/tmops-fuzz-agent
telemetry:
  level: error
"""


def fuzz_settings(examples: int = EXAMPLES) -> settings:
    """No deadline (the call guard times each call), no example database written to disk."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


@pytest.fixture(scope="module")
def fuzz_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz-config") / "tmops.yaml"
    path.write_text(FUZZ_CONFIG)
    return path


@pytest.fixture(scope="module")
def fuzz_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("fuzz") / "repo")


@pytest.fixture(scope="module")
def fuzz_service(fuzz_config: Path) -> Iterator[Service]:
    # The SDK logs every refused call at INFO: thousands of lines that hide a real failure.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    service = Service.load(fuzz_config)
    yield service
    service.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if CALLS:
        made = ", ".join(f"{count} {transport}" for transport, count in sorted(CALLS.items()))
        terminalreporter.write_line(f"fuzz: MCP calls made: {made}")
