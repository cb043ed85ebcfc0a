"""Fixtures for the certs tests: certificate directories and real TLS handshakes.

Helpers are exposed as fixtures (not importable modules) so the tests work under
any pytest import mode.  This directory is the package ``tests.certs``; it
relies on ``tests/__init__.py`` existing -- without it, pytest would import this
directory as a top-level package named ``certs`` and shadow the package under
test.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.authority import (
    EnsureResult,
    IssuerKey,
    certificate_pem,
    create_ca,
    ensure_certificates,
    generate_private_key,
    private_key_pem,
)

SERVICE = "snapguard"
NAMESPACE = "d8-snapguard"


@dataclass
class HandshakeResult:
    ok: bool
    version: str | None = None
    peer_cert: dict[str, Any] | None = None
    client_error: BaseException | None = None
    server_error: BaseException | None = None
    server_peer_cert: dict[str, Any] | None = field(default=None)


def _handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_hostname: str | None = "localhost",
) -> HandshakeResult:
    """A real TLS handshake over a socketpair, then one echoed message.

    The echo matters for TLS 1.3: the server checks the client certificate
    after the client considers the handshake done, so a rejection only shows
    up on the client's first read.
    """
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(10)
    client_sock.settimeout(10)
    result = HandshakeResult(ok=False)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                result.server_peer_cert = tls.getpeercert()
                tls.sendall(tls.recv(4))
        except (ssl.SSLError, OSError) as exc:
            result.server_error = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=server_hostname) as tls:
            result.version = tls.version()
            result.peer_cert = tls.getpeercert()
            tls.sendall(b"ping")
            echoed = tls.recv(4)
            result.ok = echoed == b"ping"
    except (ssl.SSLError, OSError) as exc:
        result.client_error = exc
    finally:
        client_sock.close()
        thread.join(15)
        server_sock.close()
    result.ok = result.ok and result.server_error is None
    return result


@pytest.fixture
def tls_handshake() -> Callable[..., HandshakeResult]:
    return _handshake


@pytest.fixture
def client_context() -> Callable[[Path], ssl.SSLContext]:
    """A verifying client context (hostname check on) that trusts the given CA file."""

    def make(ca_file: Path) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(ca_file))

    return make


@pytest.fixture
def cert_dir(tmp_path: Path) -> Path:
    return tmp_path / "certs"


@pytest.fixture
def start() -> datetime:
    """A fixed 'now' so renewal tests can move the clock deterministically."""
    return datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def issued(cert_dir: Path) -> EnsureResult:
    """A certificate directory issued at the real current time (TLS peers check the clock)."""
    return ensure_certificates(cert_dir, service=SERVICE, namespace=NAMESPACE)


@pytest.fixture
def write_pair() -> Callable[..., None]:
    """Write a cert/key pair plainly (tests that need odd certificates)."""

    def write(cert_path: Path, key_path: Path, cert: x509.Certificate, key: IssuerKey) -> None:
        key_path.write_bytes(private_key_pem(key))
        cert_path.write_bytes(certificate_pem(cert))

    return write


@pytest.fixture
def make_client_cert() -> Callable[..., tuple[x509.Certificate, IssuerKey]]:
    """A clientAuth certificate signed by the given CA (for mutual TLS tests)."""

    def make(
        ca_cert: x509.Certificate, ca_key: IssuerKey, name: str = "kube-apiserver"
    ) -> tuple[x509.Certificate, IssuerKey]:
        key = generate_private_key()
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    return make


@pytest.fixture
def new_ca() -> Callable[..., tuple[x509.Certificate, IssuerKey]]:
    return create_ca
