"""Finding and reading an agent's log (``tmops logs``): ``.tmops/<feature>/runs/<run>/logs/
<role>.log``, the agent's whole output as the supervisor wrote it (secrets redacted).

A part of :class:`~tmops_core.service.operations.Service` (a mixin over its layout and
status). The log is opened without following a link and must stay inside the project's
``.tmops`` folder; it is read in pieces from an offset, so that a follower reads only what was
added.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from tmops_core.workspace.layout import open_file, validate_feature_name, validate_run_name
from tmops_hookspecs import FeatureError

if TYPE_CHECKING:
    from tmops_core.workspace.layout import Layout

__all__ = ["AgentLog", "AgentLogs"]

#: the most one read returns
CHUNK = 64 * 1024


@attrs.frozen
class AgentLog:
    """Where one role's agent log of one run is."""

    feature: str
    run: str
    role: str
    path: Path
    #: the folder the log must stay inside
    root: Path

    def read(self, offset: int = 0, limit: int = CHUNK) -> bytes | None:
        """At most ``limit`` bytes from ``offset`` on; ``None`` while there is no log yet."""
        try:
            fd = open_file(self.path, os.O_RDONLY, root=self.root)
        except FileNotFoundError:
            return None
        try:
            return os.pread(fd, limit, offset)
        finally:
            os.close(fd)


class AgentLogs:
    """The agents' logs, as the surfaces ask for them."""

    if TYPE_CHECKING:

        def _layout(self, workspace: Path | None) -> Layout: ...

        def status(
            self, feature: str, *, workspace: Path | None = None, include_sessions: bool = True,
            include_checkpoints: bool = True, take_over: bool = True,
        ) -> dict[str, Any]: ...  # fmt: skip

    def agent_log(
        self, feature: str, *, role: str | None = None, run: str | None = None,
        workspace: Path | None = None,
    ) -> AgentLog:  # fmt: skip
        """The log of ``role`` (default: the role of the run's current phase, else of its last
        phase that has a log) in ``run`` (default: the feature's current run).

        :raises FeatureError: an unknown feature, run or role, or no log yet for the default.
        """
        validate_feature_name(feature)
        layout = self._layout(workspace)
        status = self.status(
            feature, workspace=workspace, include_sessions=False, include_checkpoints=False,
            take_over=False,
        )  # fmt: skip
        run = validate_run_name(run) if run is not None else status["run"]
        if run is None or run not in layout.runs(feature):
            known = ", ".join(layout.runs(feature)) or "none"
            raise FeatureError(
                f"feature '{feature}' has no run {shown_run(run)}", hint=f"its runs: {known}"
            )
        phases = status["phase_progress"]["phases"]
        roles = [p["role"] for p in phases]
        logs = layout.logs_dir(feature, run)
        if role is None:
            role = self._default_role(status, phases, logs)
        elif role not in roles:
            raise FeatureError(
                f"no role named {role!r} in the workflow", hint=f"the roles: {', '.join(roles)}"
            )
        return AgentLog(feature, run, role, logs / f"{role}.log", layout.tmops_dir)

    @staticmethod
    def _default_role(status: dict[str, Any], phases: list[dict[str, Any]], logs: Path) -> str:
        current = next((p for p in phases if p["phase"] == status["current_phase"]), None)
        if current is not None and os.path.lexists(logs / f"{current['role']}.log"):
            return str(current["role"])
        for phase in reversed(phases):
            if os.path.lexists(logs / f"{phase['role']}.log"):
                return str(phase["role"])
        raise FeatureError(
            f"no agent of {status['feature']} has written a log yet",
            hint=f"`tmops start {status['feature']}` runs its agents; `tmops logs "
            f"{status['feature']} -f --role <role>` waits for one",
        )


def shown_run(run: str | None) -> str:
    return "yet" if run is None else f"'{run}'"
