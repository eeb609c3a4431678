"""The gateway's ``GET /events``: every listed node's events as one SSE stream (``ClusterEventStream``).

Each frame's ``data`` is the event's JSON as a node's own ``/events`` sends it, plus ``node`` (the node's
id); its ``id`` is the resume token after that event, which a client sends back as ``Last-Event-ID`` (a
browser's ``EventSource`` does so by itself) or ``?after=`` to continue exactly there. A node's own
``--rest`` keeps serving its own stream (``id`` = sequence): only a gateway merges.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import orjson

from taskward.api.rest.common import parse_uint
from taskward.client.cluster_events import ClusterEventStream
from taskward.client.event_token import decode_token
from taskward.client.node_pool import NodePool

SUBSCRIBE_WAIT_S = 5.0
Start = str | int | None
"""Where a merged stream starts: a resume token, one sequence for every node, or None (live)."""


def merged_start(last_event_id: str | None, after: str | None, live: bool) -> Start:
    """Where the client asked to start, checked now (before the stream opens, so a bad value is a 400):
    ``Last-Event-ID``, else ``?after=`` (a token, or a plain sequence number for every node), else live
    with ``live=true``, else the oldest retained event of every node (as a node's own ``/events``)."""
    for name, value in (("Last-Event-ID", last_event_id), ("after", after)):
        if value is not None and value.strip():
            text = value.strip()
            if text.isascii() and text.isdigit():
                return parse_uint(name, text)
            decode_token(text)  # InvalidArgument (400) naming what is wrong
            return text
    return None if live else 0


async def merged_frames(pool: NodePool, start: Start, types: list[str]) -> AsyncGenerator[bytes, None]:
    """SSE frames of the merged stream, until the caller stops reading (its node streams close with it).

    Once every node's first subscription attempt is over (at most ``SUBSCRIBE_WAIT_S``), a frame with only
    an ``id`` (no ``data``: ``EventSource`` updates its last event id and dispatches nothing) and a
    ``: subscribed`` comment go out: a live stream's reconnect then resumes from where it began, not from
    a new "now", and a client that must not miss what it does next waits for the comment first."""
    stream = ClusterEventStream(pool, start, types=types)
    try:
        with contextlib.suppress(TimeoutError):  # a node that neither answers nor refuses is followed later
            async with asyncio.timeout(SUBSCRIBE_WAIT_S):
                await stream.subscribed()
        position = stream.position
        yield (b"id: %s\n: subscribed\n\n" % position.encode()) if position else b": subscribed\n\n"
        async for event in stream:
            yield b"id: %s\nevent: %s\ndata: %s\n\n" % (stream.position.encode(), event["type"].encode(),
                                                        orjson.dumps(event))
    finally:
        await stream.aclose()
