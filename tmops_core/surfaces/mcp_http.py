"""The MCP server over the streamable HTTP transport: ``tmops mcp --http``.

The tools, resources and prompts are those of :func:`~tmops_core.surfaces.mcp_server.build_server`,
served by the SDK's own ASGI app at ``/mcp`` under uvicorn; ``GET /metrics`` answers the
project's Prometheus metrics (:class:`MetricsRoute`). In front of both, :class:`RequestGuard`
checks every request, in this order: the Host header (421, against DNS rebinding), the Origin
header (403, against a browser page of another site) and the bearer token (401). The SDK's own
Host/Origin check is off: it answers a wrong Content-Type first, with a 400, and its loopback
defaults accept any port.

The token is ``$TMOPS_HTTP_TOKEN`` or, when unset, ``.tmops/http.token`` of the served project,
made (mode 0600) at the first start and reused after. It is never printed or logged: only where
it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import socket
import stat
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tmops_core.git import Git
from tmops_core.log import logger
from tmops_core.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tmops_core.service.operations import Service
from tmops_core.surfaces.mcp_actor import ActorMiddleware, client_name
from tmops_core.surfaces.mcp_server import build_server
from tmops_core.workspace.features import exclude_tmops
from tmops_core.workspace.layout import TMOPS_DIR, ensure_private_dir, open_dir, open_file
from tmops_hookspecs import TmopsError, WorkspaceError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MCP_PATH",
    "METRICS_PATH",
    "TOKEN_ENV",
    "TOKEN_FILE",
    "MetricsRoute",
    "RequestGuard",
    "load_token",
    "serve_http",
]

DEFAULT_HOST = "127.0.0.1"
#: A fixed default, so a client's registration survives restarts; ``--port 0`` picks a free one.
DEFAULT_PORT = 8765
MCP_PATH = "/mcp"
METRICS_PATH = "/metrics"
TOKEN_ENV = "TMOPS_HTTP_TOKEN"  # noqa: S105  # nosec B105 - the name of the variable
#: The token's file, in the served project's ``.tmops`` folder.
TOKEN_FILE = "http.token"  # noqa: S105  # nosec B105 - a file name
#: A token goes in a header as is: the characters of RFC 6750's b64token, and long enough that
#: guessing it is hopeless (the generated one has 43).
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9\-._~+/]{32,512}=*")
_WILDCARDS = {"", "0.0.0.0", "::"}  # noqa: S104  # nosec B104 - names of "every address"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: The nice value of the thread that computes /metrics (19: the lowest priority).
_METRICS_NICE = 19
#: How long a stop (Ctrl-C, SIGTERM) waits for open streams before closing them.
_GRACEFUL_STOP_S = 5


# --------------------------------------------------------------------------------------------
# The token
# --------------------------------------------------------------------------------------------


def _checked_token(token: str, where: str) -> str:
    if not _TOKEN_SHAPE.fullmatch(token):
        raise TmopsError(
            f"the token in {where} is not usable: it needs at least 32 characters of A-Z, a-z, "
            "0-9 and -._~+/ (the token itself is not shown)",
            hint="e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    return token


def _read_token_file(path: Path) -> str | None:
    """The token in ``path``, refused if anyone but its owner (this user) may read it."""
    try:
        fd = open_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise WorkspaceError(
                f"{path} may be read by others (mode {stat.S_IMODE(info.st_mode):o}, owner "
                f"uid {info.st_uid}), so its token is no secret",
                hint=f"remove it (`rm {path}`): the next start makes a new one",
            )
        data = handle.read(1024)
    return _checked_token(data.decode("ascii", errors="replace").strip(), str(path))


def _create_token_file(path: Path) -> None:
    """Write a new token to ``path`` unless one is there: written whole to a temporary file,
    then linked to its name, which fails if the name exists (two first starts at once agree on
    one token)."""
    folder = open_dir(path.parent)
    temp = f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600, dir_fd=folder)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # the umask may have taken bits off, never on
            handle.write(f"{secrets.token_urlsafe(32)}\n".encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path.name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except PermissionError as exc:
        raise WorkspaceError(
            f"cannot write the token file in {path.parent}: permission denied"
        ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=folder)
        os.close(folder)


def load_token(
    project_root: Path, environ: Mapping[str, str] = os.environ
) -> tuple[str, Path | None]:
    """The bearer token and its file (``None`` when it comes from ``$TMOPS_HTTP_TOKEN``).

    The file is ``<project_root>/.tmops/http.token``, reached without following a link, made
    (0600) with a new token when missing and refused when others may read it."""
    if TOKEN_ENV in environ:
        return _checked_token(environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}"), None
    path = project_root / TMOPS_DIR / TOKEN_FILE
    token = _read_token_file(path)
    if token is None:
        ensure_private_dir(path.parent)
        _create_token_file(path)
        # a secret must not reach a commit (`git add -A`) before any init has excluded .tmops/
        with contextlib.suppress(TmopsError, OSError):
            exclude_tmops(Git(project_root))
        token = _read_token_file(path)
        if token is None:  # pragma: no cover - removed between its creation and this read
            raise WorkspaceError(f"{path} vanished as it was made", hint="start again")
    return token, path


# --------------------------------------------------------------------------------------------
# The guard
# --------------------------------------------------------------------------------------------


def _authority(host: str, port: int) -> str:
    """``host:port`` as a Host header has it (an IPv6 address in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host.lower()}:{port}"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _shown(value: str) -> str:
    """A client's header value in a log line: quoted and short."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


class RequestGuard:
    """ASGI middleware refusing, on every HTTP request: a Host that is not the server's (421),
    then an Origin that is present and not the server's own (403), then a missing or wrong
    ``Authorization: Bearer`` token (401).

    The server's Host is the bound ``host:port``, and the address the connection reached (what a
    client of a wildcard bind names); on loopback, also ``localhost``, ``127.0.0.1`` and
    ``[::1]`` with the port. A rebinding page names its own domain, never one of these."""

    def __init__(self, app: ASGIApp, *, token: str, host: str, port: int) -> None:
        self._app = app
        # Digests of equal length: comparing them says nothing about the token's length.
        self._token_digest = hashlib.sha256(token.encode("ascii")).digest()
        self._host = host
        self._port = port

    def allowed_hosts(self, local: tuple[str, int] | None) -> set[str]:
        """The Host values of this server, for a connection that reached ``local``."""
        names = {self._host} - _WILDCARDS
        if local is not None:
            names.add(local[0])
        ports = {self._port} if local is None else {self._port, local[1]}
        allowed = {_authority(name, port) for name in names for port in ports}
        if any(_is_loopback(name) for name in names):
            allowed |= {f"{name}:{port}" for name in _LOOPBACK_NAMES for port in ports}
        # port 80 may go unnamed in a Host
        allowed |= {value.removesuffix(":80") for value in allowed if value.endswith(":80")}
        return allowed

    def _token_matches(self, authorization: str) -> bool:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(credentials.strip().encode("utf-8", errors="replace")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def refusal(self, scope: Scope) -> PlainTextResponse | None:
        """The answer to a request that may not reach the server, else ``None``."""
        headers = Headers(scope=scope)
        client = scope.get("client")
        source = f"{client[0]}:{client[1]}" if client else "an unknown client"
        allowed = self.allowed_hosts(scope.get("server"))
        hosts = headers.getlist("host")
        if len(hosts) != 1 or hosts[0].lower() not in allowed:
            logger.warning("HTTP 421 to {}: Host {}", source, _shown(", ".join(hosts)))
            return PlainTextResponse("Misdirected request: wrong Host header", status_code=421)
        origins = headers.getlist("origin")
        own = {f"http://{value}" for value in allowed}
        if origins and (len(origins) != 1 or origins[0].lower() not in own):
            logger.warning("HTTP 403 to {}: Origin {}", source, _shown(", ".join(origins)))
            return PlainTextResponse("Forbidden: foreign Origin", status_code=403)
        authorizations = headers.getlist("authorization")
        if len(authorizations) != 1 or not self._token_matches(authorizations[0]):
            # RFC 6750: no error code when no credentials came, invalid_token for wrong ones
            challenge = 'Bearer realm="tmops"'
            if authorizations:
                challenge += ', error="invalid_token"'
            logger.warning(
                "HTTP 401 to {}: {} bearer token", source, "wrong" if authorizations else "no"
            )
            return PlainTextResponse(
                "Unauthorized: send Authorization: Bearer <token>",
                status_code=401,
                headers={"WWW-Authenticate": challenge},
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, send)
            return
        if scope["type"] != "http":  # pragma: no cover - uvicorn runs with ws="none"
            return
        answer = self.refusal(scope)
        if answer is not None:
            await answer(scope, receive, send)
            return
        await self._app(scope, receive, send)


def _background_priority() -> None:
    """Lower this thread's CPU priority (Linux: nice is per thread): a scrape yields to the
    engine and its agents on a busy machine, so it adds nothing to their handoffs."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _METRICS_NICE)


