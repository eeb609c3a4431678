"""A real gRPC proxy in front of one node that counts the calls it forwards, by method name.

A node started with ``--advertise`` set to the proxy's address is reached by its peers (the cluster
leader included) only through the proxy, so the counts are what the node received from the cluster;
the tests' own calls go to the node's listen address directly and are not counted. Requests and
answers are forwarded as raw bytes with their metadata (the bearer token) and deadline; a stream's
initial metadata is passed on before its first message, as the node sent it.

Stream faults, for the windows a follower of event streams must survive: ``break_streams`` ends every
live stream with UNAVAILABLE (as a dropped connection does), ``hold_streams`` keeps new streams from
reaching the node (not subscribed) until ``release_streams``, and ``drop_messages`` silently drops
stream messages that a predicate picks (an event lost without any sign of it).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from tests.support.procs import free_port

STREAMING = frozenset({"WatchEvents", "WatchEventBatches", "Watch"})  # and grpc.health.v1.Health.Watch
BATCHES = "WatchEventBatches"
"""Its messages are ``EventBatch``es: counted and dropped event by event, like ``WatchEvents``'s."""


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self._upstream = grpc.insecure_channel(upstream)
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._messages: Counter[str] = Counter()  # stream messages relayed, by method
        self._events = 0  # events relayed on either event stream
        self._in_flight: Counter[str] = Counter()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=32))
        self._server.add_generic_rpc_handlers((_Forward(self),))
        self._server.add_insecure_port(self.address)
        self._live: set[grpc.Future] = set()
        self._admit = threading.Event()
        self._admit.set()
        self._drop: Callable[[bytes], bool] = lambda raw: False

    def start(self) -> CountingProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0).wait(5)
        self._upstream.close()

    def count(self, method: str) -> int:
        with self._lock:
            return self._calls[method]

    def messages(self, method: str) -> int:
        """Stream messages of ``method`` relayed so far."""
        with self._lock:
            return self._messages[method]

    def events(self) -> int:
        """Events relayed so far on ``WatchEvents`` and ``WatchEventBatches`` streams (a batch's each)."""
        with self._lock:
            return self._events

    def live_streams(self) -> int:
        """Streams forwarded and not yet ended."""
        with self._lock:
            return len(self._live)

    def counted(self, method: str) -> None:
        with self._lock:
            self._calls[method] += 1

    def in_flight(self, method: str) -> int:
        """Calls of ``method`` forwarded and not yet ended (answered, failed or cancelled)."""
        with self._lock:
            return self._in_flight[method]

    def unary(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        name = method.rsplit("/", 1)[-1]
        call = self._upstream.unary_unary(method).future(
            request, timeout=_timeout(context), metadata=context.invocation_metadata())
        context.add_callback(call.cancel)  # the caller went away: so does the forwarded call, as a peer's would
        with self._lock:
            self._in_flight[name] += 1
        try:
            return bytes(call.result())
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details() or "")  # type: ignore[attr-defined]
            raise
        except grpc.FutureCancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "cancelled by the caller")  # type: ignore[attr-defined]
            raise
        finally:
            with self._lock:
                self._in_flight[name] -= 1

    def break_streams(self) -> None:
        """End every live stream at once, as a connection lost between the peers does."""
        with self._lock:
            live = list(self._live)
        for call in live:
            call.cancel()

    def hold_streams(self) -> None:
        """New streams wait here, unsubscribed at the node, until ``release_streams``."""
        self._admit.clear()

    def release_streams(self) -> None:
        self._admit.set()

    def drop_messages(self, predicate: Callable[[bytes], bool]) -> None:
        """Stream messages for which ``predicate(raw)`` holds are dropped without a trace; on a
        ``WatchEventBatches`` stream, each event (``raw``: its ``Event`` message) of a batch."""
        self._drop = predicate

    def stream(self, method: str, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        while not self._admit.wait(0.05):
            if not context.is_active():
                return
        call = self._upstream.unary_stream(method)(request, timeout=_timeout(context),
                                                   metadata=context.invocation_metadata())
        context.add_callback(call.cancel)
        with self._lock:
            self._live.add(call)
        try:
            context.send_initial_metadata(call.initial_metadata())
            name = method.rsplit("/", 1)[-1]
            for raw in call:
                events = 1
                if name == BATCHES:
                    batch = pb.EventBatch.FromString(raw)
                    kept = [ev for ev in batch.events if not self._drop(ev.SerializeToString())]
                    raw, events = pb.EventBatch(events=kept).SerializeToString(), len(kept)
                    if not kept:
                        continue
                elif self._drop(raw):
                    continue
                with self._lock:
                    self._messages[name] += 1
                    if name in ("WatchEvents", BATCHES):
                        self._events += events
                yield raw
        except grpc.RpcError as exc:
            code = grpc.StatusCode.UNAVAILABLE if exc.code() == grpc.StatusCode.CANCELLED else exc.code()
            context.abort(code, exc.details() or "")  # type: ignore[attr-defined]
        finally:
            with self._lock:
                self._live.discard(call)


def _timeout(context: grpc.ServicerContext) -> float | None:
    """The caller's deadline; none at all reads as ~2**63 s, which the upstream call cannot take."""
    left = context.time_remaining()
    return None if left is None or left > 1e6 else left


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, proxy: CountingProxy) -> None:
        self._proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method  # type: ignore[attr-defined]
        name = method.rsplit("/", 1)[-1]
        self._proxy.counted(name)
        if name in STREAMING:
            return grpc.unary_stream_rpc_method_handler(
                lambda req, ctx: self._proxy.stream(method, req, ctx))
        return grpc.unary_unary_rpc_method_handler(lambda req, ctx: self._proxy.unary(method, req, ctx))
