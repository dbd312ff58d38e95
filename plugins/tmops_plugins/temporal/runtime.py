"""The SDK's runtime for a process that ends: one of its own, gone before the process exits.

The SDK's threads may call into Python after the interpreter began finalizing, which aborts a
process now and then as it exits (SIGABRT, "PyGILState_Release", temporalio/sdk-python#300):
about one `tmops doctor` in twenty, one stopped `tmops worker` in twelve. The default runtime
lives until then; a runtime of the caller's own, dropped once its work is done, takes its
threads with it while the interpreter still runs.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from temporalio.runtime import Runtime, TelemetryConfig

__all__ = ["run_with_own_runtime"]

_T = TypeVar("_T")


def run_with_own_runtime(main: Callable[[Runtime], Coroutine[Any, Any, _T]]) -> _T:
    """``asyncio.run(main(runtime))`` with a fresh runtime that is dropped before returning;
    ``main`` gives it to every client it connects (``Client.connect(runtime=...)``)."""
    runtime = Runtime(telemetry=TelemetryConfig())
    try:
        return asyncio.run(main(runtime))
    finally:
        del runtime
        gc.collect()  # clients and workers in reference cycles hold it too
