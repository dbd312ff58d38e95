"""The plugins' log: loguru, imported at the first message, so that a command whose plugins
log nothing (``tmops status``, ``tmops list``) does not pay for importing it. Messages go to
the sink tmops configured (redacting), as with ``from loguru import logger``."""

from __future__ import annotations

from typing import Any

__all__ = ["info", "warning"]


def info(message: str, *args: Any) -> None:
    from loguru import logger

    logger.opt(depth=1).info(message, *args)


def warning(message: str, *args: Any) -> None:
    from loguru import logger

    logger.opt(depth=1).warning(message, *args)
