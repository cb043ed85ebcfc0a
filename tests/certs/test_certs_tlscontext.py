"""certs.tlscontext: caching, rotation, keeping the last good context, TLS policy, status()."""

from __future__ import annotations

import ssl
import threading
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509

from certs.authority import (
    EnsureResult,
    certificate_pem,
    create_ca,
    ensure_certificates,
    generate_private_key,
    issue_serving_certificate,
    private_key_pem,
    write_file_atomic,
)
from certs.errors import CertificateError
from certs.inspect import load_certificate, load_private_key
from certs.tlscontext import ServerContextCache, gunicorn_ssl_context_hook


def _cache(result: EnsureResult, **kwargs: object) -> ServerContextCache:
    kwargs.setdefault("check_interval", 0.0)
    return ServerContextCache(result.paths.tls_cert, result.paths.tls_key, **kwargs)  # type: ignore[arg-type]


def _served_serial(result) -> int:
    assert result.ok, (result.client_error, result.server_error)
    return int(result.peer_cert["serialNumber"], 16)


def _rotate_serving(result: EnsureResult) -> x509.Certificate:
    """Issue a new serving pair from the same CA, written key-first like authority does."""
    ca = load_certificate(result.paths.ca_cert)
    ca_key = load_private_key(result.paths.ca_key)
    cert, key = issue_serving_certificate(ca, ca_key, ["localhost", "127.0.0.1"])  # type: ignore[arg-type]
    write_file_atomic(result.paths.tls_key, private_key_pem(key), mode=0o600)
    write_file_atomic(result.paths.tls_cert, certificate_pem(cert), mode=0o644)
    return cert


def test_context_policy(issued: EnsureResult) -> None:
    ctx = _cache(issued).get()
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE


def test_context_is_cached_while_files_are_unchanged(issued: EnsureResult) -> None:
    cache = _cache(issued)
    assert cache.get() is cache.get()


def test_serves_and_verifies(issued: EnsureResult, tls_handshake, client_context) -> None:
    result = tls_handshake(_cache(issued).get(), client_context(issued.paths.ca_cert), "127.0.0.1")
    assert _served_serial(result) == load_certificate(issued.paths.tls_cert).serial_number


def test_picks_up_rotated_files(issued: EnsureResult, tls_handshake, client_context) -> None:
    cache = _cache(issued)
    client = client_context(issued.paths.ca_cert)
    first = cache.get()
    old_serial = _served_serial(tls_handshake(first, client))
    new_cert = _rotate_serving(issued)
    second = cache.get()
    assert second is not first
    assert _served_serial(tls_handshake(second, client)) == new_cert.serial_number != old_serial


def test_rotation_by_ensure_certificates_is_picked_up(issued: EnsureResult) -> None:
    cache = _cache(issued)
    first = cache.get()
    ensure_certificates(issued.paths.cert_dir, force=True)
    assert cache.get() is not first


def test_check_is_throttled(issued: EnsureResult) -> None:
    now = [100.0]
    cache = _cache(issued, check_interval=1.0, clock=lambda: now[0])
    first = cache.get()
    _rotate_serving(issued)
    assert cache.get() is first  # within the interval: no stat, old context
    now[0] += 1.5
    assert cache.get() is not first


def test_keeps_previous_context_on_mismatched_pair(
    issued: EnsureResult, tls_handshake, client_context
) -> None:
    cache = _cache(issued)
    client = client_context(issued.paths.ca_cert)
    good = cache.get()
    serial = _served_serial(tls_handshake(good, client))

    # Half a rotation: the new key is in place, the certificate is still the old one.
    write_file_atomic(issued.paths.tls_key, private_key_pem(generate_private_key()), mode=0o600)
    assert cache.get() is good
    assert _served_serial(tls_handshake(cache.get(), client)) == serial
    ok, reason = cache.status()
    assert ok, reason
    assert "does not match" in reason

    # The certificate arrives: the next call switches over.
    new_cert = _rotate_serving(issued)
    assert cache.get() is not good
    assert _served_serial(tls_handshake(cache.get(), client)) == new_cert.serial_number
    ok, reason = cache.status()
    assert ok, reason
    assert "reload pending" not in reason


def test_keeps_previous_context_on_garbage_certificate(issued: EnsureResult) -> None:
    cache = _cache(issued)
    good = cache.get()
    issued.paths.tls_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB")  # torn write
    assert cache.get() is good
    ok, reason = cache.status()
    assert not ok
    assert str(issued.paths.tls_cert) in reason


def test_never_a_good_context_raises(tmp_path: Path) -> None:
    cache = ServerContextCache(tmp_path / "tls.crt", tmp_path / "tls.key", check_interval=0)
    with pytest.raises(CertificateError, match=r"tls\.crt: not found"):
        cache.get()
    ok, reason = cache.status()
    assert not ok
    assert "tls.crt" in reason
    assert cache.not_after is None


def test_mismatched_pair_from_the_start_raises(issued: EnsureResult, tmp_path: Path) -> None:
    key = tmp_path / "other.key"
    key.write_bytes(private_key_pem(generate_private_key()))
    cache = ServerContextCache(issued.paths.tls_cert, key)
    with pytest.raises(CertificateError, match="does not match"):
        cache.get()


