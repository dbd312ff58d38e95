"""Which projects an MCP client may act on: the ``workspace`` argument of every tool.

A client must not reach every repository on the machine (a server started in project A would
initialise features and run agents in project B with A's config). A workspace is allowed when
its project root is the project the server serves (its ``--workspace``, else the folder it
started in) or is, or is inside, a folder of ``server.workspaces``. Paths are compared after
resolving symlinks; a refusal names the allowed roots and the config key, and is audited as
``orchestration.security.workspace_refused``.
"""

from __future__ import annotations

from pathlib import Path

from mcp.server.mcpserver.exceptions import ToolError

from tmops_core.git import Git
from tmops_core.log import logger
from tmops_core.service.operations import Service
from tmops_core.service.status import find_project_root
from tmops_core.workspace.layout import SHOWN_CHARS, shown
from tmops_hookspecs import TmopsError, WorkspaceError

__all__ = ["REFUSED_EVENT", "WorkspaceGuard"]

REFUSED_EVENT = "orchestration.security.workspace_refused"


def _within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


class WorkspaceGuard:
    """Turns a tool's ``workspace`` argument into a project root the server may act on."""

    def __init__(self, service: Service, default_workspace: Path) -> None:
        self.service = service
        self.default_workspace = default_workspace
        #: the project the server serves: only that project, not one nested inside it
        self.served = find_project_root(default_workspace)
        #: the roots of server.workspaces: those projects and any inside them
        self.listed = tuple(Path(path).resolve() for path in service.config.server.workspaces)

    def resolve(self, raw: str | None) -> Path:
        """The project root ``raw`` names (``None``: the server's default workspace), or a
        ``ToolError`` saying why not."""
        if raw is None:
            return self.default_workspace
        try:
            path = Path(raw)
            resolved = path.resolve() if path.is_absolute() else None
        except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop...
            resolved = None
        if resolved is None:
            raise _not_a_folder(raw)
        # Refused before the folder is looked at: no answer tells whether a folder outside exists.
        if not _within(resolved, self.served) and not any(
            _within(resolved, root) for root in self.listed
        ):
            self._refuse(raw)
        try:
            exists = resolved.is_dir()
        except OSError:  # a name too long...
            exists = False
        if not exists:
            raise _not_a_folder(raw)
        root = find_project_root(resolved)
        # init acts on git's main working tree, which a linked worktree or a .git file can put
        # elsewhere: that folder must be allowed too.
        if not self._allows(root) or not self._allows(_git_main_root(root) or root):
            self._refuse(raw)
        return root

    def allowed_roots(self) -> list[str]:
        return [str(self.served), *(str(root) for root in self.listed)]

    def _allows(self, root: Path) -> bool:
        return root == self.served or any(_within(root, listed) for listed in self.listed)

    def _refuse(self, raw: str) -> None:
        allowed = self.allowed_roots()
        try:
            self.service.events.emit(
                REFUSED_EVENT,
                {"workspace": raw[:SHOWN_CHARS], "length": len(raw), "allowed_roots": allowed},
            )
        except TmopsError as exc:  # the refusal stands even when telemetry cannot be set up
            logger.warning("could not audit a refused workspace: {}", exc.message)
        raise ToolError(
            f"workspace {shown(raw)} is outside the projects this server may act on "
            f"({', '.join(allowed)}); to allow it, add its project root to server.workspaces "
            "in the tmops config"
        )


def _not_a_folder(raw: str) -> ToolError:
    return ToolError(f"workspace {shown(raw)} must be the absolute path of an existing folder")


def _git_main_root(root: Path) -> Path | None:
    """The main working tree git would act on from ``root``; ``None`` outside a repository."""
    try:
        return Git(root).main_root()
    except WorkspaceError:
        return None
