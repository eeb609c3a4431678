"""Test certificate authorities, made with the real ``openssl`` command as an operator would (README: TLS).

A ``TestCA`` signs node certificates usable for both server and client authentication (a node serves with
its certificate and presents the same one on its own calls), with SANs for 127.0.0.1 and localhost, the only
addresses tests use. Every certificate gets a random serial, so a reloaded certificate is told from the
one before by its serial alone."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
LOOPBACK_SANS = "IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True, slots=True)
class CertPair:
    cert: Path
    key: Path
    serial: int
    """The certificate's serial number (as ``ssl.getpeercert()['serialNumber']`` shows it: ``f"{serial:X}"``)."""


def openssl(*args: str, cwd: Path) -> str:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


class TestCA:
    """A CA in ``root`` (``ca.crt``, ``ca.key``) that issues certificates into the same folder."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Path, name: str = "taskward-test-ca") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.cert = root / "ca.crt"
        self.key = root / "ca.key"
        openssl("req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=root)

    def issue(self, name: str, *, cn: str = "", sans: str = LOOPBACK_SANS) -> CertPair:
        """``name.crt`` + ``name.key``: a leaf for server and client use, subject ``CN=cn`` (default ``name``)."""
        serial = secrets.randbits(63) | 1 << 62  # positive, and always 16 hex digits
        ext = self.root / f"{name}.ext"
        ext.write_text(f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n")
        openssl("req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn or name}",
                cwd=self.root)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", str(serial),
                "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name, cwd=self.root)
        (self.root / f"{name}.key").chmod(0o600)
        return CertPair(self.root / f"{name}.crt", self.root / f"{name}.key", serial)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A CA with one server certificate (127.0.0.1/localhost) and one client certificate, as an etcd
    cluster or a client-library test needs them."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(root: Path) -> TlsFiles:
    ca = TestCA(root)
    server, client = ca.issue("server", cn="127.0.0.1"), ca.issue("client", cn="taskward-node")
    return TlsFiles(ca.cert, server.cert, server.key, client.cert, client.key)