class MetricsRoute:
    """ASGI app answering ``GET /metrics`` with ``exposition()``, read from the store in a
    worker thread of its own at a low CPU priority (off the event loop, one scrape at a time);
    every other request goes on to ``app``."""

    def __init__(self, app: ASGIApp, exposition: Callable[[], bytes]) -> None:
        self._app = app
        self._exposition = exposition
        self._worker = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tmops-metrics", initializer=_background_priority
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != METRICS_PATH:
            await self._app(scope, receive, send)
            return
        answer: Response
        if scope["method"] != "GET":
            answer = PlainTextResponse(
                "Method not allowed: GET /metrics", status_code=405, headers={"Allow": "GET"}
            )
        else:
            try:
                loop = asyncio.get_running_loop()
                body = await loop.run_in_executor(self._worker, self._exposition)
            except Exception as exc:  # a scrape that fails says so; the server goes on
                logger.warning("metrics could not be read: {}: {}", type(exc).__name__, exc)
                answer = PlainTextResponse("metrics could not be read", status_code=500)
            else:
                answer = Response(body, media_type=METRICS_CONTENT_TYPE)
        await answer(scope, receive, send)


# --------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), bound here so the address is known
    (and printed) before serving."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise TmopsError(f"cannot listen on {host!r}: {exc.strerror}") from exc
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise TmopsError(
            f"cannot listen on {_authority(host, port)}: {exc.strerror}",
            hint="pick another --port (0: any free one), or stop what uses it",
        ) from exc
    return listener


