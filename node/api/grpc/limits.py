"""The gRPC surface's cap on long-lived calls, so that streams which never end cannot starve short calls.

gRPC itself bounds the whole server (``maximum_concurrent_rpcs``: one call more is answered
``RESOURCE_EXHAUSTED``, "Concurrent RPC limit exceeded!") and each connection (HTTP/2
``MAX_CONCURRENT_STREAMS``), see ``GrpcLimits.server_options``. Those count every call alike: enough
``WatchEvents`` followers would take every slot for good, and a ``StartTask`` would then be refused.
This wrapper gives long-lived calls — the server-streaming methods and a ``WaitTask`` that may
block (no timeout, or a positive one) — a cap of their own, below the total, so the difference always
remains for short calls. It runs first, before authentication, and costs a short call nothing: only
long-lived handlers are wrapped, once, as they are registered (``method_wrappers``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from taskward.errors import TaskwardError
from taskward.log_throttle import LogThrottle

if TYPE_CHECKING:  # grpc-stubs makes these generic; grpc's own classes are not subscriptable
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Context = grpc.aio.ServicerContext

logger = logging.getLogger(__name__)

WAIT_METHOD = "/taskward.v1.TaskManager/WaitTask"
"""Unary, but it may block as long as its timeout says (or without limit): long-lived unless the timeout is 0."""


class TooManyStreams(TaskwardError):
    """Every long-lived slot is taken; short calls still get through. Retry later."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, limit: int) -> None:
        super().__init__(f"too many event streams and waits in progress (limit {limit}); try again later")


class StreamLimit:
    """Counts long-lived calls in progress and refuses one more than ``max_streams``. Applied once per
    method as it is registered (``method_wrappers``)."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.active = 0
        self._throttle = LogThrottle(logger)

    def wrap(self, method: str, handler: Handler) -> Handler:
        if not (handler.response_streaming or method == WAIT_METHOD):
            return handler
        return self._wrap(handler)

    def _wrap(self, handler: Handler) -> Handler:
        # grpc-stubs types the behaviours as synchronous; on a grpc.aio server they are coroutine functions
        # and async generator functions.
        unary: Any = handler.unary_unary
        stream: Any = handler.unary_stream
        if stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wait(unary), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # a client-streaming method: none is served

    async def _enter(self, context: Context) -> None:
        if self.active >= self.max_streams:
            self._throttle.log("gRPC: %d event streams and waits in progress (the limit); new ones are refused",
                               self.max_streams)
            exc = TooManyStreams(self.max_streams)
            await context.abort(exc.code, exc.message)
        self.active += 1

    def _stream(self, behavior: Callable[[Any, Context], AsyncIterator[Any]]
                ) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def counted(request: Any, context: Context) -> AsyncIterator[Any]:
            await self._enter(context)
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                self.active -= 1

        return counted

    def _wait(self, behavior: Callable[[Any, Context], Awaitable[Any]]) -> Callable[[Any, Context], Awaitable[Any]]:
        async def counted(request: Any, context: Context) -> Any:
            if request.HasField("timeout") and request.timeout == 0:  # a look, not a wait
                return await behavior(request, context)
            await self._enter(context)
            try:
                return await behavior(request, context)
            finally:
                self.active -= 1

        return counted
