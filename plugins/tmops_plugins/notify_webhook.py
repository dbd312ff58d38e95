"""The ``webhook`` notifier: POST the event as JSON to an http(s) URL, with retries.

A connection error, a timeout or a 5xx (and a 429) is tried again after a backoff that doubles
each time; any other answer but 2xx is final. Redirects are not followed: a redirect could
carry the auth header to another host. The auth header's value comes from an environment
variable, read at each delivery, and is never logged.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from . import _log as logger

__all__ = ["WebhookNotifier"]

_RETRYABLE_STATUS = frozenset({429, *range(500, 600)})
#: the longest wait between two tries, however many there were
_MAX_BACKOFF_S = 60.0


class DeliveryFailed(Exception):
    """A try that failed; ``final`` when trying again cannot help."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class WebhookNotifier:
    """POSTs each event to ``url``; ``retries`` more tries after the first one."""

    def __init__(
        self, name: str, url: str, *, timeout_s: float, retries: int, backoff_s: float,
        auth_header: str | None = None, auth_env: str | None = None, user_agent: str = "tmops",
    ) -> None:  # fmt: skip
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.auth_header = auth_header
        self.auth_env = auth_env
        self.user_agent = user_agent

    def deliver(self, event: Mapping[str, Any], stopping: threading.Event) -> None:
        body = json.dumps(dict(event), sort_keys=True).encode()
        headers = self._headers()
        tries = self.retries + 1
        for number in range(1, tries + 1):
            try:
                self._post(body, headers)
            except DeliveryFailed as exc:
                if exc.final or number == tries:
                    tried = "1 try" if number == 1 else f"{number} tries"
                    raise RuntimeError(f"gave up after {tried}: {exc}") from None
                wait = min(self.backoff_s * 2 ** (number - 1), _MAX_BACKOFF_S)
                logger.info(
                    "notifier {}: try {} of {} failed ({}); again in {:g} s",
                    self.name, number, tries, exc, wait,
                )  # fmt: skip
                if stopping.wait(wait):
                    raise RuntimeError(f"the flush deadline passed after {number} tries") from None
            else:
                return

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": self.user_agent}
        if self.auth_header and self.auth_env:
            value = os.environ.get(self.auth_env)
            if not value:
                raise RuntimeError(
                    f"${self.auth_env} is not set: its value is the {self.auth_header} header"
                )
            headers[self.auth_header] = value
        return headers

    def _post(self, body: bytes, headers: Mapping[str, str]) -> None:
        # Imported here: every command loads the plugins, few of them post anything.
        import http.client
        import ssl

        parts = urlsplit(self.url)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=self.timeout_s,
                context=ssl.create_default_context(),
            )  # fmt: skip
        else:
            connection = http.client.HTTPConnection(
                parts.hostname or "", parts.port, timeout=self.timeout_s
            )
        try:
            connection.request("POST", target, body=body, headers=dict(headers))
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, TLS
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        finally:
            connection.close()
        if 200 <= response.status < 300:
            return
        raise DeliveryFailed(
            f"HTTP {response.status} {response.reason}",
            final=response.status not in _RETRYABLE_STATUS,
        )
