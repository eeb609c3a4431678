"""The pure parts of the resource bounds: the RESP parser before AUTH, the limit sections and their
settings, fitting connection caps to the open-file limit, the open-file limit itself, and the throttled
accept-failure log. The surfaces' behaviour under floods is in ``tests/e2e/test_resource_limits.py``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import resource
import time
from typing import Any

import pytest

from taskward.api.resp.protocol import RequestParser
from taskward.config import gateway_config_from, node_config_from
from taskward.descriptors import (
    MIN_CONNECTIONS,
    AcceptErrorLog,
    fit_connection_caps,
    is_accept_failure,
    raise_open_files_limit,
)
from taskward.errors import ConfigError
from taskward.resource_limits import (
    DESCRIPTOR_RESERVE,
    RESP_UNAUTH_MAX_ARGS,
    RESP_UNAUTH_MAX_BULK_BYTES,
    GrpcLimits,
    RespLimits,
    RestLimits,
)
from taskward.settings import GATEWAY_SETTINGS, NODE_SETTINGS, add_arguments, resolve
from tests.support.resp_client import cmd

# ------------------------------------------------------------------------------ RESP before AUTH


def unauthenticated() -> RequestParser:
    return RequestParser(authenticated=False)


@pytest.mark.parametrize(("frame", "message", "after_auth"), [
    (b"*%d\r\n" % (RESP_UNAUTH_MAX_ARGS + 1), "unauthenticated multibulk length", None),
    (b"*1\r\n$%d\r\n" % (RESP_UNAUTH_MAX_BULK_BYTES + 1), "unauthenticated bulk length", None),
    # Redis's wording before AUTH, even where the frame is over the limits of authenticated clients too.
    (b"*1000000\r\n", "unauthenticated multibulk length", "invalid multibulk length (more than 1024 arguments)"),
    (b"*2\r\n$4\r\nAUTH\r\n$100000000\r\n", "unauthenticated bulk length",
     "invalid bulk length (a request may carry at most 1048576 bytes)"),
])
def test_redis_limits_before_auth(frame: bytes, message: str, after_auth: str | None) -> None:
    p = unauthenticated()
    assert p.feed(frame) == []
    assert str(p.error) == message
    assert p.buffered == 0 and not p.has_input
    authenticated = RequestParser()
    authenticated.feed(frame)
    assert (str(authenticated.error) if authenticated.error else None) == after_auth


def test_the_limits_themselves_are_allowed_before_auth() -> None:
    p = unauthenticated()
    args = [b"x" * RESP_UNAUTH_MAX_BULK_BYTES] * RESP_UNAUTH_MAX_ARGS
    assert p.feed(cmd(*args)) == [args]
    assert p.error is None and p.buffered == 0


def test_one_command_at_a_time_before_auth() -> None:
    p = unauthenticated()
    stream = cmd("PING") + b"PING inline\r\n" + cmd("ECHO", "x") + b"*1\r\n$4\r\nPI"
    assert p.feed(stream) == [[b"PING"]]
    assert p.has_input
    assert p.feed(b"") == [[b"PING", b"inline"]]
    assert p.feed(b"") == [[b"ECHO", b"x"]]
    assert p.feed(b"") == []  # only the start of a command is left
    assert not p.has_input and p.buffered == len(b"PI")  # the headers before it are parsed already
    assert p.feed(b"NG\r\n") == [[b"PING"]]


def test_auth_lifts_the_limits_for_the_next_command_of_the_same_read() -> None:
    big = [b"ECHO", b"y" * (RESP_UNAUTH_MAX_BULK_BYTES * 4)]
    stream = cmd("AUTH", "token") + cmd(*big)
    p = unauthenticated()
    assert p.feed(stream) == [[b"AUTH", b"token"]]
    p.authenticated = True  # what the server does when AUTH succeeded
    assert p.feed(b"") == [big]
    assert p.error is None
    refused = unauthenticated()  # AUTH failed: the next command is judged before authentication
    refused.feed(stream)
    assert refused.feed(b"") == []
    assert str(refused.error) == "unauthenticated bulk length"


def test_a_long_pipeline_before_auth_costs_linear_time() -> None:
    n = 100_000
    p = unauthenticated()
    started = time.perf_counter()
    got = len(p.feed(cmd("PING") * n))
    while p.has_input:
        got += len(p.feed(b""))
    assert got == n and p.buffered == 0
    # Moving the rest of the buffer after each command would copy about 14 * n^2 / 2 bytes (70 GB here).
    assert time.perf_counter() - started < 10


# ------------------------------------------------------------------------------ sections, settings


def node_values(*argv: str) -> dict[str, Any]:
    p = argparse.ArgumentParser()
    add_arguments(p, NODE_SETTINGS)
    return resolve(NODE_SETTINGS, p.parse_args(["--id", "n1", *argv]), {})


def test_settings_reach_the_sections() -> None:
    config = node_config_from(node_values(
        "--rest-header-timeout", "2.5", "--rest-max-connections", "50", "--rest-max-requests", "7",
        "--admin-max-clients", "30", "--admin-auth-timeout", "3", "--admin-idle-timeout", "0",
        "--grpc-max-connections", "40", "--grpc-max-rpcs", "100", "--grpc-max-streams", "60"))
    assert config.rest_limits == RestLimits(header_timeout_s=2.5, max_connections=50, max_requests=7)
    assert config.resp_limits == RespLimits(max_clients=30, auth_timeout_s=3.0, idle_timeout_s=0.0)
    assert config.grpc_limits == GrpcLimits(max_connections=40, max_rpcs=100, max_streams=60)
    assert node_config_from(node_values()).grpc_limits == GrpcLimits()
    p = argparse.ArgumentParser()
    add_arguments(p, GATEWAY_SETTINGS)
    gateway = gateway_config_from(resolve(GATEWAY_SETTINGS, p.parse_args(["--rest-max-requests", "9"]), {}))
    assert gateway.rest_limits == RestLimits(max_requests=9)


def test_streams_must_leave_room_for_short_calls() -> None:
    with pytest.raises(ConfigError) as exc:
        node_config_from(node_values("--grpc-max-streams", "4096"))
    assert exc.value.message == ("--grpc-max-streams (4096) must be below --grpc-max-rpcs (4096): streams that "
                                 "never end would otherwise leave no room for short calls")


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--rest-header-timeout", "0", "invalid --rest-header-timeout '0': expected a finite number >= 0.05"),
    ("--rest-max-connections", "0", "invalid --rest-max-connections '0': expected an integer from 1 to "
                                    "9223372036854775807"),
    ("--admin-idle-timeout", "-1", "invalid --admin-idle-timeout '-1': expected a finite number >= 0"),
])
def test_bad_limit_settings_are_refused(flag: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        node_values(flag, value)
    assert exc.value.message == message


def test_grpc_server_options() -> None:
    assert dict(GrpcLimits(max_connections=10, max_rpcs=20, max_streams=5).server_options()) == {
        "grpc.max_allowed_incoming_connections": 10, "grpc.max_concurrent_streams": 1024,
        "grpc.server_handshake_timeout_ms": 10_000}


# ------------------------------------------------------------------------------ descriptors


def test_caps_that_fit_are_kept() -> None:
    caps = {"gRPC": GrpcLimits(), "REST": RestLimits(), "RESP": RespLimits()}
    assert fit_connection_caps(100_000, caps) == caps


def test_caps_are_scaled_into_the_descriptor_budget(caplog: pytest.LogCaptureFixture) -> None:
    caps: dict[str, Any] = {"gRPC": GrpcLimits(max_connections=2000), "REST": RestLimits(max_connections=1000),
                            "RESP": RespLimits(max_clients=1000)}
    with caplog.at_level(logging.WARNING, "taskward.descriptors"):
        fitted = fit_connection_caps(1024, caps)
    budget = 1024 - DESCRIPTOR_RESERVE
    assert fitted["gRPC"].max_connections == 384
    assert fitted["REST"].max_connections == 192
    assert fitted["RESP"].max_clients == 192
    assert budget >= 384 + 192 + 192
    assert fitted["gRPC"].max_rpcs == caps["gRPC"].max_rpcs  # only connections
    assert caplog.messages == [
        "open-file limit 1024 leaves room for 768 connections, but the surfaces' caps add up to 4000: lowered to "
        "gRPC 384, REST 192, RESP 192 (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn, or lower the caps)"]
    tiny = fit_connection_caps(100, caps)
    assert tiny["gRPC"].max_connections == tiny["REST"].max_connections == MIN_CONNECTIONS
    assert tiny["RESP"].max_clients == MIN_CONNECTIONS


def test_open_file_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        raised = raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (raised, hard)
        assert raised == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def emfile() -> dict[str, Any]:
    """What asyncio reports when ``accept()`` fails for want of descriptors."""
    return {"message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, "Too many open files")}


def test_accept_failures_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    passed_on: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(lambda _loop, context: passed_on.append(context))
        handler = AcceptErrorLog(loop, interval_s=10, clock=lambda: now[0]).install()
        assert loop.get_exception_handler() is handler
        with caplog.at_level(logging.ERROR, "taskward.descriptors"):
            for _ in range(5000):
                loop.call_exception_handler(emfile())
            now[0] += 10
            loop.call_exception_handler(emfile())
        other = {"message": "something else", "exception": ValueError("x")}
        loop.call_exception_handler(other)
    finally:
        loop.close()
    assert caplog.messages == [
        "cannot accept connections: Too many open files",
        "cannot accept connections: Too many open files (4999 more since the last report; reported at most "
        "every 10 s)"]
    assert passed_on == [other]


def test_accept_loop_retries_count_as_accept_failures() -> None:
    def _start_serving() -> None:  # named as asyncio's retry of a listener's accept loop
        raise AssertionError("never called")

    loop = asyncio.new_event_loop()
    try:
        retry = asyncio.Handle(_start_serving, (), loop)
        assert is_accept_failure({"message": "Exception in callback", "exception": ValueError("fd -1"),
                                  "handle": retry})
        assert is_accept_failure(emfile())
        assert not is_accept_failure({"message": "Task exception was never retrieved", "exception": OSError()})
        assert not is_accept_failure({"message": "Exception in callback", "handle": asyncio.Handle(print, (), loop)})
    finally:
        loop.close()
