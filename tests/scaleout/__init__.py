"""The scale-out proof on loopback (``pytest -m scaleout``, a CI step of its own)."""
