"""What every ``tmops`` command shares: the global options and the service, loaded on first
use (commands that never need the config never pay for loading it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from tmops_core.service.operations import Service

__all__ = ["AppState"]


@attrs.define
class AppState:
    """What every command shares: the global options and the service, loaded on first use."""

    config_path: Path | None
    debug: bool
    _service: Service | None = None

    @property
    def service(self) -> Service:
        if self._service is None:
            from tmops_core.service.actor import cli_actor
            from tmops_core.service.operations import Service

            self._service = Service.load(self.config_path, debug=self.debug)
            self._service.actor = cli_actor()  # the audit trail names the OS user
        return self._service

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
