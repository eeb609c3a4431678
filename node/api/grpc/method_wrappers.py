"""A servicer's method handlers wrapped once, when they are registered, rather than on every call.

grpc's server interceptors are asked for the handler of every call: per call, a coroutine for each
interceptor and for the continuation, on the path of even the cheapest read. taskward's two wrappers (the
cap on long-lived calls, ``limits.py``, and the auth guard, ``auth.py``) decide from the method's name and
its handler alone, so ``WrappingServer`` applies them as the generated ``add_*Servicer_to_server``
functions register each handler. Services registered on the server itself (reflection) are left as
they are, as the wrappers would leave them.

Every method is served through the generic handlers, none as a *registered* method: for each call it
accepts, grpc.aio's server loop waits again on one pending future per registered method (``asyncio.wait``
over all of them, a callback added and removed on each), which costs more than the lookup it saves:
4% of a trivial call's server CPU with one 16-method service (``bench/grpc_registration.py``), and a
node serves about 25 methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import grpc

if TYPE_CHECKING:  # grpc-stubs makes these generic; grpc's own classes are not subscriptable
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler


class HandlerWrapper(Protocol):
    def wrap(self, method: str, handler: Handler) -> Handler:
        """The handler to serve ``method`` (``/package.Service/Method``) with: ``handler`` or a wrapper of it."""
        ...


class WrappingServer:
    """Stands for the server in ``add_*Servicer_to_server(servicer, WrappingServer(server, wrappers))``: each
    method handler passes through ``wrappers`` on its way in, the first listed outermost."""

    def __init__(self, server: grpc.aio.Server, wrappers: Sequence[HandlerWrapper]) -> None:
        self._server = server
        self._wrappers = tuple(reversed(wrappers))

    def _wrap(self, method: str, handler: Handler) -> Handler:
        for wrapper in self._wrappers:
            handler = wrapper.wrap(method, handler)
        return handler

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        """Not passed on: the generated code registers the same handlers as a generic handler too, and
        those serve every call (see the module's docstring for why)."""

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self._server.add_generic_rpc_handlers([_WrappedGeneric(h, self._wrap) for h in handlers])


class _WrappedGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # generic in grpc-stubs only
    """A generic handler whose handlers come out wrapped (each wrapped once, when first asked for)."""

    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any], wrap: Callable[[str, Handler], Handler]) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:  # not one of this service's methods
            return None
        method = handler_call_details.method
        kept = self._wrapped.get(method)
        if kept is None or kept[0] is not handler:
            kept = self._wrapped[method] = (handler, self._wrap(method, handler))
        return kept[1]
