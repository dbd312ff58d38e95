"""`tmops list` stays linear in the number of features: FEATURES.txt and the queue are read
once per listing, not once per feature (they were: quadratic, 64 ms at 200 features)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tmops_core.service import status as status_module
from tmops_core.service.demo_project import create_demo_project
from tmops_core.store import SQLiteStore
from tmops_core.workspace.features import InitRequest

from .engine_support import in_memory_service, scripted_config

FEATURES = [f"feat-{i:02d}" for i in range(12)]


def test_listing_reads_features_txt_and_the_queue_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = create_demo_project(tmp_path / "p").path
    service = in_memory_service(scripted_config(tmp_path / "state"))
    try:
        for name in FEATURES:
            service.init(InitRequest(feature=name, workspace=root))
        for name in FEATURES[:3]:
            (root / ".tmops" / name / "runs" / "initial" / "TASK_SPEC.md").write_text("# a task\n")
            service.start(name, workspace=root, spawn=False, force=True)
        reads: list[Any] = []
        queue_reads: list[Any] = []
        real_read, real_queued = status_module.read_features, SQLiteStore.queued_runs

        def counted_read(*args: Any) -> Any:
            reads.append(args)
            return real_read(*args)

        def counted_queued(self: SQLiteStore) -> Any:
            queue_reads.append(self)
            return real_queued(self)

        monkeypatch.setattr(status_module, "read_features", counted_read)
        monkeypatch.setattr(SQLiteStore, "queued_runs", counted_queued)
        rows = service.list_features(workspace=root)
    finally:
        service.close()
    assert [row["feature"] for row in rows] == FEATURES
    assert [row["queue_position"] for row in rows[:4]] == [1, 2, 3, None]
    assert (len(reads), len(queue_reads)) == (1, 1)
