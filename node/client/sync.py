"""``Client``: the client library for synchronous code, thread-safe, on top of ``AsyncClient``.

Why one implementation: failover, owner routing, error mapping and resumable event streams are
subtle, and two copies would drift. The asyncio one is the original because the REST surface (and any
asyncio application) needs it without threads, and because ``grpc.aio`` multiplexes any number of
concurrent calls and streams on one channel per node, where blocking stubs would need a thread per
stream. ``Client`` therefore owns a private event loop in a daemon thread and hands each call to it
with ``asyncio.run_coroutine_threadsafe``: any number of threads may call one ``Client`` at once (their
calls run concurrently on that loop), and the cost is two thread wake-ups per call
(``bench/client_bench.py`` measures it against a raw stub called the same way).

A ``Client`` must not be called from its own loop's thread (nothing of the caller's runs there, so this
only happens through a callback of ours) — that would deadlock, and raises ``RuntimeError`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from taskward.client.aio import AsyncClient, AsyncTaskHandle, Path
from taskward.client.cluster_events import ClusterEventStream
from taskward.client.events import Event, EventStream
from taskward.client.node_pool import DEFAULT, Service
from taskward.client.status import TaskStatus

T = TypeVar("T")
CLOSE_TIMEOUT_S = 10.0


class _Loop:
    """The private loop and its thread; ``run`` hands a coroutine to it and blocks for the answer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="taskward-client", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.get_ident() == self.thread.ident:
            coro.close()
            raise RuntimeError("a taskward.Client cannot be called from its own event loop thread")
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("the client is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # e.g. KeyboardInterrupt in the caller: do not leave the call running
            raise

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(CLOSE_TIMEOUT_S)
            if not self.thread.is_alive():
                self.loop.close()


def _shutdown(runner: _Loop, client: AsyncClient) -> None:
    """Close the async client on its loop, then stop the loop (``close()``, or the client collected)."""
    if runner.loop.is_closed():
        return
    if threading.get_ident() != runner.thread.ident:
        fut = asyncio.run_coroutine_threadsafe(client.close(), runner.loop)
        try:
            fut.result(CLOSE_TIMEOUT_S)
        except Exception:  # closing is best effort; the loop stops either way
            fut.cancel()
        runner.stop()
    else:
        runner.loop.stop()


class EventIterator(Iterator[Event]):
    """An event stream for synchronous code: iterate it; ``close()`` (or leaving ``with``) stops it and may
    be called from another thread while one waits in ``next``, which then ends the iteration."""

    def __init__(self, client: Client, stream: EventStream | ClusterEventStream) -> None:
        self._client = client  # keeps the client (and its loop) alive while the iterator is
        self._runner = client._runner
        self._stream = stream

    def __iter__(self) -> EventIterator:
        return self

    def __next__(self) -> Event:
        try:
            return self._runner.run(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    @property
    def positions(self) -> dict[str, int]:
        """The last sequence taken from each node (see ``EventStream.positions``)."""
        return self._stream.positions

    def close(self) -> None:
        if not self._runner.loop.is_closed():
            self._runner.run(self._stream.aclose())

    def __enter__(self) -> EventIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        loop = self._runner.loop
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing: its streams go with it
                asyncio.run_coroutine_threadsafe(self._stream.aclose(), loop)


class TaskHandle:
    """One task, by id, for synchronous code (see ``AsyncTaskHandle``, whose methods these run)."""

    __slots__ = ("_async", "_client", "_runner")

    def __init__(self, client: Client, handle: AsyncTaskHandle) -> None:
        self._client = client  # keeps the client (and its loop) alive while the handle is
        self._runner = client._runner
        self._async = handle

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r})"

    @property
    def id(self) -> str:
        return self._async.id

    def status(self, *, unregister: bool = False) -> TaskStatus:
        """The task's current status (``unregister=True``: ScyllaDB's read, which unregisters a finished root)."""
        return self._runner.run(self._async.status(unregister=unregister))

    def wait(self, timeout: float | None = None) -> TaskStatus:
        """Until the task has finished; its final status. ``TaskFailed`` when it failed or was aborted,
        ``WaitTimeout`` (a ``TimeoutError``) after ``timeout`` seconds."""
        return self._runner.run(self._async.wait(timeout))

    def result(self, timeout: float | None = None) -> Any:
        """Waits, then what the task's body returned."""
        return self._runner.run(self._async.result(timeout))

    def abort(self) -> None:
        self._runner.run(self._async.abort())

    def tree(self, *, unregister: bool = False) -> list[TaskStatus]:
        """The task and its descendants, breadth first, root first."""
        return self._runner.run(self._async.tree(unregister=unregister))

    def events(self) -> EventIterator:
        """This task's events until it has finished; subscribed when this returns, so nothing it does from
        then on is missed."""
        return EventIterator(self._client, self._runner.run(_subscribed(self._async.events,
                                                                        self._client._async.timeout)))


class ClusterEventIterator(EventIterator):
    """``Client.cluster_events``: an ``EventIterator`` whose ``position`` resumes it (``ClusterEventStream``)."""

    def __init__(self, client: Client, stream: ClusterEventStream) -> None:
        super().__init__(client, stream)
        self._merged = stream

    @property
    def position(self) -> str:
        """The resume token of what was taken so far: ``client.cluster_events(after=position)`` continues here."""
        return self._merged.position


St = TypeVar("St", bound="EventStream | ClusterEventStream")


async def _subscribed(open_stream: Callable[[], St], bound_s: float) -> St:
    """Open a stream on the loop (its channels and tasks belong there) and wait until it follows every
    node, at most ``bound_s`` seconds (a node that neither answers nor refuses is then followed later)."""
    stream = open_stream()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(bound_s):
            await stream.subscribed()
    return stream


