"""Who acts through the MCP server: every tool call runs as ``<transport>:<client name>``.

The client names itself in the initialize handshake (``clientInfo.name``); that name, cut down
to a short printable word, is the actor the audit trail records for the call (see
:mod:`tmops_core.service.actor`). It identifies the client program, not a person: over stdio
the person is whoever started ``tmops mcp``. A transport that knows better (HTTP: the id of the
bearer token) builds its own :class:`ActorMiddleware` with ``actor_of``; an inner
:func:`~tmops_core.service.actor.acting_as` overrides an outer one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from tmops_core.service.actor import acting_as, actor_part

__all__ = ["ActorMiddleware", "client_name"]


def client_name(ctx: ServerRequestContext[Any, Any]) -> str:
    """The name the client gave in the initialize handshake (``unknown`` if none)."""
    params = ctx.session.client_params
    info = params.client_info if params is not None else None
    return actor_part(info.name if info is not None else None)


class ActorMiddleware:
    """MCP middleware: each inbound message is handled acting as ``actor_of(ctx)``."""

    def __init__(
        self,
        transport: str = "mcp-stdio",
        actor_of: Callable[[ServerRequestContext[Any, Any]], str] | None = None,
    ) -> None:
        self._actor_of = actor_of or (lambda ctx: f"{transport}:{client_name(ctx)}")

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        with acting_as(self._actor_of(ctx)):
            return await call_next(ctx)