def serve_http(
    service: Service,
    *,
    workspace: Path | None = None,
    host: str | None = None,
    port: int | None = None,
) -> None:
    """Serve over the streamable HTTP transport at ``/mcp`` until stopped (Ctrl-C, SIGTERM)."""
    host = DEFAULT_HOST if host is None else host.strip()
    if not host:
        raise TmopsError("--host needs an address, e.g. 127.0.0.1 (the default) or 0.0.0.0")
    project_root = (workspace or Path.cwd()).resolve()
    token, token_file = load_token(project_root)
    listener = _listen(host, DEFAULT_PORT if port is None else port)
    bound_port = int(listener.getsockname()[1])

    def say(line: str) -> None:
        print(f"tmops mcp: {line}", file=sys.stderr, flush=True)

    say(f"serving MCP over HTTP at http://{_authority(host, bound_port)}{MCP_PATH}")
    say(f"Prometheus metrics at http://{_authority(host, bound_port)}{METRICS_PATH} (same token)")
    if token_file is None:
        say(f"bearer token: ${TOKEN_ENV}")
    else:
        say(f"bearer token: in {token_file} (mode 0600)")
    if not _is_loopback(host):
        say("listening beyond this machine: the traffic is plain HTTP; put TLS in front")

    server = build_server(service, workspace=workspace)
    # the audit trail names the token a call came with (by a digest prefix, never the token)
    token_id = hashlib.sha256(token.encode("ascii")).hexdigest()[:12]
    server.middleware.append(
        ActorMiddleware(actor_of=lambda ctx: f"mcp-http:{token_id}:{client_name(ctx)}")
    )
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        # RequestGuard checks Host and Origin first, per connection; see the module's doc
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=host,
    )
    config = uvicorn.Config(
        RequestGuard(
            MetricsRoute(app, lambda: service.metrics_text(workspace)),
            token=token,
            host=host,
            port=bound_port,
        ),
        http="h11",
        ws="none",  # nothing here speaks WebSocket: an upgrade stays a plain request
        loop="asyncio",
        lifespan="on",
        log_config=None,  # tmops's logging stays as it is
        access_log=False,
        proxy_headers=False,  # X-Forwarded-* from anyone would be believed
        server_header=False,
        timeout_graceful_shutdown=_GRACEFUL_STOP_S,
    )
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn stops gracefully, then raises the Ctrl-C again
        say("stopped")
