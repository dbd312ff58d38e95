"""The temporal executor's own keys of the config's ``executor`` section, checked strictly:
every problem at once, each as ``message @ $.executor.<key>``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from tmops_hookspecs import ConfigError

__all__ = ["DEFAULTS", "TemporalSettings", "read_settings", "task_queue", "workflow_id"]

_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@attrs.frozen(kw_only=True)
class TemporalSettings:
    #: the Temporal frontend, host:port
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    #: the task queue's prefix: the workspace id is appended, so workspaces never share work
    task_queue: str = "tmops"
    #: a worker silent this long has lost its attempt: it is run again elsewhere
    heartbeat_timeout_s: float = 10.0
    #: the longest one attempt may take on a worker, the agent's own limits aside
    attempt_timeout_s: float = 4 * 3600.0
    #: a job no worker took within this long fails the attempt (then retried by the run)
    schedule_timeout_s: float = 3600.0
    #: a run's workflow ends once no attempt was asked for this long (the next one restarts it)
    run_idle_timeout_s: float = 900.0
    #: attempts one worker runs side by side, each one agent process (``tmops worker
    #: --concurrency N`` overrides it on one machine)
    max_concurrent_attempts: int = 4


DEFAULTS = attrs.asdict(TemporalSettings())


def read_settings(settings: Mapping[str, Any]) -> TemporalSettings:
    problems: list[str] = []
    known = set(DEFAULTS)
    for key in settings:
        if key not in known:
            problems.append(
                f"unknown key {key!r} of the temporal executor (known keys: name, remote, "
                f"{', '.join(sorted(known))}) @ $.executor.{key}"
            )
    values = {key: settings[key] for key in known if key in settings}
    for key in ("address", "namespace", "task_queue"):
        if key in values and not isinstance(values[key], str):
            problems.append(f"expected a string, got {values[key]!r} @ $.executor.{key}")
    # a key left empty in YAML is None: refused like any other non-number, not a crash
    for key in sorted(k for k in known if k.endswith("_s")):
        value = values.get(key)
        if key in values and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            problems.append(
                f"must be a number of seconds above 0, got {value!r} @ $.executor.{key}"
            )
    attempts = values.get("max_concurrent_attempts")
    if "max_concurrent_attempts" in values and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
    ):
        problems.append(
            f"must be a whole number of attempts of at least 1, got {attempts!r} "
            f"@ $.executor.max_concurrent_attempts"
        )
    address = values.get("address")
    if isinstance(address, str) and not _HOST_PORT.match(address):
        problems.append(
            f"must be host:port of the Temporal frontend (e.g. 127.0.0.1:7233), got "
            f"{address[:80]!r} @ $.executor.address"
        )
    for key in ("namespace", "task_queue"):
        value = values.get(key)
        if isinstance(value, str) and not _NAME.match(value):
            problems.append(f"must be a name (letters, digits, . _ -), got {value[:80]!r} "
                            f"@ $.executor.{key}")  # fmt: skip
    if problems:
        raise ConfigError(
            f"the temporal executor's settings have {len(problems)} error(s):",
            problems,
            hint="see docs/scale-out.md for the executor section",
        )
    typed: dict[str, Any] = {k: float(v) if k.endswith("_s") else v for k, v in values.items()}
    return TemporalSettings(**typed)


def task_queue(settings: TemporalSettings, workspace: str) -> str:
    """The workspace's own queue: a worker of another workspace never takes its work."""
    return f"{settings.task_queue}-{workspace}"


def workflow_id(workspace: str, feature: str, run: str) -> str:
    """One workflow per run: every attempt of it, whichever engine asks, goes to the same one."""
    return f"tmops/{workspace}/{feature}/{run}"
