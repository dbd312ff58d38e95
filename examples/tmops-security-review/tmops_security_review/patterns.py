"""The secrets the plugin looks for, shared by the ``no-secrets`` validator and the review
agent: private keys and the common token shapes (a checkpoint is committed, so none may carry
one)."""

from __future__ import annotations

import re

__all__ = ["SECRET_PATTERNS", "redact"]

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "Anthropic API key": re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
}


def redact(text: str) -> str:
    """``text`` with every secret of :data:`SECRET_PATTERNS` replaced by its kind."""
    for kind, pattern in SECRET_PATTERNS.items():
        text = pattern.sub(f"[{kind} redacted]", text)
    return text
