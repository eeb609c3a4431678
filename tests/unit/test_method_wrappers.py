"""Method handlers wrapped as they are registered: every call goes through the wrappers, outermost first,
and nothing is wrapped again per call (a real grpc.aio server on loopback)."""

from __future__ import annotations

from typing import Any

import grpc

from taskward.api.grpc.method_wrappers import WrappingServer
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

LIST_MODULES = "/taskward.v1.TaskManager/ListModules"


class Modules(pb_grpc.TaskManagerServicer):
    async def ListModules(self, request: pb.ListModulesRequest, context: Any) -> pb.ListModulesResponse:
        return pb.ListModulesResponse(modules=["m"])


class Recording:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls
        self.wrapped: list[str] = []

    def wrap(self, method: str, handler: Any) -> Any:
        self.wrapped.append(method)
        behaviour = handler.unary_unary
        if behaviour is None:
            return handler

        async def recorded(request: Any, context: Any) -> Any:
            self.calls.append(self.name)
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(recorded, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


async def test_each_call_passes_the_wrappers_outermost_first() -> None:
    calls: list[str] = []
    outer, inner = Recording("outer", calls), Recording("inner", calls)
    server = grpc.aio.server()
    pb_grpc.add_TaskManagerServicer_to_server(Modules(), WrappingServer(server, [outer, inner]))  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TaskManagerStub(channel)
            for _ in range(3):
                assert list((await stub.ListModules(pb.ListModulesRequest(), timeout=5)).modules) == ["m"]
    finally:
        await server.stop(None)
    assert calls == ["outer", "inner"] * 3
    assert outer.wrapped.count(LIST_MODULES) == inner.wrapped.count(LIST_MODULES) == 1  # when first asked for


class Registrations:
    """Stands for a server: what is registered on it, and how."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered.append(service)


def test_every_method_is_served_as_a_generic_one() -> None:
    """grpc.aio's server loop waits again on one future per registered method for every call it accepts;
    served as generic handlers, the methods cost it one."""
    server = Registrations()
    pb_grpc.add_TaskManagerServicer_to_server(Modules(), WrappingServer(server, []))  # type: ignore[arg-type]
    assert server.registered == []
    assert len(server.generic) == 1
    details = type("Details", (), {"method": LIST_MODULES, "invocation_metadata": ()})()
    assert server.generic[0].service(details) is not None
