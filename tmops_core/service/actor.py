"""Who acts: the actor every audit event of a person's operation names.

A surface says who is acting, once, and the :class:`~tmops_core.service.operations.Service`
stamps it on the events of every mutating operation (init, start, pause, resume, retry,
approve, rollback, cancel, prompt), on the bus and in the store's audit trail:

- a surface serving one person sets ``service.actor`` once: the CLI sets ``cli:<OS user>``;
- a surface serving several callers in one process (each MCP connection, each HTTP request)
  wraps the handling of each call in :func:`acting_as`, a context variable that overrides
  ``service.actor`` for that call only (it follows the call into worker threads started with
  ``anyio.to_thread``): MCP over stdio acts as ``mcp-stdio:<client name>`` (the name the client
  gave in the initialize handshake), MCP over HTTP as ``mcp-http:<token id>``.

The OS user is taken from the process's effective uid, not from ``$USER`` (which any caller
can set), and a client's self-chosen name is cut down to a short, printable word: an actor
never carries newlines or escape codes into logs and terminals.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["acting_as", "actor_part", "cli_actor", "current_actor", "os_user"]

_ACTING: ContextVar[str | None] = ContextVar("tmops_actor", default=None)
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")
_MAX_PART = 64


def os_user() -> str:
    """The name of the user this process runs as (its uid when the name is unknown)."""
    uid = os.geteuid()
    try:
        return actor_part(pwd.getpwuid(uid).pw_name)
    except KeyError:
        return f"uid-{uid}"


def cli_actor() -> str:
    return f"cli:{os_user()}"


def actor_part(text: str | None) -> str:
    """``text`` (a client's name, a token id) as one short printable word; ``unknown`` if none."""
    cleaned = _UNSAFE.sub("-", (text or "").strip()).strip("-")[:_MAX_PART]
    return cleaned or "unknown"


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Within the block (this task or thread and those it starts), operations act as ``actor``."""
    token = _ACTING.set(actor)
    try:
        yield
    finally:
        _ACTING.reset(token)


def current_actor(default: str) -> str:
    """The actor set by :func:`acting_as` around this call, else ``default`` (the service's)."""
    return _ACTING.get() or default
