"""The MCP server over streamable HTTP: a real ``tmops mcp --http`` process, raw HTTP requests
(each refusal: 421, 403, 401), the SDK's streamable HTTP client, 20 sessions at once and
clients that stall. No assertion is timed: the timeouts only keep a broken server from hanging
the suite."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client

from tmops_core.store import SQLiteStore
from tmops_core.surfaces.mcp_http import TOKEN_ENV

from .conftest import git
from .mcp_support import TIMEOUT_S, TMOPS, TOOLS, server_env

_SERVING = re.compile(r"serving MCP over HTTP at http://(\S+?):(\d+)/mcp")
_INITIALIZE = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
    b'"capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}'
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HttpServer:
    """A running ``tmops mcp --http`` and what it printed on stderr."""

    def __init__(self, process: subprocess.Popen[bytes], errlog: Path) -> None:
        self.process = process
        self.errlog = errlog
        deadline = time.monotonic() + TIMEOUT_S  # a guard against a server that never starts
        while not (found := _SERVING.search(self.stderr())):
            assert process.poll() is None, f"the server exited: {self.stderr()}"
            assert time.monotonic() < deadline, f"the server never said where: {self.stderr()}"
            time.sleep(0.05)
        self.port = int(found.group(2))
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def stderr(self) -> str:
        return self.errlog.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT_S)


StartServer = Callable[..., HttpServer]


@pytest.fixture
def start_server(repo: Path, tmp_path: Path) -> Iterator[StartServer]:
    """Start ``tmops mcp --http --port 0 --workspace <repo>`` (plus ``args``); every server
    started is stopped at the end of the test."""
    started: list[HttpServer] = []

    def start(*args: str, **env: str) -> HttpServer:
        errlog = tmp_path / f"server-{len(started)}.err"
        with errlog.open("wb") as err:
            process = subprocess.Popen(
                [str(TMOPS), "mcp", "--http", "--port", "0", "--workspace", str(repo), *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                cwd=tmp_path / "work", env=server_env(**env),
            )  # fmt: skip
        try:
            server = HttpServer(process, errlog)
        except BaseException:
            process.kill()
            process.wait()
            raise
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def token_of(repo: Path) -> str:
    return (repo / ".tmops" / "http.token").read_text().strip()


def raw_post(
    port: int, headers: dict[str, str], body: bytes = _INITIALIZE, *, host: str | None = None
) -> http.client.HTTPResponse:
    """POST /mcp with exactly ``headers`` (and the Host ``host``, default the server's)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    connection.putrequest("POST", "/mcp", skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", host or f"127.0.0.1:{port}")
    for name, value in {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Content-Length": str(len(body)),
        **headers,
    }.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def http_client(token: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(TIMEOUT_S),
    )


# -- the refusals -----------------------------------------------------------------------------


def test_each_refusal_has_its_code_in_order_host_origin_token(
    start_server: StartServer, repo: Path
) -> None:
    server = start_server()
    token = token_of(repo)
    good = {"Authorization": f"Bearer {token}"}
    port = server.port

    no_token = raw_post(port, {})
    wrong_token = raw_post(port, {"Authorization": "Bearer " + "x" * 43})
    other_scheme = raw_post(port, {"Authorization": f"Basic {token}"})
    foreign_origin = raw_post(port, {**good, "Origin": "http://evil.example"})
    wrong_host = raw_post(port, good, host=f"evil.example:{port}")
    wrong_port = raw_post(port, good, host=f"127.0.0.1:{port + 1}")
    # the order: Host first, then Origin, then the token
    everything_wrong = raw_post(port, {"Origin": "http://evil.example"}, host="evil.example")
    origin_and_token_wrong = raw_post(port, {"Origin": "http://evil.example"})

    assert no_token.status == 401
    assert no_token.getheader("WWW-Authenticate") == 'Bearer realm="tmops"'
    assert wrong_token.status == 401
    assert (wrong_token.getheader("WWW-Authenticate") or "").startswith("Bearer ")
    assert 'error="invalid_token"' in (wrong_token.getheader("WWW-Authenticate") or "")
    assert other_scheme.status == 401
    assert foreign_origin.status == 403
    assert wrong_host.status == 421
    assert wrong_port.status == 421
    assert everything_wrong.status == 421
    assert origin_and_token_wrong.status == 403

    # the server's own names pass: loopback equivalents, and its own Origin
    assert raw_post(port, good).status == 200
    assert raw_post(port, good, host=f"localhost:{port}").status == 200
    assert raw_post(port, {**good, "Origin": f"http://localhost:{port}"}).status == 200
    assert raw_post(port, {"authorization": f"bearer {token}"}).status == 200
    # two Authorization headers: which one counts is ambiguous, so neither does
    assert raw_post(port, {**good, "authorization": f"Bearer {token}"}).status == 401

    stderr = server.stderr()
    assert "HTTP 421" in stderr
    assert "HTTP 403" in stderr
    assert "HTTP 401" in stderr
    assert token not in stderr


def test_the_token_file_is_private_and_reused_and_never_shown(
    start_server: StartServer, repo: Path
) -> None:
    first = start_server()
    path = repo / ".tmops" / "http.token"
    token = token_of(repo)
    mode = stat.S_IMODE(path.lstat().st_mode)
    first.stop()
    second = start_server()

    assert mode == 0o600
    assert stat.S_IMODE((repo / ".tmops").lstat().st_mode) == 0o700
    assert len(token) >= 32
    assert token_of(repo) == token  # reused, not made again
    for server in (first, second):
        assert f"bearer token: in {path} (mode 0600)" in server.stderr()
        assert token not in server.stderr()
    assert raw_post(second.port, {"Authorization": f"Bearer {token}"}).status == 200
    # kept out of git before any `tmops init` did it: `git add -A` never commits the token
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_token_from_the_environment_makes_no_file(start_server: StartServer, repo: Path) -> None:
    token = "env-token-" + "a" * 40
    server = start_server(**{TOKEN_ENV: token})

    assert "bearer token: $TMOPS_HTTP_TOKEN" in server.stderr()
    assert token not in server.stderr()
    assert not (repo / ".tmops" / "http.token").exists()
    assert raw_post(server.port, {"Authorization": f"Bearer {token}"}).status == 200
    assert raw_post(server.port, {}).status == 401


def test_any_address_still_needs_the_token(start_server: StartServer, repo: Path) -> None:
    server = start_server("--host", "0.0.0.0")  # noqa: S104 - what is tested
    token = token_of(repo)

    assert "serving MCP over HTTP at http://0.0.0.0:" in server.stderr()
    assert "put TLS in front" in server.stderr()
    assert raw_post(server.port, {}).status == 401
    assert raw_post(server.port, {"Authorization": "Bearer wrong"}).status == 401
    assert raw_post(server.port, {}, host=f"evil.example:{server.port}").status == 421
    # the address the connection reached is the server's own Host
    assert raw_post(server.port, {"Authorization": f"Bearer {token}"}).status == 200


# -- the SDK's streamable HTTP client ---------------------------------------------------------


@pytest.mark.anyio
async def test_the_sdk_client_lists_tools_inits_and_reads_status(
    start_server: StartServer, repo: Path
) -> None:
    server = start_server()
    token = token_of(repo)
    with anyio.fail_after(TIMEOUT_S):
        async with (
            http_client(token) as client,
            streamable_http_client(server.url, http_client=client) as (read, write),
            ClientSession(read, write) as session,
        ):
            hello = await session.initialize()
            tools = (await session.list_tools()).tools
            init = await session.call_tool("tmops_init_feature", {"feature": "auth-api"})
            status = await session.call_tool("tmops_get_status", {"feature": "auth-api"})
            prompts = (await session.list_prompts()).prompts
            resources = (await session.list_resource_templates()).resource_templates

    assert hello.server_info.name == "tmops"
    assert {tool.name for tool in tools} == TOOLS
    assert init.is_error is False
    assert init.structured_content is not None
    assert init.structured_content["workspace"] == str(repo)
    assert Path(init.structured_content["task_spec"]).is_file()
    assert status.is_error is False
    assert status.structured_content is not None
    assert status.structured_content["feature"] == "auth-api"
    assert status.structured_content["next_action"].startswith("edit TASK_SPEC.md")
    assert "tester" in {prompt.name for prompt in prompts}
    assert resources
    # the audit trail names the token by its digest, never the token itself
    store = SQLiteStore.open_existing(repo / ".tmops" / "tmops.db")
    assert store is not None
    try:
        actors = {json.loads(row["data"]).get("actor") for row in store.events_for("auth-api")}
    finally:
        store.close()
    token_id = hashlib.sha256(token.encode()).hexdigest()[:12]
    assert actors == {f"mcp-http:{token_id}:mcp"}, actors


@pytest.mark.anyio
async def test_the_sdk_client_without_the_token_is_refused(
    start_server: StartServer, repo: Path
) -> None:
    server = start_server()
    with anyio.fail_after(TIMEOUT_S), pytest.raises(Exception) as refused:  # noqa: PT011
        async with (
            http_client("not-the-token") as client,
            streamable_http_client(server.url, http_client=client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
    # the SDK reports a generic error; the server says what it refused
    assert "Server returned an error response" in repr(refused.value)
    assert "HTTP 401" in server.stderr()
    assert "wrong bearer token" in server.stderr()


@pytest.mark.anyio
async def test_twenty_sessions_at_once_all_succeed(start_server: StartServer, repo: Path) -> None:
    server = start_server()
    token = token_of(repo)
    answers: dict[int, tuple[str, str, str]] = {}

    async def one_session(index: int) -> None:
        async with (
            http_client(token) as client,
            Client(streamable_http_client(server.url, http_client=client)) as session,
        ):
            tools = await session.list_tools()
            listing = await session.call_tool("tmops_list_features", {})
            status = await session.call_tool("tmops_get_status", {"feature": "shared"})
            assert {tool.name for tool in tools.tools} == TOOLS
            assert listing.is_error is False
            assert status.is_error is False, status
            assert status.structured_content is not None
            answers[index] = (
                listing.structured_content["features"][0]["feature"]
                if listing.structured_content
                else "",
                status.structured_content["feature"],
                status.structured_content["status"],
            )

    with anyio.fail_after(TIMEOUT_S * 3):
        async with (
            http_client(token) as client,
            Client(streamable_http_client(server.url, http_client=client)) as first,
        ):
            init = await first.call_tool("tmops_init_feature", {"feature": "shared"})
        assert init.is_error is False
        async with anyio.create_task_group() as group:
            for index in range(20):
                group.start_soon(one_session, index)

    assert sorted(answers) == list(range(20))
    assert set(answers.values()) == {("shared", "shared", "initialized")}


# -- clients that stall -----------------------------------------------------------------------


def _stalled_sockets(port: int, token: str, session_id: str) -> list[socket.socket]:
    """Connections that never finish: half a request line, headers without their end, a body
    shorter than its Content-Length, and an open event stream that is never read."""
    host = f"127.0.0.1:{port}"
    partial = [
        b"POST /mc",
        f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bear".encode(),
        (
            f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"Mcp-Session-Id: {session_id}\r\nContent-Length: 4000\r\n\r\n"
            '{"jsonrpc":"2.0","id":7,"meth'
        ).encode(),
        (
            f"GET /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Accept: text/event-stream\r\nMcp-Session-Id: {session_id}\r\n"
            "Mcp-Protocol-Version: 2025-06-18\r\n\r\n"
        ).encode(),
    ]
    stalled = []
    for data in partial * 3:
        connection = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        connection.sendall(data)
        stalled.append(connection)
    return stalled


@pytest.mark.anyio
async def test_stalled_clients_do_not_block_the_others(
    start_server: StartServer, repo: Path
) -> None:
    server = start_server()
    token = token_of(repo)
    opened = raw_session(server.port, token)
    stalled = _stalled_sockets(server.port, token, opened)
    try:
        with anyio.fail_after(TIMEOUT_S):
            async with (
                http_client(token) as client,
                Client(streamable_http_client(server.url, http_client=client)) as session,
            ):
                init = await session.call_tool("tmops_init_feature", {"feature": "busy-day"})
                status = await session.call_tool("tmops_get_status", {"feature": "busy-day"})
                listing = await session.call_tool("tmops_list_features", {})
        assert raw_post(server.port, {"Authorization": f"Bearer {token}"}).status == 200
    finally:
        for connection in stalled:
            connection.close()
    assert init.is_error is False
    assert status.is_error is False
    assert listing.is_error is False
    assert server.process.poll() is None


def raw_session(port: int, token: str) -> str:
    """A session opened with a raw initialize (and its initialized notification): its id."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    connection.request("POST", "/mcp", body=_INITIALIZE, headers=headers)
    response = connection.getresponse()
    response.read()
    session_id = response.getheader("Mcp-Session-Id")
    assert response.status == 200
    assert session_id
    notification = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
    headers |= {"Mcp-Session-Id": session_id, "Mcp-Protocol-Version": "2025-06-18"}
    connection.request("POST", "/mcp", body=notification, headers=headers)
    response = connection.getresponse()
    response.read()
    assert response.status == 202
    connection.close()
    return session_id


def test_host_and_port_need_http(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(TMOPS), "mcp", "--port", "8765"],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path / "work",
        env=server_env(), stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    blank = subprocess.run(
        [str(TMOPS), "mcp", "--http", "--host", " "],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path / "work",
        env=server_env(), stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--host and --port go with --http" in result.stderr
    assert blank.returncode == 1
    assert "--host needs an address" in blank.stderr
    assert not os.listdir(tmp_path / "work")  # no token file made for either


def test_a_busy_port_is_refused_with_a_hint(repo: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [str(TMOPS), "mcp", "--http", "--port", str(port), "--workspace", str(repo)],
            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path / "work",
            env=server_env(), stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "pick another --port (0: any free one)" in result.stderr
    assert "Traceback" not in result.stderr
