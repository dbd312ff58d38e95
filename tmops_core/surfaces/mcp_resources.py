"""The MCP server's resources: what the features of the server's workspace look like, read only.

``tmops://features`` lists the features; three templates read one feature: its status, one
checkpoint of its current run and its SUMMARY.md. A read never starts anything (the status is
read with ``take_over=False``, unlike ``tmops_get_status``) and never writes.

Safety: the feature name is validated, a checkpoint must be a plain file name that the
feature's status lists, and every file is opened from the project root one component at a time
without following a link (:func:`~tmops_core.workspace.layout.read_checked`), so nothing outside
the run's checkpoint folder can be read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.mcpserver.resources.templates import ResourceSecurity

from tmops_core.service.operations import Service
from tmops_core.service.status import find_project_root
from tmops_core.workspace.layout import (
    Layout,
    lstat_checked,
    read_checked,
    shown,
    validate_feature_name,
)
from tmops_hookspecs import FeatureError, TmopsError, WorkspaceError

__all__ = [
    "CHECKPOINT_URI",
    "FEATURES_URI",
    "MAX_READ_BYTES",
    "STATUS_URI",
    "SUMMARY_URI",
    "add_resources",
]

FEATURES_URI = "tmops://features"
STATUS_URI = "tmops://features/{feature}/status"
CHECKPOINT_URI = "tmops://features/{feature}/checkpoints/{name}"
SUMMARY_URI = "tmops://features/{feature}/summary"
#: checkpoints are a page of markdown: a bigger file is refused rather than sent whole
MAX_READ_BYTES = 1024 * 1024
SUMMARY_NAME = "SUMMARY.md"

# The SDK's own path checks would refuse '../x' as just "Unknown resource"; the checks below
# refuse all of that and more (a strict name, listed by status) and say why.
_OWN_CHECKS = ResourceSecurity(exempt_params=frozenset({"feature", "name"}))


def _feature(feature: str) -> str:
    try:
        return validate_feature_name(feature)
    except FeatureError as exc:
        raise ResourceNotFoundError(str(exc)) from exc


def _checkpoint_name(name: str) -> str:
    """A plain file name: anything that could leave the checkpoint folder is refused."""
    if not name or "/" in name or "\\" in name or "\0" in name or ".." in name or name[0] == ".":
        raise ResourceNotFoundError(
            f"invalid checkpoint name {name[:60]!r}: a checkpoint is a plain file name (no '/', "
            "no '..', not starting with '.') that the feature's status lists, e.g. "
            "001-discovery-trigger.md"
        )
    return name


class _Reader:
    """The reads behind the resources, all on the server's workspace."""

    def __init__(self, service: Service, workspace: Path) -> None:
        self.service = service
        self.workspace = workspace

    def features(self) -> str:
        try:
            rows = self.service.list_features(workspace=self.workspace)
            total = self.service.project_cost(workspace=self.workspace)
            # with a budget, as tmops_list_features has it; a read keeps no sizes
            disk = self.service.worktree_disk(workspace=self.workspace, keep=False)
        except TmopsError as exc:
            raise ResourceError(str(exc)) from exc
        answer = {"features": rows, "total_cost_usd": total}
        return json.dumps({**answer, **({"worktree_disk": disk} if disk else {})}, indent=2)

    def status(self, feature: str) -> dict[str, Any]:
        _feature(feature)
        try:
            # take_over=False: reading a resource must never start an engine
            return self.service.status(feature, workspace=self.workspace, take_over=False)
        except FeatureError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except TmopsError as exc:
            raise ResourceError(str(exc)) from exc

    def status_json(self, feature: str) -> str:
        return json.dumps(self.status(feature), indent=2)

    def _run_folder(self, status: dict[str, Any]) -> tuple[Layout, Path]:
        """The project's layout and the checkpoint folder of the feature's current run."""
        feature, run = status["feature"], status["run"]
        if run is None:
            raise ResourceNotFoundError(
                f"feature '{feature}' has no run yet: `tmops init {feature}` makes one"
            )
        layout = Layout(find_project_root(self.workspace))
        return layout, layout.checkpoint_dir(feature, run)

    def checkpoint(self, feature: str, name: str) -> str:
        _feature(feature)
        _checkpoint_name(name)
        status = self.status(feature)
        layout, folder = self._run_folder(status)
        listed = [c["name"] for c in status["checkpoints"]]
        if name not in listed:
            # status lists no link: say it is one rather than "absent"
            self._refuse_link(folder / name, layout)
            status_uri = STATUS_URI.format(feature=feature)
            raise ResourceNotFoundError(
                f"run '{status['run']}' of '{feature}' has no checkpoint {shown(name)}; its "
                f"checkpoints: {', '.join(listed) or 'none yet'} (see {status_uri})"
            )
        text = self._read(folder / name, layout)
        if text is None:  # listed, then removed
            raise ResourceNotFoundError(f"the checkpoint {shown(name)} of '{feature}' is gone")
        return text

    def summary(self, feature: str) -> str:
        status = self.status(feature)
        layout, folder = self._run_folder(status)
        text = self._read(folder / SUMMARY_NAME, layout)
        if text is None:
            last = (status["phase_progress"]["phases"] or [{}])[-1]
            handoff = last.get("completion_checkpoint") or "its last checkpoint"
            raise ResourceNotFoundError(
                f"{SUMMARY_NAME} of '{feature}' run '{status['run']}' is not written yet: tmops "
                f"writes it when the run completes, once the {last.get('role', 'last')} phase's "
                f"{handoff} is accepted (the run is {status['status']} now)"
            )
        return text

    @staticmethod
    def _read(path: Path, layout: Layout) -> str | None:
        """The file's text, reached from the project root without following a link."""
        try:
            data = read_checked(path, limit=MAX_READ_BYTES + 1, root=layout.project_root)
        except WorkspaceError as exc:
            raise ResourceError(str(exc)) from exc
        if data is None:
            return None
        if len(data) > MAX_READ_BYTES:
            raise ResourceError(f"{path} is over {MAX_READ_BYTES} bytes: read it on the disk")
        return data.decode("utf-8", errors="replace")

    @staticmethod
    def _refuse_link(path: Path, layout: Layout) -> None:
        try:
            lstat_checked(path, root=layout.project_root)
        except WorkspaceError as exc:  # a link: named, never followed
            raise ResourceError(str(exc)) from exc


