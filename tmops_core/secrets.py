"""Redaction of secrets in everything tmops prints or writes.

One module, low in the layering (it imports nothing of tmops), so config, events, the store and
the agents' logs all hide secrets the same way. Agents still get the real values in their
environment: only what tmops itself shows or keeps is redacted. Three kinds of secret:

- credentials in a URL: ``scheme://user:pass@host`` becomes ``scheme://***@host``;
- the value of a key that names a secret: ``token``, ``secret``, ``key``, ``password``,
  ``passwd``, ``pat``, ``credential(s)`` or ``auth`` as a word of the key (``GH_PAT``,
  ``ANTHROPIC_API_KEY``, ``db_password``, ``apiKey``), in data and in ``KEY=value`` or
  ``"key": "value"`` text;
- well-known token shapes anywhere in text (OpenAI/Anthropic ``sk-``, GitHub ``ghp_``/``gho_``/
  ``ghs_``/``ghu_``/``ghr_``/``github_pat_``, Slack ``xox?-``, AWS access key ids and secret
  access keys).

Redaction is idempotent: redacting redacted text changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "is_secret_key",
    "redact",
    "redact_data",
    "redact_json_text",
    "redact_text",
]

#: what a hidden value is replaced with
REDACTED = "***redacted***"
_SECRET_WORDS = frozenset(
    {
        "token", "secret", "key", "apikey", "password", "passwd", "passphrase", "pwd", "pat",
        "credential", "credentials", "auth", "authorization",
    }
)  # fmt: skip
#: a key's words: split at ``_``, ``-``, ``.``, spaces and camelCase humps (``apiKey``)
_KEY_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:'\"<>]*:[^\s/@'\"<>]*@")
_TOKEN_SHAPES = re.compile(
    r"\b(?:"
    r"sk-(?:ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI and Anthropic API keys
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub classic, OAuth, server, user and refresh tokens
    r"|github_pat_[A-Za-z0-9_]{20,}"  # GitHub fine-grained tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack bot, user and app tokens
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r")"
)
#: ``aws_secret_access_key = X``, ``"aws_secret_access_key": "X"``
_AWS_SECRET = re.compile(r"(?i)(aws_secret_access_key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{20,}")
#: ``NAME=value``, ``NAME: value``, ``"name": "value"`` (also JSON-escaped inside a string):
#: the key and separator; is_secret_key decides, then the value after it is hidden
_KEY_AND_SEPARATOR = re.compile(
    r"(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?"
)
_VALUE = re.compile(r"(?:(?:Bearer|Basic|token)\s+)?[^\s\"',;}\\]+")


def is_secret_key(key: str) -> bool:
    """Whether ``key`` names a secret: one of its words is token, secret, key, password, pat..."""
    words = {word.lower() for word in _KEY_WORD.findall(key)}
    return not words.isdisjoint(_SECRET_WORDS)


def redact_text(text: str) -> str:
    """``text`` with URL credentials, secret assignments and token shapes hidden."""
    if not text:
        return text
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = _AWS_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    return _hide_assigned_values(text)


def _hide_assigned_values(text: str) -> str:
    # Keys are found without taking their values, so a key inside another key's value
    # (``content: "db_password: x"``) is still seen.
    parts: list[str] = []
    done = 0
    for found in _KEY_AND_SEPARATOR.finditer(text):
        if found.start() < done or not is_secret_key(found.group("key")):
            continue
        value = _VALUE.match(text, found.end())
        if value is None or value.group(0).startswith("***"):
            continue
        parts += [text[done : value.start()], REDACTED]
        done = value.end()
    return "".join(parts) + text[done:] if parts else text


def redact(value: Any, *, key: str | None = None) -> Any:
    """``value`` with secrets hidden: a string under a secret-naming ``key`` entirely, else its
    secret parts; mappings and sequences recursively (a copy; the input is not changed)."""
    if isinstance(value, str):
        if key is not None and value and is_secret_key(key):
            return REDACTED
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_data(value)
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if key is not None and value not in (None, "", False, True) and is_secret_key(key):
        return REDACTED  # a number under a secret name is still the secret
    return value


def redact_data(data: Mapping[Any, Any]) -> dict[Any, Any]:
    """A copy of ``data`` with every secret hidden (see :func:`redact`)."""
    return {k: redact(v, key=k if isinstance(k, str) else None) for k, v in data.items()}


def redact_json_text(text: str) -> str:
    """JSON text (an event's data) with its secrets hidden, still valid JSON; other text is
    redacted as text."""
    try:
        data = json.loads(text)
    except ValueError:
        return redact_text(text)
    return json.dumps(redact(data), default=str)
