"""The ``temporal`` executor: a run's attempts served by ``tmops worker`` processes on several
machines through a Temporal server (``executor: {name: temporal, ...}``).

Registered here without importing temporalio (nor its settings): the SDK is imported only when
the config names this executor (the factory) or a worker starts (``serve``), so a project that
runs its agents in the engine's own process tree needs neither Temporal nor its SDK.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tmops_hookspecs import Executor, ExecutorCheck, ExecutorHost, ExecutorSpec, hookimpl

__all__ = ["tmops_register_executors"]


def _factory(settings: Mapping[str, Any], host: ExecutorHost) -> Executor:
    from .settings import read_settings  # loading the plugin costs `tmops status` nothing

    checked = read_settings(settings)  # the config's errors first, without the SDK
    from .executor import TemporalExecutor

    return TemporalExecutor(checked, host)


def _serve(settings: Mapping[str, Any], host: ExecutorHost) -> None:
    from .settings import read_settings
    from .worker import serve

    serve(read_settings(settings), host)


def _check(settings: Mapping[str, Any], host: ExecutorHost) -> Sequence[ExecutorCheck]:
    from .settings import read_settings

    checked = read_settings(settings)
    from .doctor import check

    return check(checked, host)


@hookimpl
def tmops_register_executors() -> Iterable[ExecutorSpec]:
    return [
        ExecutorSpec(
            name="temporal",
            factory=_factory,
            serve=_serve,
            check=_check,
            description="attempts run by `tmops worker` processes through a Temporal server",
        )
    ]
