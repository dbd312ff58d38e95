"""The logger every tmops module writes to: loguru's, imported on its first use.

Importing loguru costs tens of milliseconds (it pulls in asyncio and multiprocessing), which a
read command such as ``tmops status`` that logs nothing should not pay. Modules write
``from tmops_core.log import logger`` and use it as loguru's; :func:`when_loaded` defers a
configuration (the CLI's stderr sink) to that first use.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["logger", "settle", "when_loaded"]

_lock = threading.Lock()
_pending: list[Callable[[Logger], None]] = []


def _loaded() -> Logger:
    from loguru import logger as real

    if _pending:
        with _lock:
            while _pending:
                _pending.pop(0)(real)
    return real


class _Deferred:
    """Stands for loguru's logger until the first attribute is asked for."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_loaded(), name)


#: loguru's logger, imported when first used
logger = cast("Logger", _Deferred())


def when_loaded(configure: Callable[[Logger], None]) -> None:
    """Run ``configure(logger)`` now if loguru is imported already, else on its first use."""
    if "loguru" in sys.modules:
        configure(_loaded())
        return
    with _lock:
        _pending.append(configure)


def settle() -> None:
    """Apply a deferred configuration now if loguru was imported meanwhile by other code (a
    plugin logging through loguru directly must find the redacting sink, not loguru's own)."""
    if _pending and "loguru" in sys.modules:
        _loaded()
