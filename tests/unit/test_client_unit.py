"""The client library's pieces that need no node: TaskStatus against REST's rendering, the error mapping,
addresses and TLS settings, the public names and their lazy import, and TLS end to end against an
in-process gRPC server with certificates from a throw-away CA."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

import taskward
from taskward import convert
from taskward.client.aio import AsyncClient, channel_credentials, node_addresses
from taskward.client.events import event_to_dict
from taskward.client.node_pool import rpc_error
from taskward.client.status import TaskChild, TaskStatus
from taskward.client.sync import Client
from taskward.errors import (
    InvalidArgument,
    NotAbortable,
    PermissionDenied,
    ScheduleNotFound,
    TaskNotFound,
    TaskwardError,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from taskward.pb.taskward.v1 import tasks_pb2 as pb
from taskward.pb.taskward.v1 import tasks_pb2_grpc as pb_grpc
from taskward.security.tls import TlsError
from tests.support.certs import TlsFiles, make_certs
from tests.support.procs import REPO, free_port
from tests.unit.test_convert import full_status

# ---------------------------------------------------------------- TaskStatus


def test_a_status_renders_as_rest_does_key_for_key() -> None:
    msg = full_status()
    st = TaskStatus.from_pb(msg)
    assert list(st.to_dict().items()) == list(convert.status_pb_to_dict(msg).items())
    assert (st.id, st.task_id, st.parent_id, st.eta_ms, st.result, st.args) == (
        msg.stats.task_id, msg.stats.task_id, msg.parent_id, 1500, {"rows": 4}, {"duration": 1.5})
    assert st.children_ids == (TaskChild(task_id="9e1c3f4e-6a43-4c3c-9b7a-1d6b0f1e2a3b", node="n2",
                                         address="127.0.0.1:7101"),)
    assert st.start_time == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC) and st.end_time is None
    assert st.next_attempt_at == dt.datetime(2023, 11, 14, 22, 13, 25, 250000, tzinfo=dt.UTC)
    assert st.created_at is not None and st.created_at.microsecond == 123000
    assert (st.attempt, st.max_attempts, st.finished, st.failed, st.partial) == (2, 3, False, False, False)
    root = pb.TaskStatus()
    root.CopyFrom(msg)
    root.parent_id = "none"
    root.stats.state = "failed"
    root.ClearField("eta_ms")
    root.ClearField("next_attempt_at")
    root.result_json = ""
    st = TaskStatus.from_pb(root)
    assert list(st.to_dict().items()) == list(convert.status_pb_to_dict(root).items())
    assert (st.parent_id, st.eta_ms, st.result, st.finished, st.failed) == (None, None, None, True, True)
    assert TaskStatus.from_pb(msg) == TaskStatus.from_pb(msg) != st


def test_a_listing_entry_is_partial_and_renders_as_task_stats() -> None:
    stats = full_status().stats
    entry = TaskStatus.from_stats_pb(stats, "builtin")
    assert list(entry.stats_dict().items()) == list(convert.stats_pb_to_dict(stats).items())
    assert (entry.partial, entry.args, entry.module, entry.state) == (True, None, "builtin", "running")


def test_events_as_dicts() -> None:
    """REST's SSE data object plus the node it came from."""
    ev = pb.Event(sequence=7, type="task.retrying", task_id="t", module="m", task_type="x",
                  time=Timestamp(seconds=1_700_000_000, nanos=500_000_000), error="boom", attempt=2,
                  next_attempt_at=Timestamp(seconds=1_700_000_002))
    assert event_to_dict(ev, "127.0.0.1:1") == {"node": "127.0.0.1:1", **convert.event_pb_to_dict(ev)}
    assert list(event_to_dict(ev, "n"))[:4] == ["node", "sequence", "type", "task_id"]


# ---------------------------------------------------------------- errors, addresses, TLS settings


