"""tmops_core: the tmops engine, its command line and its MCP server.

It finds every plugin, built-in or third-party, through the ``tmops`` entry-point group and
never imports tmops_plugins.
"""

from __future__ import annotations

import functools

__all__ = ["__version__"]


@functools.cache
def _version() -> str:
    # importlib.metadata costs tens of milliseconds: only the commands that show the version
    # pay for it (a read command such as `tmops status` never does).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tmops")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
