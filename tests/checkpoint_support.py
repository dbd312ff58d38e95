"""Helpers shared by the tests of ``tmops_core.checkpoints`` (``test_checkpoint*.py``)."""

from __future__ import annotations

from pathlib import Path

from tmops_core.checkpoints.parse import parse_checkpoint
from tmops_hookspecs import Checkpoint

# The header-block example of the TeamOps v6 reference, verbatim.
UPSTREAM_HEADER_BLOCK = """\
# Checkpoint: 004-impl-trigger.md
**From:** Orchestrator
**To:** Implementer
**Timestamp:** 2025-08-20 09:34:30
**Feature:** hello-api
**Run:** initial
## Action Required ...
## Expected Response ...
"""


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def parse(tmp_path: Path, text: str | bytes, name: str = "003-tests-complete.md") -> Checkpoint:
    return parse_checkpoint(write(tmp_path, name, text))
