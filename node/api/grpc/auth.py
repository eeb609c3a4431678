"""Authentication, roles and the audit log on the gRPC surface.

The guard wraps each method's handler once, as it is registered (``method_wrappers``); the wrapper,
which has the ``ServicerContext`` (and so the caller's address, which the failed-auth limit and the audit
log need, and which an interceptor would not see), runs the flow of
``taskward.security.access`` before the servicer: authenticate, authorize, call, audit a mutation before
its answer leaves. Health checks and reflection pass untouched.

A start that sets a field only nodes set (``roles.INTERNAL_START_FIELDS``) is the operation
``task.start_internal`` (role ``node``), decided here from the request, so the servicers stay free of
permission checks. The caller's ``Principal`` is in ``CALLER`` while the servicer runs
(``current_principal()``), for code that needs to know who asked.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from taskward.errors import CODE_BY_VALUE, TaskwardError
from taskward.pb.taskward.v1 import cron_pb2
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.security.access import AUDITED_KEY, AccessControl, peer_text
from taskward.security.roles import (
    GRPC_METHODS,
    GRPC_OPEN_PREFIXES,
    INTERNAL_START_FIELDS,
    TASK_START,
    TASK_START_INTERNAL,
    UNLISTED,
    Operation,
)
from taskward.security.tokens import Principal

if TYPE_CHECKING:  # grpc-stubs makes these generic; grpc's own classes are not subscriptable
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Context = grpc.aio.ServicerContext

CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("taskward_caller", default=None)


def current_principal() -> Principal | None:
    """Who made the gRPC call being served (None when auth is off)."""
    return CALLER.get()


class AuthGuard:
    """Wraps every served method but health and reflection; with auth off, only the mutating ones (to audit
    them), so reads cost nothing extra. Applied once per method as it is registered (``method_wrappers``)."""

    def __init__(self, access: AccessControl) -> None:
        self._access = access

    def wrap(self, method: str, handler: Handler) -> Handler:
        if method.startswith(GRPC_OPEN_PREFIXES):
            return handler
        op = GRPC_METHODS.get(method, UNLISTED)
        if not self._access.enabled and not op.mutating:
            return handler
        return _Guard(self._access, method, op).wrap(handler)


class _Guard:
    """The flow around one method's behaviour."""

    def __init__(self, access: AccessControl, method: str, op: Operation) -> None:
        self._access = access
        self._method = method
        self._op = op

    def wrap(self, handler: Handler) -> Handler:
        # grpc-stubs types the behaviours as synchronous; on a grpc.aio server they are coroutine functions
        # and async generator functions.
        unary: Any = handler.unary_unary
        stream: Any = handler.unary_stream
        if unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(unary), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        # A client-streaming method would need its requests read before the check: none is served.
        return grpc.unary_unary_rpc_method_handler(self._refuse_kind)

    def _op_for(self, request: Any) -> Operation:
        if self._op is TASK_START:
            starts = request.starts if isinstance(request, pb.StartTasksRequest) else (request,)
            if any(map(_internal_start, starts)):
                return TASK_START_INTERNAL
        return self._op

    async def _admit(self, request: Any, context: Context) -> tuple[Principal | None, Operation, str, bool]:
        """(principal, operation, peer, whether this node's own REST surface forwarded it, having audited
        it); aborts the call when it is refused."""
        peer, host = _peer(context.peer())
        op = self._op_for(request)
        token: str | None = None
        own_hop = False
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                v = value if isinstance(value, str) else value.decode("latin-1")
                token = v[7:] if v.startswith("Bearer ") else ""
            elif key == AUDITED_KEY:
                own_hop = self._access.is_own_hop(value)
        try:
            principal = self._access.authenticate(token, peer=peer, host=host, surface="grpc",
                                                  attempted=self._method, own_hop=own_hop)
            self._access.authorize(principal, op, peer=peer, surface="grpc", target=lambda: grpc_target(request))
        except TaskwardError as exc:
            await context.abort(exc.code, exc.message)
        return principal, op, peer, own_hop

    def _unary(self, behavior: Callable[[Any, Context], Awaitable[Any]]) -> Callable[[Any, Context], Awaitable[Any]]:
        async def guarded(request: Any, context: Context) -> Any:
            principal, op, peer, audited = await self._admit(request, context)
            CALLER.set(principal)
            if not op.mutating or audited:
                return await behavior(request, context)
            target = grpc_target(request)
            try:
                response = await behavior(request, context)
            except BaseException:
                await self._access.audit(principal, op, peer=peer, surface="grpc", target=target,
                                         outcome=_outcome(context))
                raise
            if isinstance(response, pb.StartTasksResponse):  # a line per start, as if each were a StartTask
                for start, result in zip(request.starts, response.results, strict=True):
                    await self._access.audit(
                        principal, TASK_START_INTERNAL if _internal_start(start) else TASK_START, peer=peer,
                        surface="grpc", target=grpc_target(start),
                        outcome=CODE_BY_VALUE.get(result.code, grpc.StatusCode.UNKNOWN).name.lower()
                        if result.code else "ok",
                        **({"task_id": result.task_id} if result.task_id else {}))
                return response
            extra = {"task_id": response.task_id} if getattr(response, "task_id", "") else {}
            await self._access.audit(principal, op, peer=peer, surface="grpc", target=target, outcome="ok", **extra)
            return response

        return guarded

    def _stream(self, behavior: Callable[[Any, Context], AsyncGenerator[Any, None]]
                ) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def guarded(request: Any, context: Context) -> AsyncIterator[Any]:
            principal, _, _, _ = await self._admit(request, context)  # streams are reads: nothing to audit
            CALLER.set(principal)
            inner = behavior(request, context)
            try:
                async for item in inner:
                    yield item
            finally:  # at once when the client goes away, not when the generator is collected
                await inner.aclose()

        return guarded

    async def _refuse_kind(self, request: Any, context: Context) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{self._method} cannot be served with auth")


