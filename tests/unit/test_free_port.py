"""Ports handed to child processes to listen on: never one the kernel may give an outgoing connection
in the meantime (CI once saw a node fail with EADDRINUSE on a port handed out a moment before)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from taskward import processes
from taskward.processes import free_port, port_free


def ephemeral_range() -> tuple[int, int]:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return low, high


def test_ports_come_from_outside_the_ephemeral_range_and_differ() -> None:
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == 200
    assert all(not low <= p <= high for p in ports), [p for p in ports if low <= p <= high]
    assert all(port_free(f"127.0.0.1:{p}") for p in ports)


def test_a_port_someone_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        monkeypatch.setattr(processes, "_next_port", taken)
        assert free_port() != taken


def test_with_no_room_outside_the_ephemeral_range_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "_listen_range", lambda: (0, 0))
    port = free_port()
    assert 0 < port < 65536
