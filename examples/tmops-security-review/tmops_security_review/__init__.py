"""An example third-party tmops plugin: see ``plugin`` for what it registers."""
