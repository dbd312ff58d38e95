"""The store's online copy (``tmops backup``): taken while another connection writes, every copy
is whole (it passes ``PRAGMA integrity_check``) and holds whole transactions only."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from tmops_core.store import SQLiteStore
from tmops_core.store.maintenance import copy_database, head_version, inspect_database


def test_copies_taken_while_a_writer_commits_hold_whole_transactions(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".tmops").mkdir(parents=True)
    store = SQLiteStore(root / ".tmops" / "tmops.db")
    stop = threading.Event()
    written = []

    def write_pairs() -> None:
        # each transaction adds two events: a copy with an odd count caught one half-done
        n = 0
        while not stop.is_set():
            with store.transaction() as db:
                for half in ("a", "b"):
                    db.execute(
                        "INSERT INTO events (feature, run, event_type, timestamp, data, "
                        "workspace_id) VALUES (NULL, NULL, ?, '2026-01-01T00:00:00Z', ?, "
                        "'default')",
                        (f"test.{half}", "x" * 2000),
                    )
            n += 1
            written.append(n)

    writer = threading.Thread(target=write_pairs)
    writer.start()
    try:
        counts = []
        for index in range(8):
            while len(written) < (index + 1) * 20:  # let the writer get ahead each time
                stop.wait(0.001)
            copy = tmp_path / f"copy-{index}.db"
            assert copy_database(root / ".tmops" / "tmops.db", copy) == head_version()
            assert copy.stat().st_mode & 0o777 == 0o600
            report = inspect_database(copy)
            assert report.sound, report.integrity
            with sqlite3.connect(copy) as db:
                counts.append(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            db.close()
    finally:
        stop.set()
        writer.join()
        store.close()
    assert all(count % 2 == 0 for count in counts), counts
    assert counts == sorted(counts)
    assert counts[-1] > counts[0] > 0
