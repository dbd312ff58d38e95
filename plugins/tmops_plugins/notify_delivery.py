"""Delivery of notifications off the run loop: one worker thread and queue per notifier.

The engine's drivers only put a notification on a queue; a daemon thread per notifier delivers
it, so a slow webhook or a hung command never holds a run up. When tmops is done with its
plugins it flushes every outbox against one shared deadline: what is still queued then is
dropped with a warning naming how much (the daemon threads die with the process).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from . import _log as logger

__all__ = ["Notifier", "Outbox", "flush_all"]

#: what :meth:`Outbox.flush` puts on the queue to tell its worker to stop
_STOP = object()


class Notifier(Protocol):
    """Delivers one notification; raises on failure (the outbox logs it and goes on).

    ``stopping`` is set once the flush deadline has passed: a notifier waiting to retry gives
    up when it is set.
    """

    name: str

    def deliver(self, event: Mapping[str, Any], stopping: threading.Event) -> None: ...


class Outbox:
    """A notifier's queue and its worker thread (started with the first notification)."""

    def __init__(self, notifier: Notifier, accepts: Callable[[Mapping[str, Any]], bool]) -> None:
        self.notifier = notifier
        self._accepts = accepts
        self._lock = threading.Lock()
        #: the live worker, its queue and its stop flag; a new one after each flush
        self._worker: tuple[threading.Thread, queue.Queue[object], threading.Event] | None = None

    @property
    def delivering(self) -> bool:
        """Whether a worker was started and not yet told to stop."""
        return self._worker is not None

    def post(self, event: Mapping[str, Any]) -> None:
        """Queue ``event`` if this notifier takes events of its kind; never blocks."""
        if not self._accepts(event):
            return
        with self._lock:
            if self._worker is None:
                items: queue.Queue[object] = queue.Queue()
                stopping = threading.Event()
                thread = threading.Thread(
                    target=self._work, args=(items, stopping), daemon=True,
                    name=f"tmops-notify-{self.notifier.name}",
                )  # fmt: skip
                thread.start()
                self._worker = (thread, items, stopping)
            self._worker[1].put(event)

    def _work(self, items: queue.Queue[object], stopping: threading.Event) -> None:
        while True:
            item = items.get()
            if item is _STOP:
                return
            assert isinstance(item, Mapping)  # noqa: S101 - only post() and close() put here
            try:
                self.notifier.deliver(item, stopping)
            except Exception as exc:  # one failed delivery must not stop the next ones
                logger.warning(
                    "notifier {}: {} of {} run {} not delivered: {}",
                    self.notifier.name, item.get("event"), item.get("feature"), item.get("run"),
                    exc,
                )  # fmt: skip

    def close(self) -> Callable[[float], None]:
        """Tell the worker to stop after what is queued; return the wait for it, which takes
        a deadline (``time.monotonic()``) and gives up then."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is None:
            return lambda _deadline: None
        thread, items, stopping = worker
        items.put(_STOP)

        def wait(deadline: float) -> None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if not thread.is_alive():
                return
            stopping.set()  # a retry waiting out its backoff stops waiting
            left = sum(1 for item in list(items.queue) if item is not _STOP)
            logger.warning(
                "notifier {}: stopped waiting at the flush deadline; {} queued notification(s) "
                "dropped, one may still be on its way",
                self.notifier.name,
                left,
            )

        return wait


def flush_all(outboxes: Sequence[Outbox], timeout_s: float) -> None:
    """Let every outbox deliver what it holds, all against one deadline ``timeout_s`` away."""
    deadline = time.monotonic() + timeout_s
    waits = [outbox.close() for outbox in outboxes]
    for wait in waits:
        wait(deadline)
