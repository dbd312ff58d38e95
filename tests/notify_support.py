"""Helpers of the notification tests: a service whose plugins get ``plugins.settings``, a
notify command that records what it was given, and log capture."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loguru import logger

from tmops_core.config import LoadedConfig, parse_config
from tmops_core.plugins import create_plugin_manager
from tmops_core.service.demo_project import create_demo_project
from tmops_core.service.operations import Service

from .engine_support import new_feature, serve

#: The notify command of the tests: appends {"stdin": ..., "env": ...} as one line to argv[1],
#: after sleeping argv[2] seconds if given.
RECORDER = (
    "import json, os, sys, time\n"
    "record = {'stdin': json.loads(sys.stdin.read()), 'env': dict(os.environ)}\n"
    "time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)\n"
    "with open(sys.argv[1], 'a') as out:\n"
    "    out.write(json.dumps(record) + '\\n')\n"
)


def recorder(folder: Path, name: str = "notified") -> tuple[list[str], Path]:
    """The argv of a recording notify command, and the file it appends to."""
    script = folder / "record_notification.py"
    script.write_text(RECORDER)
    out = folder / f"{name}.jsonl"
    return [sys.executable, str(script), str(out)], out


def recorded(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def configured_service(data: Mapping[str, Any]) -> Service:
    """A service as ``tmops`` builds one: its plugins get their ``plugins.settings``."""
    config = parse_config(dict(data))
    return Service(
        LoadedConfig(config, None), create_plugin_manager(settings=config.plugins.settings)
    )


@contextmanager
def captured_logs(level: str = "INFO") -> Iterator[list[str]]:
    messages: list[str] = []
    handler = logger.add(lambda message: messages.append(str(message)), level=level)
    try:
        yield messages
    finally:
        logger.remove(handler)


def run_notified(base: Path, data: Mapping[str, Any]) -> tuple[Service, Path, str]:
    """Make the demo project in ``base``, start its feature and serve the queue to its end
    with a service configured by ``data``; then close it (the notifiers flush). The service,
    the project root and the state the run stopped in."""
    root = create_demo_project(base / "p").path
    service = configured_service(data)
    init = new_feature(service, root)
    service.start(init.feature, workspace=root, spawn=False)
    serve(service, root)
    state = str(service.status(init.feature, workspace=root)["status"])
    service.close()
    return service, root, state
