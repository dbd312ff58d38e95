"""Statistics of the benchmarks: percentiles, distributions in ms, ratios and target verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def dist(values_ms: Sequence[float]) -> dict[str, Any]:
    """A distribution in milliseconds: n, p50, p95, min, max, mean."""
    values = [float(v) for v in values_ms]
    if not values:
        return {"n": 0, "p50": None, "p95": None, "min": None, "max": None, "mean": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "mean": round(sum(values) / len(values), 3),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)


def ms(ns: float) -> float:
    return ns / 1e6


def target(name: str, value: float | None, limit: float) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "limit": limit,
        "met": value is not None and value <= limit,
    }
