"""``tmops doctor``'s look at the temporal executor: the server at ``executor.address`` answers
and knows the namespace, and some worker polls the workspace's task queue. Every call is bounded
by a timeout, so the doctor never hangs on a server that does not answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from tmops_hookspecs import ExecutorCheck, ExecutorHost

from .runtime import run_with_own_runtime
from .settings import TemporalSettings, task_queue

__all__ = ["CALL_TIMEOUT_S", "check"]

#: the longest one call to the server may take
CALL_TIMEOUT_S = 3.0
#: a live worker polls again at least this often (the server ends a long poll after a minute);
#: the server remembers a poller some minutes after it stopped
_POLLED_WITHIN_S = 120.0
_T = TypeVar("_T")


def check(settings: TemporalSettings, host: ExecutorHost) -> list[ExecutorCheck]:
    queue = task_queue(settings, host.workspace_id)
    return run_with_own_runtime(lambda runtime: _check(settings, queue, runtime))


async def _bounded(call: Awaitable[_T]) -> _T:
    # the SDK's timeouts do not bound everything: its connect_timeout ends at the TCP
    # handshake, and a server that accepts and then says nothing would hold the connect
    return await asyncio.wait_for(call, CALL_TIMEOUT_S)


async def _check(settings: TemporalSettings, queue: str, runtime: Runtime) -> list[ExecutorCheck]:
    address, namespace = settings.address, settings.namespace
    timeout = timedelta(seconds=CALL_TIMEOUT_S)
    try:
        client = await _bounded(
            Client.connect(address, namespace=namespace, connect_timeout=timeout, runtime=runtime)
        )
    except (RuntimeError, RPCError, TimeoutError) as exc:
        host, _, port = address.rpartition(":")
        return [ExecutorCheck(
            name="server", status="fail",
            found=f"no Temporal server answers at {address} within {CALL_TIMEOUT_S:g} s "
                  f"({_reason(exc)})",
            fix=f"start one (a single machine's: `temporal server start-dev --ip {host} "
                f"--port {port} --headless --db-filename .tmops/temporal.db`, see "
                "docs/scale-out.md), or set executor.address to the frontend of yours",
        )]  # fmt: skip
    try:
        await _bounded(client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=timeout
        ))  # fmt: skip
    except (RPCError, TimeoutError) as exc:
        if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
            return [ExecutorCheck(
                name="server", status="fail",
                found=f"the Temporal server at {address} has no namespace {namespace!r}",
                fix=f"create it: `temporal operator namespace create --namespace {namespace} "
                    f"--address {address}`, or set executor.namespace to one it has",
            )]  # fmt: skip
        return [ExecutorCheck(
            name="server", status="fail",
            found=f"the Temporal server at {address} did not describe the namespace "
                  f"{namespace!r} within {CALL_TIMEOUT_S:g} s ({_reason(exc)})",
            fix="see the server's log; `temporal operator namespace describe --namespace "
                f"{namespace} --address {address}` asks the same",
        )]  # fmt: skip
    server = ExecutorCheck(
        name="server", status="ok", found=f"Temporal at {address} answers, namespace {namespace}"
    )
    try:
        workers = await _workers(client, namespace, queue, timeout)
    except (RPCError, TimeoutError) as exc:
        workers = ExecutorCheck(
            name="workers", status="fail",
            found=f"the server did not describe the task queue {queue} ({_reason(exc)})",
            fix="see the server's log",
        )  # fmt: skip
    return [server, workers]


async def _workers(client: Client, namespace: str, queue: str, timeout: timedelta) -> ExecutorCheck:
    """Who polls the queue: a worker polls it for the run's workflow tasks and its attempts'
    activity tasks alike."""
    polled: dict[str, list[PollerInfo]] = {}
    for kind, queue_type in (("workflow", TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
                             ("activity", TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)):  # fmt: skip
        request = DescribeTaskQueueRequest(
            namespace=namespace,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=queue_type,
        )
        answer = await _bounded(
            client.workflow_service.describe_task_queue(request, timeout=timeout)
        )
        polled[kind] = list(answer.pollers)
    now = time.time()
    live = {k: [p for p in ps if now - p.last_access_time.seconds <= _POLLED_WITHIN_S]
            for k, ps in polled.items()}  # fmt: skip
    identities = sorted({p.identity for ps in live.values() for p in ps})
    missing = [kind for kind, ps in live.items() if not ps]
    if not missing:
        return ExecutorCheck(
            name="workers", status="ok",
            found=f"{len(identities)} worker(s) poll the task queue {queue}: "
                  f"{', '.join(identities[:5])}",
        )  # fmt: skip
    gone = sorted({p.identity for ps in polled.values() for p in ps} - set(identities))
    found = (f"no worker polls the task queue {queue}" if len(missing) == 2
             else f"nothing polls the task queue {queue} for {missing[0]} tasks")  # fmt: skip
    if gone:
        found += f" (last seen over {_POLLED_WITHIN_S:g} s ago: {', '.join(gone[:5])})"
    return ExecutorCheck(
        name="workers", status="warn", found=found,
        fix="start `tmops worker --executor temporal` on a machine with a clone of the "
            "project (docs/scale-out.md); until one runs, attempts wait for one",
    )  # fmt: skip


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer"
    text = exc.message if isinstance(exc, RPCError) else str(exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__