def test_recovers_after_files_appear(issued: EnsureResult, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cache = ServerContextCache(cert, key, check_interval=0)
    with pytest.raises(CertificateError):
        cache.get()
    key.write_bytes(issued.paths.tls_key.read_bytes())
    cert.write_bytes(issued.paths.tls_cert.read_bytes())
    assert isinstance(cache.get(), ssl.SSLContext)


def _tls11_client(ca_file: Path) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/1.1 are deprecated
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    # Let the *client* offer TLS 1.1 with any cipher, so only the server can refuse.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


def test_refuses_tls11_clients(issued: EnsureResult, tls_handshake) -> None:
    result = tls_handshake(_cache(issued).get(), _tls11_client(issued.paths.ca_cert))
    assert not result.ok
    assert result.client_error is not None


def test_tls11_refusal_is_the_servers_doing(issued: EnsureResult, tls_handshake) -> None:
    client = _tls11_client(issued.paths.ca_cert)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(issued.paths.tls_cert, issued.paths.tls_key)
    control = tls_handshake(permissive, client)
    if not control.ok:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.1 at all: {control.client_error}")
    assert control.version == "TLSv1.1"
    refused = tls_handshake(_cache(issued).get(), client)
    assert not refused.ok
    assert "UNSUPPORTED_PROTOCOL" in str(refused.server_error)


def test_tls12_client_is_accepted(issued: EnsureResult, tls_handshake, client_context) -> None:
    client = client_context(issued.paths.ca_cert)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    result = tls_handshake(_cache(issued).get(), client)
    assert result.ok, (result.client_error, result.server_error)
    assert result.version == "TLSv1.2"


def test_client_certificate_required_with_client_ca(
    issued: EnsureResult,
    tmp_path: Path,
    tls_handshake,
    client_context,
    make_client_cert,
    write_pair,
) -> None:
    client_ca, client_ca_key = create_ca(common_name="apiserver-client-ca")
    client_ca_file = tmp_path / "client-ca.crt"
    client_ca_file.write_bytes(certificate_pem(client_ca))
    cache = _cache(issued, client_ca=client_ca_file)
    ctx = cache.get()
    assert ctx.verify_mode == ssl.CERT_REQUIRED

    anonymous = client_context(issued.paths.ca_cert)
    refused = tls_handshake(ctx, anonymous)
    assert not refused.ok
    assert refused.server_error is not None

    cert, key = make_client_cert(client_ca, client_ca_key)
    write_pair(tmp_path / "client.crt", tmp_path / "client.key", cert, key)
    with_cert = client_context(issued.paths.ca_cert)
    with_cert.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
    accepted = tls_handshake(ctx, with_cert)
    assert accepted.ok, (accepted.client_error, accepted.server_error)
    assert accepted.server_peer_cert is not None

    # A client certificate from some other CA is refused as well.
    stranger_ca, stranger_key = create_ca(common_name="stranger")
    cert, key = make_client_cert(stranger_ca, stranger_key)
    write_pair(tmp_path / "s.crt", tmp_path / "s.key", cert, key)
    stranger = client_context(issued.paths.ca_cert)
    stranger.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    assert not tls_handshake(ctx, stranger).ok


def test_status_ok_for_valid_certificate(issued: EnsureResult) -> None:
    cache = _cache(issued)
    ok, reason = cache.status()
    assert ok, reason
    assert "snapguard.d8-snapguard.svc" in reason
    assert cache.not_after == issued.serving_not_after


def test_status_not_ok_for_expired_certificate(tmp_path: Path, write_pair) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    ca, ca_key = create_ca(now=past, days=5)
    cert, key = issue_serving_certificate(ca, ca_key, ["localhost"], now=past, days=2)
    write_pair(tmp_path / "tls.crt", tmp_path / "tls.key", cert, key)
    cache = ServerContextCache(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert isinstance(cache.get(), ssl.SSLContext)  # loading does not check dates ...
    ok, reason = cache.status()
    assert not ok  # ... readiness does
    assert "expired" in reason


def test_status_respects_given_time(issued: EnsureResult) -> None:
    cache = _cache(issued)
    assert cache.status(issued.serving_not_after - timedelta(seconds=1))[0]
    assert not cache.status(issued.serving_not_after)[0]


def test_status_not_ok_when_files_vanish(issued: EnsureResult) -> None:
    cache = _cache(issued)
    good = cache.get()
    issued.paths.tls_key.unlink()
    assert cache.get() is good  # keep serving ...
    ok, reason = cache.status()
    assert not ok  # ... but tell the readiness probe
    assert "tls.key: not found" in reason


def test_concurrent_get_during_rotation(issued: EnsureResult) -> None:
    cache = _cache(issued)
    cache.get()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                assert isinstance(cache.get(), ssl.SSLContext)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(5):
            _rotate_serving(issued)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert cache.status()[0]


def test_gunicorn_hook_reuses_one_cache_per_process(issued: EnsureResult) -> None:
    hook = gunicorn_ssl_context_hook()
    config = SimpleNamespace(certfile=str(issued.paths.tls_cert), keyfile=str(issued.paths.tls_key))

    def default_factory() -> ssl.SSLContext:
        raise AssertionError("the default factory must not be used")

    first = hook(config, default_factory)
    assert hook(config, default_factory) is first
    assert first.minimum_version == ssl.TLSVersion.TLSv1_2
