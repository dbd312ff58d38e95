"""The parts of ``tmops mcp --http`` that need no server: the token file's safety and the
guard's answers (the real server is tested in tests/test_mcp_http.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx2
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from tmops_core.surfaces.mcp_http import TOKEN_ENV, RequestGuard, load_token
from tmops_hookspecs import TmopsError, WorkspaceError

TOKEN = "t" * 43


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_new_token_is_made_once_0600_then_reused(tmp_path: Path) -> None:
    token, path = load_token(tmp_path, environ={})
    again, same_path = load_token(tmp_path, environ={})

    assert path == same_path == tmp_path / ".tmops" / "http.token"
    assert again == token
    assert len(token) >= 32
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["http.token"]  # no temporary file left


def test_the_environment_wins_and_makes_no_file(tmp_path: Path) -> None:
    assert load_token(tmp_path, environ={TOKEN_ENV: f" {TOKEN}\n"}) == (TOKEN, None)
    assert not (tmp_path / ".tmops").exists()


@pytest.mark.parametrize("value", ["", "short", "a" * 31, "a" * 40 + " b", "é" * 40])
def test_an_unusable_environment_token_is_refused_without_showing_it(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(TmopsError, match=r"\$TMOPS_HTTP_TOKEN is not usable") as refused:
        load_token(tmp_path, environ={TOKEN_ENV: value})
    assert value.strip() == "" or value not in str(refused.value)


def test_a_token_file_others_may_read_is_refused(tmp_path: Path) -> None:
    _, path = load_token(tmp_path, environ={})
    assert path is not None
    path.chmod(0o640)
    with pytest.raises(WorkspaceError, match="may be read by others") as refused:
        load_token(tmp_path, environ={})
    assert path.read_text().strip() not in str(refused.value)


def test_a_link_in_place_of_the_token_file_is_refused_and_its_target_untouched(
    tmp_path: Path,
) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("not a token\n")
    (tmp_path / ".tmops").mkdir(mode=0o700)
    (tmp_path / ".tmops" / "http.token").symlink_to(target)

    with pytest.raises(WorkspaceError, match="symlink"):
        load_token(tmp_path, environ={})
    assert target.read_text() == "not a token\n"


def test_a_linked_tmops_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / ".tmops").symlink_to(elsewhere)

    with pytest.raises(WorkspaceError, match="symlink"):
        load_token(project, environ={})
    assert os.listdir(elsewhere) == []


def _scope(headers: dict[str, str], server: tuple[str, int] = ("127.0.0.1", 8765)) -> Scope:
    return {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": server,
        "client": ("127.0.0.1", 40000),
    }


def _status(guard: RequestGuard, headers: dict[str, str], **scope: tuple[str, int]) -> int:
    answer = guard.refusal(_scope({"Authorization": f"Bearer {TOKEN}", **headers}, **scope))
    return 200 if answer is None else answer.status_code


async def _app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
    raise AssertionError("never called")


def test_loopback_names_pass_with_the_port_only() -> None:
    guard = RequestGuard(_app, token=TOKEN, host="127.0.0.1", port=8765)
    for host in ("127.0.0.1:8765", "localhost:8765", "LOCALHOST:8765", "[::1]:8765"):
        assert _status(guard, {"Host": host}) == 200, host
    for host in ("127.0.0.1", "localhost:80", "127.0.0.1:8766", "evil.example:8765", ""):
        assert _status(guard, {"Host": host}) == 421, host
    assert _status(guard, {"Host": "localhost:8765", "Origin": "http://127.0.0.1:8765"}) == 200
    assert _status(guard, {"Host": "localhost:8765", "Origin": "https://127.0.0.1:8765"}) == 403
    assert _status(guard, {"Host": "localhost:8765", "Origin": "null"}) == 403


def test_a_wildcard_bind_accepts_the_address_reached_and_never_the_wildcard() -> None:
    guard = RequestGuard(_app, token=TOKEN, host="0.0.0.0", port=8765)  # noqa: S104
    lan = {"server": ("192.168.1.20", 8765)}
    assert _status(guard, {"Host": "192.168.1.20:8765"}, **lan) == 200
    assert _status(guard, {"Host": "0.0.0.0:8765"}, **lan) == 421
    assert _status(guard, {"Host": "localhost:8765"}, **lan) == 421  # not a loopback connection
    assert _status(guard, {"Host": "rebound.example:8765"}, **lan) == 421
    assert _status(guard, {"Host": "localhost:8765"}) == 200  # a loopback connection


def test_a_named_or_ipv6_host_and_port_80() -> None:
    named = RequestGuard(_app, token=TOKEN, host="tmops.lan", port=80)
    on_lan = {"server": ("10.0.0.5", 80)}
    assert _status(named, {"Host": "tmops.lan"}, **on_lan) == 200
    assert _status(named, {"Host": "tmops.lan:80"}, **on_lan) == 200
    assert _status(named, {"Host": "other.lan"}, **on_lan) == 421
    ipv6 = RequestGuard(_app, token=TOKEN, host="::1", port=8765)
    assert _status(ipv6, {"Host": "[::1]:8765"}, server=("::1", 8765)) == 200
    assert _status(ipv6, {"Host": "localhost:8765"}, server=("::1", 8765)) == 200


def test_the_token_check() -> None:
    guard = RequestGuard(_app, token=TOKEN, host="127.0.0.1", port=8765)
    host = {"Host": "127.0.0.1:8765"}
    assert guard.refusal(_scope({**host, "Authorization": f"Bearer {TOKEN}"})) is None
    assert guard.refusal(_scope({**host, "Authorization": f"BEARER  {TOKEN} "})) is None
    for value in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN, f"Basic {TOKEN}", "Bearer"):
        answer = guard.refusal(_scope({**host, "Authorization": value}))
        assert answer is not None
        assert answer.status_code == 401, value
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="tmops", error="invalid_token"'
    missing = guard.refusal(_scope(host))
    assert missing is not None
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="tmops"'


@pytest.mark.anyio
async def test_the_guard_as_asgi_answers_before_the_app_and_passes_the_rest() -> None:
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])
        await PlainTextResponse("through")(scope, receive, send)

    guard = RequestGuard(app, token=TOKEN, host="127.0.0.1", port=8765)
    transport = httpx2.ASGITransport(app=guard)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as client:
        refused = await client.post("/mcp", headers={"Authorization": "Bearer nope"})
        passed = await client.post("/mcp", headers={"Authorization": f"Bearer {TOKEN}"})
        elsewhere = await client.get("/other", headers={"Host": "evil.example:8765"})

    assert refused.status_code == 401
    assert passed.status_code == 200
    assert passed.text == "through"
    assert elsewhere.status_code == 421
    assert reached == ["/mcp"]
