"""The settings of the ``notify`` plugin (``plugins.settings.notify``), read strictly: every
notifier it names, with the events it takes, as an :class:`Outbox` ready to post to."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tmops_hookspecs import ConfigError

from ._options import HEADER_NAME, VAR_NAME, check_keys, get, http_url, seconds
from .notify_delivery import Notifier, Outbox
from .notify_programs import CommandNotifier, DesktopNotifier
from .notify_webhook import WebhookNotifier

__all__ = ["DEFAULT_FLUSH_TIMEOUT_S", "KINDS", "REASONS", "event_filter", "parse_settings"]

#: The kinds of notification, and the reasons a run needs a person (each selectable alone).
KINDS = ("completed", "failed", "cancelled", "needs_person")
REASONS = ("awaiting_approval", "branch_moved", "usage_limited", "budget_exhausted", "needs_review")
DEFAULT_FLUSH_TIMEOUT_S = 10.0
#: an ``env`` entry: a name, or a prefix ending in ``*``
_ENV_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
_PLUGIN = "notify"


def parse_settings(settings: Mapping[str, Any]) -> tuple[list[Outbox], float]:
    """The outboxes and flush timeout ``plugins.settings.notify`` asks for; ConfigError else."""
    check_keys(_PLUGIN, settings, {"command", "webhook", "desktop", "flush_timeout_s"})
    flush_timeout_s = seconds(_PLUGIN, settings, "flush_timeout_s", DEFAULT_FLUSH_TIMEOUT_S)
    outboxes: list[Outbox] = []
    for index, options in _entries(settings, "command"):
        outboxes.append(_outbox(_command(f"command{index}", options), options))
    for index, options in _entries(settings, "webhook"):
        outboxes.append(_outbox(_webhook(f"webhook{index}", options), options))
    desktop = settings.get("desktop", False)
    if desktop is True:
        desktop = {}
    if isinstance(desktop, Mapping):
        check_keys(f"{_PLUGIN}.desktop", desktop, {"events"})
        outboxes.append(_outbox(DesktopNotifier(), desktop))
    elif desktop is not False:
        raise ConfigError(
            f"'{_PLUGIN}.desktop' must be true, false or a mapping, got {type(desktop).__name__}"
        )
    return outboxes, flush_timeout_s


def _entries(settings: Mapping[str, Any], key: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """A notifier's section: one mapping, or a list of them (named ``key``, ``key[1]``...)."""
    value = settings.get(key)
    if value is None:
        return []
    items = list(value) if isinstance(value, list | tuple) else [value]
    for item in items:
        if not isinstance(item, Mapping):
            raise ConfigError(
                f"'{_PLUGIN}.{key}' must be a mapping or a list of mappings, "
                f"got {type(item).__name__}",
            )
    return [("" if i == 0 else f"[{i}]", item) for i, item in enumerate(items)]


def _outbox(notifier: Notifier, options: Mapping[str, Any]) -> Outbox:
    return Outbox(notifier, event_filter(notifier.name, options.get("events")))


def event_filter(name: str, selected: Any) -> Callable[[Mapping[str, Any]], bool]:
    """The filter of ``events``: kinds, or needs-a-person reasons alone; all by default."""
    if selected is None:
        return lambda _event: True
    known = (*KINDS, *REASONS)
    if not isinstance(selected, list | tuple) or not all(isinstance(i, str) for i in selected):
        raise ConfigError(f"'{_PLUGIN}.{name}.events' must be a list of event names")
    unknown = sorted(set(selected) - set(known))
    if unknown:
        raise ConfigError(
            f"'{_PLUGIN}.{name}.events' names unknown events: {', '.join(unknown)}",
            hint=f"known: {', '.join(known)}",
        )
    chosen = frozenset(selected)

    def accepts(event: Mapping[str, Any]) -> bool:
        return event.get("event") in chosen or (
            event.get("event") == "needs_person" and event.get("reason") in chosen
        )

    return accepts


def _command(name: str, options: Mapping[str, Any]) -> CommandNotifier:
    where = f"{_PLUGIN}.{name}"
    check_keys(where, options, {"argv", "events", "timeout_s", "env"})
    argv = options.get("argv")
    if (
        not isinstance(argv, list | tuple)
        or not argv
        or not all(isinstance(arg, str) and arg and "\0" not in arg for arg in argv)
    ):
        raise ConfigError(
            f"'{where}.argv' must be a non-empty list of strings (a program and its arguments)",
            hint="e.g. argv: [/usr/local/bin/tell-me, --quiet]; it is never run through a shell",
        )
    env = options.get("env", ())
    if not isinstance(env, list | tuple) or any(
        not isinstance(item, str) or not _ENV_ENTRY.fullmatch(item) for item in env
    ):
        raise ConfigError(
            f"'{where}.env' must be a list of environment variable names, got {env!r}",
            hint="list names (SLACK_URL) or prefixes (SLACK_*); their values come from tmops' "
            "own environment",
        )
    timeout_s = seconds(where, options, "timeout_s", 30.0)
    return CommandNotifier(name, argv, timeout_s=timeout_s, env=env)


def _webhook(name: str, options: Mapping[str, Any]) -> WebhookNotifier:
    where = f"{_PLUGIN}.{name}"
    check_keys(
        where,
        options,
        {"url", "events", "timeout_s", "retries", "backoff_s", "auth_header", "auth_env"},
    )
    url = http_url(
        where, "url", get(where, options, "url", str, ""), example="https://hooks.example.org/x"
    )
    auth_header = get(where, options, "auth_header", str, "") or None
    auth_env = get(where, options, "auth_env", str, "") or None
    if (auth_header is None) != (auth_env is None):
        raise ConfigError(f"'{where}' needs both auth_header and auth_env, or neither")
    if auth_header is not None and not HEADER_NAME.fullmatch(auth_header):
        raise ConfigError(f"'{where}.auth_header' is not a header name: {auth_header!r}")
    if auth_env is not None and not VAR_NAME.fullmatch(auth_env):
        raise ConfigError(f"'{where}.auth_env' is not an environment variable name: {auth_env!r}")
    retries = get(where, options, "retries", int, 3)
    if not 0 <= retries <= 20:
        raise ConfigError(f"'{where}.retries' must be between 0 and 20, got {retries}")
    return WebhookNotifier(
        name, url, timeout_s=seconds(where, options, "timeout_s", 10.0), retries=retries,
        backoff_s=seconds(where, options, "backoff_s", 1.0), auth_header=auth_header,
        auth_env=auth_env, user_agent=f"tmops/{_version()}",
    )  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # only with a webhook

    try:
        return version("tmops-plugins")
    except PackageNotFoundError:
        return "0"
