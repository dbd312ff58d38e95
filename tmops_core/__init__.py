"""tmops_core: the tmops engine, its command line and its MCP server.

It finds every plugin, built-in or third-party, through the ``tmops`` entry-point group and
never imports tmops_plugins.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tmops")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
