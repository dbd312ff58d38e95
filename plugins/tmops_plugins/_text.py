"""An agent's text made short for a progress line or a result message, shared by the stream
parsers: whitespace folded to one line, or a message clipped, an ellipsis marking the cut."""

from __future__ import annotations

__all__ = ["MESSAGE_LIMIT", "PREVIEW", "clip", "one_line"]

#: the longest a one-line preview (a tool's target, a text) is by default
PREVIEW = 200
#: the longest an AgentResult message is
MESSAGE_LIMIT = 1000


def one_line(text: str, limit: int = PREVIEW) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
