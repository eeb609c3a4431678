"""Baseline server: a bare ``grpc.aio`` TaskManager whose handlers return pre-built messages.

Usage: ``_bare_server.py [--status FILE] [--list FILE]`` where each FILE holds a serialized
``TaskStatus`` / ``ListTasksResponse``; StartTask answers a fixed id without recording anything (the
transport's ceiling for a task start). Prints its loopback port on the first stdout line, serves
until SIGTERM or for at most ``--lifetime`` seconds. Same server options as the node, no database,
no task manager, no conversion: only gRPC, the generated stubs and protobuf serialization.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import grpc

from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc

_STARTED = pb.StartTaskResponse(task_id="00000000-0000-4000-8000-000000000000")


class Bare(pb_grpc.TaskManagerServicer):
    def __init__(self, status: pb.TaskStatus, listing: pb.ListTasksResponse) -> None:
        self._status = status
        self._listing = listing

    async def GetTaskStatus(self, request: pb.TaskIdRequest, context: Any) -> pb.TaskStatus:
        return self._status

    async def ListTasks(self, request: pb.ListTasksRequest, context: Any) -> pb.ListTasksResponse:
        return self._listing

    async def StartTask(self, request: pb.StartTaskRequest, context: Any) -> pb.StartTaskResponse:
        return _STARTED


async def serve(status: pb.TaskStatus, listing: pb.ListTasksResponse, lifetime: float) -> None:
    server = grpc.aio.server(options=[  # the node's options (node/app.py)
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
    ])
    pb_grpc.add_TaskManagerServicer_to_server(Bare(status, listing), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(lifetime):
            await stop.wait()
    await server.stop(grace=0.5)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--status")
    p.add_argument("--list")
    p.add_argument("--lifetime", type=float, default=120.0)
    a = p.parse_args()
    status = pb.TaskStatus.FromString(Path(a.status).read_bytes()) if a.status else pb.TaskStatus()
    listing = pb.ListTasksResponse.FromString(Path(a.list).read_bytes()) if a.list else pb.ListTasksResponse()
    asyncio.run(serve(status, listing, a.lifetime))


if __name__ == "__main__":
    main()