def aio_error(code: grpc.StatusCode, details: str | None) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(("code", "details", "cls", "message"), [
    (grpc.StatusCode.NOT_FOUND, "task with id x not found", TaskNotFound, "task with id x not found"),
    (grpc.StatusCode.NOT_FOUND, "schedule s not found", ScheduleNotFound, "schedule s not found"),
    (grpc.StatusCode.INVALID_ARGUMENT, "bad", InvalidArgument, "bad"),
    (grpc.StatusCode.FAILED_PRECONDITION, "Task with id x is not abortable", NotAbortable,
     "Task with id x is not abortable"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", WaitTimeout, "Deadline Exceeded"),
    (grpc.StatusCode.UNAVAILABLE, "failed to connect", Unavailable, "failed to connect"),
    (grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token", Unauthenticated,
     "missing or wrong bearer token"),
    (grpc.StatusCode.PERMISSION_DENIED, "permission denied: drain", PermissionDenied, "permission denied: drain"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, None, TaskwardError, "resource_exhausted"),
])
def test_a_node_answer_becomes_the_error_tree(code: grpc.StatusCode, details: str | None,
                                               cls: type[TaskwardError], message: str) -> None:
    err = rpc_error(aio_error(code, details))
    assert type(err) is cls and (err.message, err.code) == (message, code)
    assert err.http_status == convert_http(code)
    assert not isinstance(err, WaitTimeout) or isinstance(err, TimeoutError)


def convert_http(code: grpc.StatusCode) -> int:
    from taskward.errors import http_status_for

    return http_status_for(code)


def test_node_addresses_and_tls_settings(tmp_path: Path) -> None:
    assert node_addresses("a:1") == ["a:1"]
    assert node_addresses("a:1, b:2") == ["a:1", "b:2"]
    assert node_addresses(["a:1", "b:2,c:3"]) == ["a:1", "b:2", "c:3"]
    with pytest.raises(ValueError, match="at least one"):
        node_addresses([])
    assert channel_credentials(None, None, None) is None
    with pytest.raises(ValueError, match="go together"):
        channel_credentials(None, tmp_path / "cert.pem", None)
    with pytest.raises(TlsError, match=r"cannot read tls_ca .*absent\.pem: No such file or directory"):
        channel_credentials(tmp_path / "absent.pem", None, None)


async def test_arguments_that_are_not_json_are_refused_before_any_call() -> None:
    async with AsyncClient(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(InvalidArgument, match="must be JSON values"):
            await client.start("builtin", "sleep", duration=float("nan"))
        with pytest.raises(InvalidArgument, match="malformed task id"):
            client.task("NOPE")


# ---------------------------------------------------------------- the public names


def test_the_public_names_and_the_lazy_client() -> None:
    for name in ("task_type", "TaskContext", "Client", "AsyncClient", "TaskHandle", "TaskStatus", "TaskwardError",
                 "TaskNotFound", "InvalidArgument", "NotAbortable", "Unavailable", "Unauthenticated",
                 "PermissionDenied", "TaskFailed", "ChildFailed", "TaskMiddleware", "task_middleware", "TaskAborted"):
        assert name in taskward.__all__ and getattr(taskward, name) is not None, name
    assert taskward.Client is Client and taskward.TaskStatus is TaskStatus
    with pytest.raises(AttributeError):
        taskward.Nope  # type: ignore[attr-defined]  # noqa: B018
    code = ("import sys, taskward; assert 'taskward.client' not in sys.modules, 'eager'; "
            "from taskward import Client; assert 'taskward.client' in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False,
                         timeout=60)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------- TLS end to end


class _Modules(pb_grpc.TaskManagerServicer):
    async def ListModules(self, request: pb.ListModulesRequest, context: Any) -> pb.ListModulesResponse:
        return pb.ListModulesResponse(modules=["tls-ok"])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def tls_server(certs: TlsFiles) -> AsyncIterator[str]:
    """A gRPC server that speaks only TLS and requires a client certificate signed by the test CA."""
    server = grpc.aio.server()
    pb_grpc.add_TaskManagerServicer_to_server(_Modules(), server)
    creds = grpc.ssl_server_credentials([(certs.server_key.read_bytes(), certs.server_cert.read_bytes())],
                                        root_certificates=certs.ca.read_bytes(), require_client_auth=True)
    address = f"127.0.0.1:{free_port()}"
    server.add_secure_port(address, creds)
    await server.start()
    try:
        yield address
    finally:
        await server.stop(None)


async def test_tls_with_a_client_certificate(tls_server: str, certs: TlsFiles) -> None:
    async with AsyncClient(tls_server, tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key,
                           timeout=5) as client:
        assert await client.modules() == ["tls-ok"]

    def sync_modules() -> list[str]:  # in a thread: the server runs on this test's loop
        with Client(tls_server, tls_ca=str(certs.ca), tls_cert=str(certs.client_cert),
                    tls_key=str(certs.client_key), timeout=5) as sync_client:
            return sync_client.modules()

    assert await asyncio.to_thread(sync_modules) == ["tls-ok"]
    for kwargs in ({"tls_ca": certs.ca}, {}):  # no client certificate, or no TLS at all: refused
        async with AsyncClient(tls_server, timeout=5, **kwargs) as client:  # type: ignore[arg-type]
            with pytest.raises(Unavailable):
                await client.modules()
