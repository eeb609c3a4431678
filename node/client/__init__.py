"""The client library: ``Client`` (synchronous, thread-safe) and ``AsyncClient`` (asyncio), one
implementation underneath (``aio.py``; ``sync.py`` says why), over the routing layer ``node_pool.py`` that
the REST surface shares. Import the public names from ``taskward`` itself."""

from __future__ import annotations

from taskward.client.aio import AsyncClient, AsyncTaskHandle
from taskward.client.cluster_events import ClusterEventStream
from taskward.client.events import EventStream, TaskEventStream
from taskward.client.status import TaskChild, TaskStatus
from taskward.client.sync import Client, ClusterEventIterator, EventIterator, TaskHandle

__all__ = [
    "AsyncClient",
    "AsyncTaskHandle",
    "Client",
    "ClusterEventIterator",
    "ClusterEventStream",
    "EventIterator",
    "EventStream",
    "TaskChild",
    "TaskEventStream",
    "TaskHandle",
    "TaskStatus",
]
