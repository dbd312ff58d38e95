"""``tmops worker --executor temporal``: this machine's worker on the workspace's task queue,
serving the run workflow and its attempt activity until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
from datetime import timedelta

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from tmops_hookspecs import ExecutorHost

from .activities import AttemptActivity
from .runtime import run_with_own_runtime
from .settings import TemporalSettings, task_queue
from .workflow import RunWorkflow

__all__ = ["serve"]


def serve(settings: TemporalSettings, host: ExecutorHost) -> None:
    run_with_own_runtime(lambda runtime: _serve(settings, host, runtime))


async def _serve(settings: TemporalSettings, host: ExecutorHost, runtime: Runtime) -> None:
    client = await Client.connect(settings.address, namespace=settings.namespace, runtime=runtime)
    # A heartbeat a few times per timeout; the SDK sends one at most every throttle interval,
    # which is also how soon a cancel reaches the agent.
    beat_s = max(0.2, settings.heartbeat_timeout_s / 5)
    attempts = AttemptActivity(host, beat_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # one thread per attempt: each blocks on its agent process until it ends
    most = settings.max_concurrent_attempts
    with concurrent.futures.ThreadPoolExecutor(max_workers=most) as pool:
        worker = Worker(
            client,
            task_queue=task_queue(settings, host.workspace_id),
            workflows=[RunWorkflow],
            activities=[attempts.run_attempt],
            activity_executor=pool,
            max_concurrent_activities=most,
            max_heartbeat_throttle_interval=timedelta(seconds=beat_s),
            default_heartbeat_throttle_interval=timedelta(seconds=beat_s),
            # a stopped worker's attempts are cancelled at once: their agents stop in order
            graceful_shutdown_timeout=timedelta(seconds=0),
        )
        async with worker:
            await stop.wait()
