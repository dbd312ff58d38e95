"""The redaction of secrets (:mod:`tmops_core.secrets`) and its choke points: the event bus, the
store (event data, errors, attempt messages) and the agent's log file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tmops_core.events import EventBus
from tmops_core.secrets import REDACTED, is_secret_key, redact_data, redact_json_text, redact_text
from tmops_core.store import FeatureRecord, RunRecord, SQLiteStore
from tmops_hookspecs import Event

SHAPES = [
    "sk-ant-api03-Zq8Kx2Lm7Np4Rt6Vw9Yb1Cd3",
    "sk-proj-Hj3Kl5Mn7Pq9Rs1Tu3VwXy",
    "ghp_R4nd0mT0k3nV4lu3F0rT3st1ng0001",
    "gho_R4nd0mT0k3nV4lu3F0rT3st1ng0002",
    "ghs_R4nd0mT0k3nV4lu3F0rT3st1ng0003",
    "ghu_R4nd0mT0k3nV4lu3F0rT3st1ng0004",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstu",
    "xoxb-2468013579-1357924680-AbCdEfGhIjKl",
    "xoxp-2468013579-1357924680-AbCdEfGhIjKm",
    "AKIAQ7XZ3K5M2N4P6R8T",
]


@pytest.mark.parametrize("token", SHAPES)
def test_token_shapes_are_hidden_anywhere_in_text(token: str) -> None:
    shown = redact_text(f"the agent said ({token}) twice: {token}.")
    assert token not in shown
    assert shown == f"the agent said ({REDACTED}) twice: {REDACTED}."


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://bob:hunter2@gw.example/v1", "https://***@gw.example/v1"),
        ("git clone ssh://git:pw@host/repo.git", "git clone ssh://***@host/repo.git"),
        ("GH_PAT=patvalue ok", f"GH_PAT={REDACTED} ok"),
        ('{"db_password": "pw1"}', f'{{"db_password": "{REDACTED}"}}'),
        ('"content":"MY_TOKEN: abc\\nnext"', f'"content":"MY_TOKEN: {REDACTED}\\nnext"'),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
         f"aws_secret_access_key = {REDACTED}"),
        ("Authorization: Bearer abc.def", f"Authorization: {REDACTED}"),
        ("https://proxy.example/v1 path=/tmp/x patch: 3", "https://proxy.example/v1 path=/tmp/x "
         "patch: 3"),
    ],
)  # fmt: skip
def test_credentials_and_secret_assignments_are_hidden(text: str, shown: str) -> None:
    assert redact_text(text) == shown
    assert redact_text(shown) == shown  # idempotent


def test_keys_name_a_secret_by_their_words() -> None:
    for key in ("GH_PAT", "ANTHROPIC_API_KEY", "db_password", "apiKey", "Token", "client-secret"):
        assert is_secret_key(key), key
    for key in ("path", "patch", "PATH", "keys", "monkey", "max_turns", "compat", "base_url"):
        assert not is_secret_key(key), key


def test_data_is_redacted_recursively_and_left_unchanged() -> None:
    data = {"env": {"GH_PAT": "x", "URL": "http://u:p@h"}, "n": [1, "xoxb-1234567890-abc"]}
    assert redact_data(data) == {
        "env": {"GH_PAT": REDACTED, "URL": "http://***@h"},
        "n": [1, REDACTED],
    }
    assert data["env"]["GH_PAT"] == "x"
    assert json.loads(redact_json_text('{"token": 5, "note": "ok"}')) == {
        "token": REDACTED,
        "note": "ok",
    }


def test_the_event_bus_hands_sinks_redacted_data() -> None:
    seen: list[Event] = []

    class Sink:
        def emit(self, event: Event) -> None:
            seen.append(event)

        def close(self) -> None:
            pass

    bus = EventBus([("memory", Sink())])
    event = bus.emit("x.y", {"api_key": "k-1", "url": "https://a:b@h", "message": SHAPES[0]})
    assert dict(event.data) == {"api_key": REDACTED, "url": "https://***@h", "message": REDACTED}
    assert seen == [event]


def test_the_store_keeps_no_secret_in_events_errors_or_attempts(tmp_path: Path) -> None:
    path = tmp_path / "tmops.db"
    store = SQLiteStore(path)
    now = "2026-01-01T00:00:00Z"
    store.record_init(
        FeatureRecord("feat", "feature/feat", str(tmp_path), "worktree", "initial", "initialized",
                      now, now),
        RunRecord("feat", "initial", "initialized", now, now),
    )  # fmt: skip
    store.queue_run("feat", "initial", run_id="r1", provider="p", now=now)
    store.add_event("feat", "initial", "x", json.dumps({"token": "tok-1", "m": SHAPES[2]}), now)
    store.fail_queued_run("feat", "initial", error=f"gateway https://u:pw-2@h said {SHAPES[7]}",
                          now=now)  # fmt: skip
    run = store.run("feat", "initial")
    assert run is not None
    assert run.last_error == f"gateway https://***@h said {REDACTED}"
    assert json.loads(store.events_for("feat")[0]["data"]) == {"token": REDACTED, "m": REDACTED}
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for secret in (b"tok-1", b"pw-2", SHAPES[2].encode(), SHAPES[7].encode()):
        assert secret not in raw
    store.close()
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
