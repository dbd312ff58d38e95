"""A run driven by a real ``tmops engine`` process (as ``start`` spawns it), for the tests of
what an engine must finish before it exits (notifications, exported spans)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tmops_core.service.demo_project import create_demo_project

from .engine_support import WAIT_S, file_service, new_feature, write_config

TMOPS = str(Path(sys.executable).with_name("tmops"))


def run_in_engine_process(
    base: Path, data: Mapping[str, Any], *, before_engine: Callable[[], None] = lambda: None
) -> None:
    """Queue the demo feature's run with the config ``data`` (written to a file), then serve it
    with ``tmops engine`` until the process exits (idle); ``before_engine`` runs just before."""
    config = write_config(base / "tmops.yaml", data)
    root = create_demo_project(base / "p").path
    service = file_service(config)
    init = new_feature(service, root)
    service.start(init.feature, workspace=root, spawn=False)
    service.close()
    before_engine()
    engine = subprocess.run(
        [TMOPS, "--config", str(config), "engine", "--workspace", str(root), "--idle-exit", "0.1"],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert engine.returncode == 0, engine.stderr
