"""tmops_plugins: the built-in tmops plugins.

Each module is one plugin, registered through the ``tmops`` entry-point group like any
third-party plugin. This package imports tmops_hookspecs only, never tmops_core.
"""
