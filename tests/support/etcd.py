"""A real 3-member etcd cluster on loopback ports, for cluster tests and benches."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc

from taskward.processes import EtcdProcess, free_port
from tests.support.certs import TlsFiles
from tests.support.procs import TIMEOUT_MULT


class EtcdMember(EtcdProcess):
    """A member of a test etcd cluster; with ``tls``, clients must present a certificate of the test CA."""

    def __init__(self, name: str, data_dir: Path, client_port: int, peer_port: int, initial_cluster: str,
                 tls: TlsFiles | None = None) -> None:
        super().__init__(name, data_dir, client_port=client_port, peer_port=peer_port,
                         initial_cluster=initial_cluster,
                         tls=(tls.server_cert, tls.server_key, tls.ca) if tls else None)
        self.tls_files = tls

    def stop(self, grace_s: float = 10.0) -> int | None:
        return super().stop(grace_s)


class EtcdCluster:
    def __init__(self, root: Path, size: int = 3, *, tls: TlsFiles | None = None) -> None:
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"e{i}=http://127.0.0.1:{pp}" for i, (_, pp) in enumerate(ports))
        self.tls = tls
        self.root_password = ""
        self.auth_metadata: tuple[tuple[str, str], ...] = ()
        self.members = [EtcdMember(f"e{i}", root / f"e{i}", cp, pp, initial, tls) for i, (cp, pp) in enumerate(ports)]

    @property
    def endpoints(self) -> str:
        return ",".join(m.url for m in self.members)

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until a write through the cluster succeeds (a leader exists and has a quorum)."""
        from aetcd import rpc

        deadline = time.monotonic() + timeout * TIMEOUT_MULT
        with self.channel() as ch:
            kv = rpc.rpc_pb2_grpc.KVStub(ch)
            while time.monotonic() < deadline:
                try:
                    kv.Put(rpc.PutRequest(key=b"/health-probe", value=b"1"), timeout=1, metadata=self.auth_metadata)
                    return
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAUTHENTICATED and self.root_password:
                        self._login(ch)  # a restarted member forgot our token
                    time.sleep(0.1)
        raise TimeoutError("etcd cluster not healthy")

    def channel(self) -> grpc.Channel:
        """A blocking channel to every member, with the test CA's client certificate when TLS is on."""
        target = "ipv4:" + ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)
        if self.tls is None:
            return grpc.insecure_channel(target)
        creds = grpc.ssl_channel_credentials(self.tls.ca.read_bytes(), self.tls.client_key.read_bytes(),
                                             self.tls.client_cert.read_bytes())
        return grpc.secure_channel(target, creds)

    def enable_auth(self, root_password: str) -> None:
        """User ``root`` (role ``root``), then auth on: every request must carry a token from now on."""
        from aetcd import rpc

        with self.channel() as ch:
            auth = rpc.rpc_pb2_grpc.AuthStub(ch)
            auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=root_password), timeout=5)
            auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"), timeout=5)
            auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=5)
            auth.AuthEnable(rpc.AuthEnableRequest(), timeout=5)
            self.root_password = root_password
            self._login(ch)

    def keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (relative to it), read with this cluster's TLS files and token."""
        with self.channel() as ch:
            return sorted(range_prefix(ch, prefix, keys_only=True, metadata=self.auth_metadata))

    def _login(self, ch: grpc.Channel) -> None:
        from aetcd import rpc

        resp = rpc.rpc_pb2_grpc.AuthStub(ch).Authenticate(
            rpc.AuthenticateRequest(name="root", password=self.root_password), timeout=5)
        self.auth_metadata = (("token", resp.token),)

    def stop(self) -> None:
        for m in self.members:
            m.stop()


def range_prefix(ch: grpc.Channel, prefix: str, *, keys_only: bool = False,
                 metadata: tuple[tuple[str, str], ...] = (), timeout: float = 5.0) -> dict[str, bytes]:
    """Keys (relative to ``prefix``) and values read straight from etcd with aetcd's rpc stubs."""
    from aetcd import rpc

    key = prefix.encode()
    resp = rpc.rpc_pb2_grpc.KVStub(ch).Range(
        rpc.RangeRequest(key=key, range_end=key[:-1] + bytes([key[-1] + 1]), keys_only=keys_only),
        timeout=timeout, metadata=metadata)
    return {k.key.decode()[len(prefix):]: k.value for k in resp.kvs}


def etcd_available() -> bool:
    return shutil.which("etcd") is not None
