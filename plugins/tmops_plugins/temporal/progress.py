"""A worker's heartbeats, relayed into the run's records while its attempt runs: the agent's pid
and session, and its events (what the live view of ``tmops watch`` shows), each event once.

The worker numbers its agent's events and keeps the latest in each heartbeat's details
(:func:`heartbeat_events`); the engine reads them from the workflow's pending activity, so
the trail shows a remote agent's actions seconds after they happen, not when its attempt ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from tmops_hookspecs import AgentEvent, AttemptHooks

__all__ = ["REMOTE_START_TIME", "Progress", "agent_event", "event_data"]

#: the start time a worker's agent is recorded with: no process of this machine has it
REMOTE_START_TIME = -1
#: an event's message as far as a heartbeat carries it (the result carries it whole)
_MESSAGE_CHARS = 2000


def event_data(event: AgentEvent) -> dict[str, Any]:
    """An event as heartbeat data (JSON)."""
    data = attrs.asdict(event, recurse=False)
    data["data"] = dict(event.data)
    data["message"] = event.message[:_MESSAGE_CHARS]
    return data


def agent_event(data: Mapping[str, Any]) -> AgentEvent:
    known = {field.name for field in attrs.fields(AgentEvent)}
    return AgentEvent(**{key: value for key, value in data.items() if key in known})


class Progress:
    """The worker's heartbeats relayed into the run's records as they come: the agent's pid
    and session, and its events (the live view), each event once."""

    def __init__(self, hooks: AttemptHooks) -> None:
        self._hooks = hooks
        self.started = False
        self.accepted = False
        self._pid: tuple[Any, int] | None = None
        self._session: str | None = None
        #: per try of the activity (``a<n>``): the numbers of its events already relayed
        self._relayed: dict[str, set[int]] = {}

    async def relay(self, client: Client, handle: WorkflowHandle[Any, Any]) -> None:
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:  # not started yet
                return
            raise
        for pending in description.raw_description.pending_activities:
            self.accepted = True
            if not pending.heartbeat_details.payloads:
                continue
            details = await client.data_converter.decode(pending.heartbeat_details.payloads)
            progress = details[0] if details and isinstance(details[0], dict) else {}
            pid = progress.get("pid")
            if pid and self._pid != (pid, pending.attempt):
                self._pid = (pid, pending.attempt)
                self.started = True
                self._hooks.started(int(pid), REMOTE_START_TIME, None)
            session = progress.get("session_id")
            if session and self._session != session:
                self._session = session
                self._hooks.session(str(session))
            relayed = self._relayed.setdefault(f"a{pending.attempt}", set())
            for number, data in progress.get("events") or ():
                if isinstance(number, int) and number not in relayed:
                    relayed.add(number)
                    self._hooks.event(agent_event(data))

    def unrelayed(self, result: dict[str, Any]) -> dict[str, Any]:
        """The worker's result without the events its heartbeats already brought."""
        relayed = self._relayed.get(str(result.get("lease")), set())
        events = [event for number, event in enumerate(result.get("events", ()))
                  if number not in relayed]  # fmt: skip
        return {**result, "events": events}
