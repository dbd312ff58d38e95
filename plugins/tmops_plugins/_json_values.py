"""Typed reads of values from an agent CLI's JSON output, shared by the stream parsers: a value
of the wrong type (``true`` for a count, ``""`` for a session id) reads as absent."""

from __future__ import annotations

__all__ = ["count", "number", "text"]


def text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
