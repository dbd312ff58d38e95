"""The notifiers at their process and network boundaries: the webhook against real HTTP servers
on 127.0.0.1 (retries on 503, a 4xx is final, a server that never answers), the desktop
notifier with a stand-in ``notify-send`` on PATH, and a notify command that hangs or fails."""

from __future__ import annotations

import json
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tmops_plugins import notify, notify_settings
from tmops_plugins.notify_delivery import flush_all

from .engine_support import SHORT_WORKFLOW, scripted_config
from .http_support import PostRecorder
from .notify_support import captured_logs, recorded, recorder, run_notified

EVENT = {
    "event": "needs_person", "feature": "auth", "run": "initial", "state": "paused",
    "reason": "awaiting_approval", "message": "awaiting approval before tester",
    "workspace": "default", "project": "/tmp/p", "branch": "feature/auth",
    "time": "2026-01-01T00:00:00+00:00", "duration_s": None,
    "status_command": "tmops status auth --workspace /tmp/p",
}  # fmt: skip
TOKEN = "Bearer hook-token-not-to-be-logged"  # noqa: S105 - a test value


class _Silent:
    """A TCP server that accepts connections and never answers (a hung webhook)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def hook() -> Iterator[PostRecorder]:
    server = PostRecorder([503, 503])
    yield server
    server.close()


def _url(server: PostRecorder) -> str:
    return f"{server.base_url}/hooks/tmops?x=1"


def _deliver(settings: dict[str, Any], timeout_s: float = 30.0) -> None:
    """Post EVENT to the notifiers ``settings`` configure and flush them."""
    outboxes, _ = notify_settings.parse_settings(settings)
    for outbox in outboxes:
        outbox.post(EVENT)
    flush_all(outboxes, timeout_s)


def test_a_webhook_answering_503_twice_gets_the_event_on_the_third_try(
    hook: PostRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMOPS_TEST_HOOK_AUTH", TOKEN)
    settings = {
        "webhook": {
            "url": _url(hook),
            "retries": 3,
            "backoff_s": 0.01,
            "auth_header": "Authorization",
            "auth_env": "TMOPS_TEST_HOOK_AUTH",
        }
    }
    with captured_logs() as logs:
        _deliver(settings)
    assert len(hook.posts) == 3
    for post in hook.posts:
        assert post.path == "/hooks/tmops?x=1"
        assert json.loads(post.body) == EVENT
        assert post.headers["Authorization"] == TOKEN
        assert post.headers["Content-Type"] == "application/json"
    assert sum("503" in line and "again in" in line for line in logs) == 2
    assert not any("not delivered" in line for line in logs)
    assert not any("hook-token" in line for line in logs)


@pytest.mark.parametrize(
    ("statuses", "tries", "says"),
    [
        ([500] * 10, 3, "gave up after 3 tries: HTTP 500"),  # 2 retries, then it gives up
        ([404], 1, "gave up after 1 try: HTTP 404"),  # a 4xx is final
        ([302], 1, "gave up after 1 try: HTTP 302"),  # a redirect is not followed
    ],
)
def test_a_webhook_stops_after_its_retries_or_at_a_final_answer(
    statuses: list[int], tries: int, says: str
) -> None:
    server = PostRecorder(statuses)
    try:
        with captured_logs() as logs:
            _deliver({"webhook": {"url": _url(server), "retries": 2, "backoff_s": 0.01}})
    finally:
        server.close()
    assert len(server.posts) == tries
    assert any(says in line for line in logs)


def test_a_missing_auth_variable_is_said_without_sending(
    hook: PostRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TMOPS_TEST_HOOK_AUTH", raising=False)
    settings = {"webhook": {"url": _url(hook), "auth_header": "Authorization",
                            "auth_env": "TMOPS_TEST_HOOK_AUTH"}}  # fmt: skip
    with captured_logs() as logs:
        _deliver(settings)
    assert hook.posts == []
    assert any("$TMOPS_TEST_HOOK_AUTH is not set" in line for line in logs)


def test_a_webhook_that_never_answers_does_not_hold_the_run_up(tmp_path: Path) -> None:
    """A real run: the hung webhook is tried, given up on, and the run completes normally."""
    silent = _Silent()
    every, every_out = recorder(tmp_path)
    data = scripted_config(tmp_path / "state", default_phases=SHORT_WORKFLOW)
    data["plugins"] = {"settings": {"notify": {
        "webhook": {"url": silent.url, "timeout_s": 0.2, "retries": 1, "backoff_s": 0.01},
        "command": {"argv": every},
    }}}  # fmt: skip
    try:
        with captured_logs() as logs:
            _, _, state = run_notified(tmp_path, data)
    finally:
        silent.close()
    assert state == "completed"
    assert len(silent.held) == 2  # the first try and one retry
    assert any("gave up after 2 tries" in line and "timed out" in line for line in logs)
    # the other notifier is not held up by it
    assert [r["stdin"]["event"] for r in recorded(every_out)] == ["completed"]


# -- desktop ----------------------------------------------------------------------------------


def _fake_notify_send(folder: Path, out: Path) -> Path:
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    program = bin_dir / "notify-send"
    program.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(out)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_the_desktop_notifier_runs_notify_send_with_a_title_and_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "shown.jsonl"
    monkeypatch.setenv("PATH", str(_fake_notify_send(tmp_path, out)))
    _deliver({"desktop": True})
    [argv] = [json.loads(line) for line in out.read_text().splitlines()]
    assert argv[:3] == ["--app-name=tmops", "--urgency=critical", "--"]
    title, body = argv[3:]
    assert title == "tmops: auth needs you (awaiting approval)"
    assert body == "awaiting approval before tester\ntmops status auth --workspace /tmp/p"


def test_without_notify_send_the_desktop_notifier_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    outboxes, _ = notify_settings.parse_settings({"desktop": True})
    with captured_logs() as logs:
        for _ in range(2):
            outboxes[0].post(EVENT)
        flush_all(outboxes, 30.0)
    assert sum("notify-send is not installed" in line for line in logs) == 1
    assert not any("not delivered" in line for line in logs)


# -- a notify command that misbehaves -----------------------------------------------------------


def test_a_command_that_fails_is_logged_with_its_stderr(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.exit('no route to the pager')"]
    with captured_logs() as logs:
        _deliver({"command": {"argv": argv}})
    assert any("exited with 1: no route to the pager" in line for line in logs)


def test_a_command_that_hangs_is_killed_after_its_timeout(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    with captured_logs() as logs:
        _deliver({"command": {"argv": argv, "timeout_s": 0.3}})
    assert any("ran longer than 0.3 s and was killed" in line for line in logs)


def test_the_flush_stops_waiting_at_its_deadline(tmp_path: Path) -> None:
    """What is still queued at the deadline is dropped and said; the flush returns."""
    release = tmp_path / "release"
    wait = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)"
    with captured_logs() as logs:
        _deliver({"command": {"argv": [sys.executable, "-c", wait]}}, timeout_s=0.2)
        release.touch()
    assert any(
        "stopped waiting at the flush deadline; 0 queued notification(s) dropped" in line
        for line in logs
    )


def test_what_was_queued_before_the_plugin_was_configured_again_is_still_flushed(
    tmp_path: Path,
) -> None:
    """tmops loads its plugins once per service: a notification queued under the last settings
    is flushed when tmops is done, whatever came after."""
    slow, out = recorder(tmp_path)
    notify.tmops_configure(settings={"command": {"argv": [*slow, "0.5"]}})
    notify.post(EVENT)
    notify.tmops_configure(settings={})
    notify.tmops_unconfigure()
    assert [r["stdin"] for r in recorded(out)] == [EVENT]
