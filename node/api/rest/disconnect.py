"""Ending a long REST call when its client goes away.

A ``wait_task`` holds a gRPC call to the task's node until the task ends or its timeout passes. An
ASGI server does not cancel a handler whose client disconnected; it only reports the disconnect on the
request's ``receive`` channel. Without watching it, every abandoned wait kept its gRPC call (and the
node's waiter) for as long as the task ran, so clients that time out and retry piled them up.
``unless_disconnected`` runs the call beside a watcher of that channel and cancels the call the moment
the client is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import grpc
from starlette.requests import Request
from starlette.types import Receive

from taskward.errors import TaskwardError

T = TypeVar("T")


class ClientGone(TaskwardError):
    """The client closed the connection before the answer was ready. Nobody reads this answer; its
    status (nginx's 499, "client closed request") is what the request metrics record."""

    grpc_code = grpc.StatusCode.CANCELLED
    http_override = 499

    def __init__(self) -> None:
        super().__init__("the client closed the request before the answer was ready")


async def _disconnect(receive: Receive) -> None:
    """Returns when the server reports the client gone. Only for handlers that do not read the body
    themselves: this reads (and drops) whatever body arrives meanwhile."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, call: Awaitable[T]) -> T:
    """``await call``, unless the client disconnects first: then the call is cancelled (which cancels its
    gRPC call on the node) and ``ClientGone`` is raised."""
    work = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(_disconnect(request.receive))
    try:
        await asyncio.wait((work, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler itself is cancelled (server shutdown)
        watcher.cancel()
        if not work.done():
            work.cancel()
    if work.cancelled() or not work.done():
        await asyncio.gather(work, return_exceptions=True)  # let the cancellation finish before answering
        raise ClientGone()
    return work.result()
