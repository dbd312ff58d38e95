"""The notifiers that run a program: ``command`` (a configured argv, the event as JSON on stdin)
and ``desktop`` (``notify-send``, where it is installed).

Both run from an argv list, never a shell, in a session of their own (a timeout kills the whole
group), with an environment cut down to an allowlist: the engine's environment holds the
agents' API keys, and a notification program gets none of it unless the config names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _log as logger

__all__ = ["BASE_ENV", "CommandNotifier", "DesktopNotifier", "notify_env"]

#: Variables a notification program gets from the engine's environment, by name.
BASE_ENV = ("HOME", "PATH", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR")
#: ... and by prefix (the locale).
_BASE_PREFIXES = ("LC_",)
#: What ``notify-send`` needs to find the desktop session.
DESKTOP_ENV = ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR")
#: How much of a failed program's stderr is quoted in the log.
_STDERR_TAIL = 500
_DESKTOP_TIMEOUT_S = 10.0


def notify_env(
    allow: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allowlisted part of ``environ`` (default ``os.environ``): :data:`BASE_ENV`, the
    locale, and the names in ``allow`` (an entry ending in ``*`` is a prefix)."""
    source = os.environ if environ is None else environ
    names = set(BASE_ENV)
    prefixes = list(_BASE_PREFIXES)
    for entry in allow:
        if entry.endswith("*"):
            prefixes.append(entry[:-1])
        else:
            names.add(entry)
    keep = tuple(prefixes)
    return {name: value for name, value in source.items() if name in names or name.startswith(keep)}


def _run(argv: Sequence[str], *, stdin: bytes, env: Mapping[str, str], timeout_s: float) -> None:
    """Run ``argv`` to its end; raise with the reason if it fails or outlives ``timeout_s``."""
    process = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=dict(env), start_new_session=True, close_fds=True,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the whole group goes
        process.communicate()
        raise RuntimeError(f"{argv[0]} ran longer than {timeout_s:g} s and was killed") from None
    if process.returncode != 0:
        tail = stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
        raise RuntimeError(
            f"{argv[0]} exited with {process.returncode}" + (f": {tail}" if tail else "")
        )


class CommandNotifier:
    """Runs ``argv`` with the event as one JSON object on stdin."""

    def __init__(
        self, name: str, argv: Sequence[str], *, timeout_s: float, env: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.timeout_s = timeout_s
        self.env = tuple(env)

    def deliver(self, event: Mapping[str, Any], stopping: threading.Event) -> None:
        payload = json.dumps(dict(event), sort_keys=True).encode() + b"\n"
        _run(self.argv, stdin=payload, env=notify_env(self.env), timeout_s=self.timeout_s)


class DesktopNotifier:
    """Shows the event with ``notify-send`` (title and body); says once if it is missing."""

    def __init__(self, name: str = "desktop") -> None:
        self.name = name
        self._missing_said = False

    def deliver(self, event: Mapping[str, Any], stopping: threading.Event) -> None:
        env = notify_env(DESKTOP_ENV)
        program = shutil.which("notify-send", path=env.get("PATH", os.defpath))
        if program is None:
            if not self._missing_said:
                self._missing_said = True
                logger.info(
                    "notify-send is not installed: desktop notifications are skipped (install "
                    "libnotify-bin, or remove plugins.settings.notify.desktop)"
                )
            return
        title, body = desktop_text(event)
        argv = [program, "--app-name=tmops", f"--urgency={_urgency(event)}", "--", title, body]
        _run(argv, stdin=b"", env=env, timeout_s=_DESKTOP_TIMEOUT_S)


def desktop_text(event: Mapping[str, Any]) -> tuple[str, str]:
    """The title and body of a desktop notification."""
    what = {
        "completed": "completed",
        "failed": "failed",
        "cancelled": "was cancelled",
        "needs_person": f"needs you ({str(event.get('reason', '')).replace('_', ' ')})",
    }.get(str(event.get("event")), str(event.get("state")))
    title = f"tmops: {event.get('feature')} {what}"
    body = "\n".join(
        str(part) for part in (event.get("message"), event.get("status_command")) if part
    )
    return title, body


def _urgency(event: Mapping[str, Any]) -> str:
    return "normal" if event.get("event") in {"completed", "cancelled"} else "critical"
