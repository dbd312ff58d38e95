"""The logger is loguru's, imported on first use: a command that logs nothing never imports
loguru, and whatever logs finds the configured sink (stderr, redacted, tmops' format)."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip


def test_configuring_the_log_does_not_import_loguru() -> None:
    result = _run(
        "import sys; from tmops_core.events import configure_logging; "
        "configure_logging('info'); print('loguru' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_first_message_goes_through_the_configured_sink() -> None:
    result = _run(
        "from tmops_core.events import configure_logging; from tmops_core.log import logger; "
        "configure_logging('warning'); logger.info('quiet'); logger.warning('heard')"
    )
    assert result.returncode == 0, result.stderr
    assert "heard" in result.stderr
    assert "quiet" not in result.stderr  # the level was applied before the first message
    assert " | WARNING" not in result.stderr  # tmops' format, not loguru's own


def test_code_that_imported_loguru_itself_gets_the_configured_sink_once_settled() -> None:
    result = _run(
        "from tmops_core.events import configure_logging; from tmops_core.log import settle; "
        "configure_logging('warning'); from loguru import logger; settle(); "
        "logger.info('quiet'); logger.warning('heard')"
    )
    assert result.returncode == 0, result.stderr
    assert "heard" in result.stderr
    assert "quiet" not in result.stderr
