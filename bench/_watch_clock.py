"""When an etcd watch, opened by a bench beside the nodes' own watches, first delivered each key: a
reference for how soon the nodes can have a record, taken without asking them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import grpc

MAX_WATCH_READS = 1_000_000
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # a stream's end; missing from grpc's stubs


class WatchClock:
    """When a plain etcd watch on the cluster's record prefix, opened by the bench, first delivered each
    record: how soon the nodes' own watches (same prefix, same etcd) can have it, without asking them."""

    def __init__(self, channel: grpc.aio.Channel, prefix: str) -> None:
        from aetcd import rpc

        self._rpc = rpc
        self._call: Any = rpc.WatchStub(channel).Watch()
        self._prefix = prefix.encode()
        self.first_seen: dict[str, float] = {}
        self._news = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Returns once etcd confirmed the watch, so every later record is delivered to it."""
        end = self._prefix[:-1] + bytes([self._prefix[-1] + 1])
        await self._call.write(self._rpc.WatchRequest(
            create_request=self._rpc.WatchCreateRequest(key=self._prefix, range_end=end)))
        resp = await self._call.read()
        if resp is EOF or not resp.created:
            raise RuntimeError("etcd did not create the bench's watch")
        self._reader = asyncio.create_task(self._read(), name="scale-bench-watch")

    async def _read(self) -> None:
        for _ in range(MAX_WATCH_READS):
            resp = await self._call.read()
            if resp is EOF:
                return
            now = time.perf_counter()
            for ev in resp.events:
                self.first_seen.setdefault(ev.kv.key[len(self._prefix):].decode(), now)
            self._news.set()

    async def seen_at(self, task_id: str, within_s: float) -> float | None:
        """The ``perf_counter()`` reading when the record of ``task_id`` first arrived; None if not in time."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while task_id not in self.first_seen:
                    self._news.clear()
                    await self._news.wait()
        return self.first_seen.get(task_id)

    async def close(self) -> None:
        self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self._reader
