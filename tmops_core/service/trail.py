"""Reading the audit trail (``tmops events``): the store's events, of one feature or all, from a
time on, each with the actor that caused it.

A part of :class:`~tmops_core.service.operations.Service` (a mixin over its store and layout).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmops_core.workspace.layout import iso, utc_now, validate_feature_name
from tmops_hookspecs import FeatureError

if TYPE_CHECKING:
    from tmops_core.store import Store
    from tmops_core.workspace.layout import Layout

__all__ = ["Trail", "parse_since"]

_RELATIVE = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> str:
    """``--since``: an ISO 8601 time (``2026-12-01T09:00``, ``2026-12-01``; UTC unless it says
    otherwise) or an age (``30s``, ``10m``, ``2h``, ``3d``, ``1w``), as the store writes times.

    :raises FeatureError: neither.
    """
    relative = _RELATIVE.fullmatch(text.strip())
    if relative is not None:
        amount, unit = int(relative.group(1)), relative.group(2)
        return iso((now or utc_now()) - timedelta(**{_UNITS[unit]: amount}))
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FeatureError(
            f"--since {text!r} is neither an ISO time nor an age",
            hint="write e.g. 2026-12-01T09:00:00Z, 2026-12-01, 10m, 2h or 3d",
        ) from None
    return iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


class Trail:
    """The audit trail, as data for the surfaces."""

    if TYPE_CHECKING:

        def _layout(self, workspace: Path | None) -> Layout: ...

        def _store(self, layout: Layout, *, create: bool) -> Store | None: ...

    def audit_trail(
        self, feature: str | None = None, *, since: str | None = None, after_id: int = 0,
        workspace: Path | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """The recorded events (of ``feature``, else of every feature) after ``after_id`` and
        at or after ``since`` (see :func:`parse_since`), oldest first, each with its
        ``workspace`` as telemetry's events have it. A project tmops never wrote to has none."""
        if feature is not None:
            validate_feature_name(feature)
        store = self._store(self._layout(workspace), create=False)
        if store is None:
            return []
        rows = store.audit_trail(
            feature, after_id=after_id, since=None if since is None else parse_since(since)
        )
        events = []
        for row in rows:
            data = json.loads(row["data"])
            events.append(
                {
                    "id": row["id"],
                    "timestamp": row["timestamp"],
                    "feature": row["feature"],
                    "run": row["run"],
                    "event_type": row["event_type"],
                    "workspace": row["workspace_id"],
                    "actor": data.get("actor") if isinstance(data, dict) else None,
                    "data": data,
                }
            )
        return events
