"""A session the provider cannot continue is forgotten: the next attempt starts afresh.

The claude-code provider runs the scripted agent (as it runs ``claude``): the orchestrator's
first session ends without a checkpoint, so the retry resumes it; that resume fails the way
``claude --resume`` fails for an unknown session, the provider sets ``resume_failed``, and the
engine (which reads the flag, not the words) runs the third attempt as a fresh session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.engine_support import Finished, run_workflow, scripted_config


@pytest.fixture(scope="module")
def lost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    base = tmp_path_factory.mktemp("lost")
    fault = "orchestrator:no-checkpoint,orchestrator:lost-session"
    finished = run_workflow(base, scripted_config(base / "state", fault=fault, max_retries=2))
    yield finished
    finished.close()


def test_a_failed_resume_is_followed_by_a_fresh_session(lost: Finished) -> None:
    rows = lost.attempts("orchestrator")
    assert [a.attempt for a in rows] == [1, 2, 3]
    assert "resume failed" in (rows[1].message or "")
    started = [
        e["data"] for e in lost.events("session.started") if e["data"]["phase"] == "orchestrator"
    ]
    # resumed once (attempt 2), then afresh: the session that could not be resumed is dropped
    assert [s["resumed"] for s in started] == [False, True, False]
    assert rows[2].session_id != rows[0].session_id
