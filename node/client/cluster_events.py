"""One event stream of a whole cluster: every listed node's events merged, resumable by one token.

``ClusterEventStream`` is what the gateway's ``GET /events`` serves and what ``AsyncClient.cluster_events``
/ ``Client.cluster_events`` return. It keeps one ``WatchEvents`` stream per listed node and hands out
their events as one async iterator of event dicts (``taskward.convert.event_pb_to_dict`` plus ``node``,
the node's **id**). After every event, ``position`` is a resume token (``taskward.client.event_token``)
naming, for each node, the last event the reader took: a new stream started from it continues exactly
there, so across any number of disconnects every event of every node arrives once.

How nodes are followed:

- Positions are keyed by node id, learnt from each stream's initial metadata (``NODE_KEY``), together
  with the epoch of the node's numbering (``EPOCH_KEY``). Until an address has answered once, the
  stream does not know which node it is: its first subscription is a live probe, answered at once with
  the metadata, and then it subscribes from that node's position.
- A node that goes away (killed, restarting, cut off) is retried with backoff (50 ms to 2 s) while the
  others keep flowing; when it answers again it is resumed after the last event taken from it, and
  replays what it committed meanwhile (sequences are durable: a restart from the same data dir
  continues them).
- A node that comes back with a new database (a new epoch: its numbering started again) is replayed
  from its oldest retained event, since nothing of that numbering was seen yet. The reader sees those
  events like any others (their ``sequence`` is lower than the node's earlier ones).
- A node is followed once even when two listed addresses lead to it (events it already gave are not
  given again).
- Errors a retry cannot fix (a refused token or argument) end the stream with that error.

The reader's position moves only as the reader takes events (a bounded queue sits between the node
streams and the reader), so the token never skips an event still waiting in the queue.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from taskward.client.event_token import NodePosition, decode_token, entry, join
from taskward.client.events import BACKOFF_MAX_S, BACKOFF_MIN_S, FATAL, QUEUE_SIZE, Event
from taskward.client.node_pool import NodePool, NodeStubs, rpc_error
from taskward.convert import event_pb_to_dict
from taskward.errors import InvalidArgument
from taskward.events import EPOCH_KEY, NODE_KEY, POSITION_KEY
from taskward.pb.taskward.v1 import tasks_pb2 as pb

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Item:
    event: Event
    node_id: str
    epoch: str
    sequence: int


class _End:
    """Queued once the stream is over; stays queued, so every later read ends too."""


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


_END = _End()


def node_key(address: str) -> str:
    """The key of a node that does not say its id (an older version): its address, spelt as a node id."""
    return address.replace(":", "_").replace("[", "").replace("]", "")


class ClusterEventStream:
    """Events of every node in ``pool``, merged and resumable (see the module docstring).

    ``after=None`` follows every node live from the moment its stream is subscribed; ``after=N`` replays
    what each node retained after sequence N; ``after=TOKEN`` (an earlier ``position``) resumes each node
    it names where that stream stood, and replays the others from their oldest retained event (nothing of
    theirs was seen). A malformed token raises ``InvalidArgument`` here, before anything is opened.
    ``await stream.subscribed()`` returns once every node's first subscription attempt is over.
    Close it with ``aclose()`` (or ``async with``); that cancels every node stream.
    """

    def __init__(self, pool: NodePool, after: str | int | None = None, *,
                 on_close: Callable[[ClusterEventStream], None] | None = None, types: Sequence[str] = ()) -> None:
        self._pool = pool
        self._types = list(types)
        self._on_close = on_close
        self._live = after is None
        self._default = NodePosition("", 0)  # where a node the start does not name begins (not live)
        positions: dict[str, NodePosition] = {}
        if isinstance(after, bool) or (isinstance(after, int) and after < 0):
            raise InvalidArgument(f"after must be a resume token or a sequence number >= 0, got {after!r}")
        if isinstance(after, int):
            self._default = NodePosition("", after)
        elif isinstance(after, str):
            positions = decode_token(after)
        self._taken = dict(positions)  # node side: the last event queued from each node
        self._read = {node_id: entry(node_id, p) for node_id, p in positions.items()}  # reader side, encoded
        self._read_seq = {node_id: p.sequence for node_id, p in positions.items()}
        self._token: str | None = after if isinstance(after, str) else None
        self._ids: dict[str, str] = {}  # address → node id, once it answered
        self._queue: asyncio.Queue[_Item | _End | _Failure] = asyncio.Queue(QUEUE_SIZE)
        self._tasks: list[asyncio.Task[None]] = []
        self._first_attempts = 0
        self._all_attempted = asyncio.Event()
        self._closed = False

    # ---------------------------------------------------------------- reader side

    def __aiter__(self) -> ClusterEventStream:
        return self

    async def __anext__(self) -> Event:
        if not self._tasks and not self._closed:
            self._start()
        item = await self._queue.get()
        if isinstance(item, _Item):
            self._read[item.node_id] = f"{item.node_id}:{item.epoch}:{item.sequence}"
            self._read_seq[item.node_id] = item.sequence
            self._token = None
            return item.event
        if isinstance(item, _End):
            self._queue.put_nowait(item)
            raise StopAsyncIteration
        await self.aclose()
        raise item.error

    async def __aenter__(self) -> ClusterEventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def position(self) -> str:
        """The resume token of what the reader has taken so far ("" before anything is known)."""
        if self._token is None:
            self._token = join(self._read.values())
        return self._token

    @property
    def positions(self) -> dict[str, int]:
        """The last sequence the reader took from each node, by node id (for display; resume with ``position``)."""
        return dict(self._read_seq)

    async def subscribed(self) -> None:
        """Until every node's first subscription attempt is over (subscribed, or failed and retrying)."""
        if not self._tasks and not self._closed:
            self._start()
        await self._all_attempted.wait()

    async def aclose(self) -> None:
        """Cancel every node stream and end the iterator; idempotent, and safe while a read is waiting."""
        if self._closed:
            return
        self._closed = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)
        self._all_attempted.set()
        if self._on_close is not None:
            self._on_close(self)

    # ---------------------------------------------------------------- node side

    def _start(self) -> None:
        asyncio.get_running_loop()  # raises RuntimeError outside a loop
        self._tasks = [asyncio.create_task(self._follow(n), name=f"taskward-cluster-events-{n.address}")
                       for n in self._pool.nodes]

    def _attempted(self) -> None:
        self._first_attempts += 1
        if self._first_attempts == len(self._pool.nodes):
            self._all_attempted.set()

    def _wanted(self, node_id: str | None) -> NodePosition | None:
        """Where to subscribe a node from: after its position, or None for a live subscription (a live
        stream, or an address not known yet, which a live probe identifies)."""
        if node_id is None:
            return None
        return self._taken.get(node_id, None if self._live else self._default)

    async def _follow(self, node: NodeStubs) -> None:
        first, backoff, was_up, quick = True, BACKOFF_MIN_S, True, False
        while True:
            asked = self._wanted(self._ids.get(node.address))
            req = pb.WatchEventsRequest(live_only=asked is None, after_sequence=0 if asked is None else asked.sequence,
                                        types=self._types)
            call = node.watch_events(req)
            try:
                metadata = dict(await call.initial_metadata() or ())
                node_id = str(metadata.get(NODE_KEY) or node_key(node.address))
                epoch = str(metadata.get(EPOCH_KEY, ""))
                self._ids[node.address] = node_id
                start = self._subscribed_at(node_id, epoch, asked, metadata)
                if start is None:  # the probe, or a numbering that started again: subscribe from the right place
                    if not quick:
                        quick = True
                        continue
                    raise _Resubscribe()
                quick = False
                if not was_up:
                    logger.info("events of node %s (%s) followed again after sequence %d", node_id, node.address,
                                start.sequence)
                was_up = True
                if first:
                    first = False
                    self._attempted()
                async for ev in call:
                    taken = self._taken.get(node_id)
                    if taken is not None and ev.sequence <= taken.sequence and taken.epoch == epoch:
                        continue  # given already (the node replays strictly after the position anyway)
                    self._taken[node_id] = NodePosition(epoch, ev.sequence)
                    backoff = BACKOFF_MIN_S
                    await self._queue.put(_Item({"node": node_id, **event_pb_to_dict(ev)}, node_id, epoch,
                                                ev.sequence))
                logger.debug("events of %s ended; resuming", node.address)
            except grpc.aio.AioRpcError as exc:
                err = rpc_error(exc)
                if isinstance(err, FATAL):
                    await self._queue.put(_Failure(err))
                    return
                quick = False
                if was_up:
                    logger.info("events of %s unreachable (%s); following again once it answers", node.address,
                                err.message)
                was_up = False
            except _Resubscribe:
                pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: end the reader loudly rather than hang it
                logger.exception("following the events of %s failed", node.address)
                await self._queue.put(_Failure(exc))
                return
            finally:
                call.cancel()
            if first:
                first = False
                self._attempted()
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _subscribed_at(self, node_id: str, epoch: str, asked: NodePosition | None,
                       metadata: dict[str, Any]) -> NodePosition | None:
        """The position this subscription continues from, or None when it is not the one we want (resubscribe).

        A live subscription of a node without a position pins it where the node says the stream starts,
        for the reader too (nothing of that node is queued before it)."""
        wanted = self._wanted(node_id)
        if wanted is None:
            if asked is not None:
                return None
            pinned = self._taken[node_id] = NodePosition(epoch, int(metadata.get(POSITION_KEY, 0)))
            if node_id not in self._read:
                self._read[node_id] = entry(node_id, pinned)
                self._read_seq[node_id] = pinned.sequence
                self._token = None
            return pinned
        if wanted.epoch and epoch and wanted.epoch != epoch:
            logger.info("node %s numbers its events anew (epoch %s, was %s): replaying what it retained", node_id,
                        epoch, wanted.epoch)
            wanted = self._taken[node_id] = NodePosition(epoch, 0)
        if asked is None or asked.sequence != wanted.sequence:
            return None
        self._taken[node_id] = NodePosition(epoch, wanted.sequence)
        return self._taken[node_id]


class _Resubscribe(Exception):
    """The node answered twice in a row on a subscription it should not have been given: back off first."""