def add_resources(server: MCPServer, service: Service, workspace: Path) -> None:
    """Register the resources and templates, reading ``workspace``'s features."""
    reader = _Reader(service, workspace)

    def register(
        uri: str, name: str, title: str, description: str, mime: str, read: Callable[..., str]
    ) -> None:
        server.resource(
            uri, name=name, title=title, description=description, mime_type=mime,
            security=_OWN_CHECKS,
        )(read)  # fmt: skip

    register(
        FEATURES_URI, "features", "Features",
        "Every feature of the project with its branch, run, status and last update (JSON).",
        "application/json", reader.features,
    )  # fmt: skip

    def status(feature: str) -> str:
        return reader.status_json(feature)

    def checkpoint(feature: str, name: str) -> str:
        return reader.checkpoint(feature, name)

    def summary(feature: str) -> str:
        return reader.summary(feature)

    register(
        STATUS_URI, "feature-status", "Status of a feature",
        "A feature's phase, progress, sessions, checkpoints and next action (JSON); reading it "
        "starts nothing.", "application/json", status,
    )  # fmt: skip
    register(
        CHECKPOINT_URI, "feature-checkpoint", "A checkpoint of a feature's current run",
        "The text of one checkpoint file; the names are in the status's checkpoints.",
        "text/markdown", checkpoint,
    )  # fmt: skip
    register(
        SUMMARY_URI, "feature-summary", "SUMMARY.md of a feature's current run",
        "Written when the run completes: phases, attempts, cost, commits.",
        "text/markdown", summary,
    )  # fmt: skip