class Client:
    """taskward's client for synchronous code; thread-safe. The same constructor and methods as
    ``AsyncClient`` (which it runs: see the module docstring), as plain calls and iterators.

    ``with Client("127.0.0.1:7100") as client: client.start("builtin", "sleep", duration=1).wait()``
    """

    def __init__(self, nodes: str | Sequence[str], *, token: str | None = None, tls_ca: Path | None = None,
                 tls_cert: Path | None = None, tls_key: Path | None = None, timeout: float = 30.0) -> None:
        self._async = AsyncClient(nodes, token=token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                                  timeout=timeout)
        self._runner = _Loop()
        self._finalizer = weakref.finalize(self, _shutdown, self._runner, self._async)

    def __repr__(self) -> str:
        return f"Client({self.addresses!r})"

    @property
    def addresses(self) -> list[str]:
        return self._async.addresses

    def close(self) -> None:
        """Ends open event iterators, closes the channels and stops the private loop; idempotent."""
        self._finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _handle(self, handle: AsyncTaskHandle) -> TaskHandle:
        return TaskHandle(self, handle)

    # ---------------------------------------------------------------- tasks

    def start(self, module: str, type: str, /, *, idempotency_key: str | None = None, cluster: bool = False,
              nodes: Sequence[str] | None = None, keyspace: str | None = None, table: str | None = None,
              entity: str | None = None, **args: Any) -> TaskHandle:
        """Starts a task of ``module:type`` with ``args`` as its arguments (see ``AsyncClient.start``)."""
        return self.start_with_args(module, type, args, idempotency_key=idempotency_key, cluster=cluster,
                                    nodes=nodes, keyspace=keyspace, table=table, entity=entity)

    def start_with_args(self, module: str, type: str, args: Mapping[str, Any], /, *,
                        idempotency_key: str | None = None, cluster: bool = False, nodes: Sequence[str] | None = None,
                        keyspace: str | None = None, table: str | None = None,
                        entity: str | None = None) -> TaskHandle:
        """``start`` with the arguments as one mapping (any argument name works)."""
        return self._handle(self._runner.run(self._async.start_with_args(
            module, type, args, idempotency_key=idempotency_key, cluster=cluster, nodes=nodes, keyspace=keyspace,
            table=table, entity=entity)))

    def task(self, task_id: str) -> TaskHandle:
        """A handle for an existing task (no call is made)."""
        return self._handle(self._async.task(task_id))

    def tasks(self, module: str, internal: bool = False, keyspace: str | None = None,
              table: str | None = None) -> list[TaskStatus]:
        """The listing of ``module`` (``partial`` entries: see ``AsyncClient.tasks``)."""
        return self._runner.run(self._async.tasks(module, internal, keyspace, table))

    def modules(self) -> list[str]:
        return self._runner.run(self._async.modules())

    def nodes(self) -> list[dict[str, Any]]:
        return self._runner.run(self._async.nodes())

    def events(self, after: int | Mapping[str, int] | None = None, *, types: Sequence[str] = ()) -> EventIterator:
        """Events of every listed node, resumed by themselves (see ``AsyncClient.events``, and ``types``
        there); subscribed when this returns (each node's first attempt is over, or ``timeout`` passed), so
        with ``after=None`` nothing published from then on by a reachable node is missed."""
        return EventIterator(self, self._runner.run(_subscribed(lambda: self._async.events(after, types=types),
                                                                self._async.timeout)))

    def cluster_events(self, after: str | int | None = None, *, types: Sequence[str] = ()) -> ClusterEventIterator:
        """Every listed node's events merged, each with ``node`` (its id), resumable by ``position`` (see
        ``AsyncClient.cluster_events``); subscribed when this returns, like ``events``."""
        def open_stream() -> ClusterEventStream:
            return self._async.cluster_events(after, types=types)

        return ClusterEventIterator(self, self._runner.run(_subscribed(open_stream, self._async.timeout)))

    # ---------------------------------------------------------------- settings and cron

    def ttl(self, *, user: bool = False) -> int:
        return self._runner.run(self._async.ttl(user=user))

    def set_ttl(self, seconds: int, *, user: bool = False) -> int:
        return self._runner.run(self._async.set_ttl(seconds, user=user))

    def drain(self, module: str) -> int:
        return self._runner.run(self._async.drain(module))

    def schedules(self) -> list[dict[str, Any]]:
        return self._runner.run(self._async.schedules())

    def schedule(self, schedule_id: str) -> dict[str, Any]:
        return self._runner.run(self._async.schedule(schedule_id))

    def put_schedule(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        return self._runner.run(self._async.put_schedule(entry))

    def put_schedules(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return self._runner.run(self._async.put_schedules(entries))

    def delete_schedule(self, schedule_id: str) -> None:
        self._runner.run(self._async.delete_schedule(schedule_id))

    def enable_schedule(self, schedule_id: str, enabled: bool = True) -> dict[str, Any]:
        return self._runner.run(self._async.enable_schedule(schedule_id, enabled))

    def run_schedule_now(self, schedule_id: str) -> dict[str, Any]:
        return self._runner.run(self._async.run_schedule_now(schedule_id))

    def call(self, method: str, request: Any, *, service: Service = "tasks", task_id: str | None = None,
             deadline: float | None = DEFAULT) -> Any:
        """Any rpc with its generated messages (see ``AsyncClient.call``)."""
        return self._runner.run(self._async.call(method, request, service=service, task_id=task_id,
                                                 deadline=deadline))