def _internal_start(request: pb.StartTaskRequest) -> bool:
    return any(getattr(request, field) for field in INTERNAL_START_FIELDS)


def _outcome(context: Context) -> str:
    """How a call that raised ended, as the audit log says it: the status it answered, lowercase."""
    code: Any = context.code()  # a StatusCode once aborted; None when the call was cancelled
    known = code if isinstance(code, grpc.StatusCode) else CODE_BY_VALUE.get(code)
    return known.name.lower() if known is not None else "cancelled"


def _peer(raw: str) -> tuple[str, str]:
    """(``host:port``, host) from gRPC's ``ipv4:1.2.3.4:5`` / ``ipv6:[::1]:5`` / ``unix:path``."""
    kind, _, rest = raw.partition(":")
    if kind == "ipv4":
        host, _, port = rest.rpartition(":")
        return peer_text(host, port), host
    if kind == "ipv6":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        return peer_text(host, port), host
    return raw, raw


def grpc_target(request: Any) -> str:
    """What a call acts on, for the audit log."""
    if isinstance(request, pb.StartTaskRequest):
        return f"{request.module}:{request.type}"
    if isinstance(request, pb.StartTasksRequest):
        return f"{len(request.starts)} starts"
    if isinstance(request, pb.SetTtlRequest):
        return f"{'user_task_ttl' if request.kind == pb.TTL_KIND_USER else 'task_ttl'}={request.ttl}"
    if isinstance(request, pb.DrainRequest):
        return request.module
    if isinstance(request, cron_pb2.PutSchedulesRequest):
        return f"cron document ({len(request.schedules)} schedules)"
    if isinstance(request, cron_pb2.SetScheduleEnabledRequest):
        return f"{request.id} enabled={str(request.enabled).lower()}"
    if isinstance(request, pb.Empty):
        return "module test"
    for field in ("task_id", "id", "parent_id", "module"):
        value = getattr(request, field, "")
        if value:
            return str(value)
    return ""
