"""certs.authority: SANs, file layout and modes, real TLS verification, renewal rules."""

from __future__ import annotations

import os
import ssl
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certs import authority
from certs.authority import (
    Action,
    CertPaths,
    certificate_pem,
    create_ca,
    ensure_certificates,
    generate_private_key,
    issue_serving_certificate,
    private_key_pem,
    service_sans,
    write_file_atomic,
)
from certs.inspect import describe, load_certificate

SERVICE = "snapguard"
NAMESPACE = "d8-snapguard"


def _server_context(paths: CertPaths) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths.tls_cert, paths.tls_key)
    return ctx


# --------------------------------------------------------------------------- SANs


def test_service_sans_without_service_is_local_only() -> None:
    assert service_sans(None, None) == ["localhost", "127.0.0.1"]
    assert service_sans(None, "ignored") == ["localhost", "127.0.0.1"]


def test_service_sans_for_a_service() -> None:
    assert service_sans(SERVICE, NAMESPACE) == [
        "localhost",
        "127.0.0.1",
        "snapguard",
        "snapguard.d8-snapguard",
        "snapguard.d8-snapguard.svc",
        "snapguard.d8-snapguard.svc.cluster.local",
    ]


@pytest.mark.parametrize(
    ("service", "namespace"),
    [
        ("snapguard", None),
        ("Snapguard", "ns"),
        ("snap_guard", "ns"),
        ("svc", "-ns"),
        ("a" * 64, "ns"),
    ],
)
def test_service_sans_rejects_bad_names(service: str, namespace: str | None) -> None:
    with pytest.raises(ValueError):
        service_sans(service, namespace)


def test_sans_are_typed_dns_and_ip(issued: authority.EnsureResult) -> None:
    cert = load_certificate(issued.paths.tls_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == [
        "localhost",
        "snapguard",
        "snapguard.d8-snapguard",
        "snapguard.d8-snapguard.svc",
        "snapguard.d8-snapguard.svc.cluster.local",
    ]


# -------------------------------------------------------------------- layout


def test_creates_layout_with_private_modes(issued: authority.EnsureResult, cert_dir: Path) -> None:
    assert issued.ca is Action.CREATED
    assert issued.serving is Action.CREATED
    assert sorted(p.name for p in cert_dir.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert stat.S_IMODE(cert_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(issued.paths.tls_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(issued.paths.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(issued.paths.tls_cert.stat().st_mode) == 0o644


def test_certificate_roles(issued: authority.EnsureResult) -> None:
    ca = load_certificate(issued.paths.ca_cert)
    tls = load_certificate(issued.paths.tls_cert)
    ca_bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ca_bc.ca is True
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    tls_bc = tls.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert tls_bc.ca is False
    eku = tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    tls.verify_directly_issued_by(ca)
    assert describe(issued.paths.tls_cert, issued.paths.tls_key).key_matches is True


@pytest.mark.parametrize(
    "hostname", ["localhost", "127.0.0.1", "snapguard.d8-snapguard.svc", "snapguard.d8-snapguard"]
)
def test_serving_cert_verifies_against_ca(
    issued: authority.EnsureResult, tls_handshake, client_context, hostname: str
) -> None:
    result = tls_handshake(
        _server_context(issued.paths), client_context(issued.paths.ca_cert), hostname
    )
    assert result.ok, (result.client_error, result.server_error)
    assert result.peer_cert is not None


def test_serving_cert_fails_for_other_hostname(
    issued: authority.EnsureResult, tls_handshake, client_context
) -> None:
    result = tls_handshake(
        _server_context(issued.paths), client_context(issued.paths.ca_cert), "evil.example"
    )
    assert not result.ok
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)


def test_writes_key_before_certificate(cert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[str] = []
    real_replace = os.replace

    def recording_replace(src: str, dst: str | Path) -> None:
        replaced.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(authority.os, "replace", recording_replace)
    ensure_certificates(cert_dir)
    assert replaced == ["ca.key", "ca.crt", "tls.key", "tls.crt"]


def test_write_file_atomic_failure_leaves_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "tls.crt"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_file_atomic(target, "not bytes", mode=0o644)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["tls.crt"]


def test_write_file_atomic_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "k"
    write_file_atomic(target, b"secret", mode=0o600)
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# ------------------------------------------------------------------- renewal


def test_fresh_certificates_are_left_alone(cert_dir: Path, start) -> None:
    first = ensure_certificates(cert_dir, service=SERVICE, namespace=NAMESPACE, now=start)
    before = {p.name: p.read_bytes() for p in cert_dir.iterdir()}
    again = ensure_certificates(
        cert_dir, service=SERVICE, namespace=NAMESPACE, now=start + timedelta(days=300)
    )
    assert (again.ca, again.serving) == (Action.UNCHANGED, Action.UNCHANGED)
    assert not again.changed
    assert again.serving_not_after == first.serving_not_after
    assert {p.name: p.read_bytes() for p in cert_dir.iterdir()} == before


def test_renews_serving_cert_near_expiry(cert_dir: Path, start) -> None:
    first = ensure_certificates(cert_dir, now=start)
    ca_before = first.paths.ca_cert.read_bytes()
    later = start + timedelta(days=340)  # 25 days left < 30 days renew_before
    again = ensure_certificates(cert_dir, now=later)
    assert again.serving is Action.RENEWED
    assert again.ca is Action.UNCHANGED
    assert again.serving_reason is not None and "expires" in again.serving_reason
    assert again.serving_not_after > first.serving_not_after
    assert first.paths.ca_cert.read_bytes() == ca_before
    assert describe(again.paths.tls_cert, again.paths.tls_key).key_matches is True


def test_renews_expired_serving_cert(cert_dir: Path, start) -> None:
    ensure_certificates(cert_dir, now=start)
    again = ensure_certificates(cert_dir, now=start + timedelta(days=400))
    assert again.serving is Action.RENEWED
    assert again.serving_reason is not None and "expired" in again.serving_reason


def test_renews_when_a_san_is_missing(cert_dir: Path, start) -> None:
    ensure_certificates(cert_dir, now=start)  # localhost + 127.0.0.1 only
    again = ensure_certificates(cert_dir, service=SERVICE, namespace=NAMESPACE, now=start)
    assert again.serving is Action.RENEWED
    assert again.ca is Action.UNCHANGED
    assert again.serving_reason is not None and "missing SANs" in again.serving_reason
    sans = describe(again.paths.tls_cert).sans
    assert "snapguard.d8-snapguard.svc" in sans
    # ... and a certificate with extra SANs is good enough for fewer required ones.
    third = ensure_certificates(cert_dir, now=start)
    assert third.serving is Action.UNCHANGED


def test_extra_sans(cert_dir: Path, start) -> None:
    result = ensure_certificates(cert_dir, extra_sans=["10.0.0.7", "dev.example"], now=start)
    assert {"10.0.0.7", "dev.example"} <= set(describe(result.paths.tls_cert).sans)


def test_renews_ca_near_expiry_and_reissues_serving(cert_dir: Path, start) -> None:
    first = ensure_certificates(cert_dir, ca_days=400, serving_days=365, now=start)
    old_ca = load_certificate(first.paths.ca_cert)
    again = ensure_certificates(cert_dir, ca_days=400, now=start + timedelta(days=380))
    assert again.ca is Action.RENEWED
    assert again.ca_rotated
    assert again.serving is Action.RENEWED
    new_ca = load_certificate(again.paths.ca_cert)
    assert new_ca.serial_number != old_ca.serial_number
    load_certificate(again.paths.tls_cert).verify_directly_issued_by(new_ca)


def test_serving_cert_never_outlives_ca(cert_dir: Path, start) -> None:
    result = ensure_certificates(cert_dir, ca_days=100, serving_days=365, now=start)
    assert result.serving_not_after <= result.ca_not_after


def test_renews_serving_with_mismatched_key(cert_dir: Path, start) -> None:
    first = ensure_certificates(cert_dir, now=start)
    first.paths.tls_key.write_bytes(private_key_pem(generate_private_key()))
    again = ensure_certificates(cert_dir, now=start)
    assert again.serving is Action.RENEWED
    assert again.serving_reason is not None and "does not match" in again.serving_reason
    assert describe(again.paths.tls_cert, again.paths.tls_key).key_matches is True


def test_renews_unreadable_serving_cert(cert_dir: Path, start) -> None:
    first = ensure_certificates(cert_dir, now=start)
    first.paths.tls_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\ntruncat")
    again = ensure_certificates(cert_dir, now=start)
    assert again.serving is Action.RENEWED
    assert describe(again.paths.tls_cert, again.paths.tls_key).key_matches is True


def test_renews_serving_cert_from_a_foreign_ca(cert_dir: Path, start) -> None:
    first = ensure_certificates(cert_dir, now=start)
    other_ca, other_key = create_ca(now=start)
    cert, key = issue_serving_certificate(other_ca, other_key, service_sans(None, None), now=start)
    first.paths.tls_key.write_bytes(private_key_pem(key))
    first.paths.tls_cert.write_bytes(certificate_pem(cert))
    again = ensure_certificates(cert_dir, now=start)
    assert again.serving is Action.RENEWED
    assert again.serving_reason is not None and "not signed by ca.crt" in again.serving_reason


def test_missing_ca_key_renews_everything(cert_dir: Path, start) -> None:
    first = ensure_certificates(cert_dir, now=start)
    first.paths.ca_key.unlink()
    again = ensure_certificates(cert_dir, now=start)
    assert (again.ca, again.serving) == (Action.RENEWED, Action.RENEWED)
    assert again.paths.ca_key.exists()


def test_missing_serving_pair_is_created_with_existing_ca(cert_dir: Path, start) -> None:
    first = ensure_certificates(cert_dir, now=start)
    first.paths.tls_cert.unlink()
    first.paths.tls_key.unlink()
    again = ensure_certificates(cert_dir, now=start)
    assert (again.ca, again.serving) == (Action.UNCHANGED, Action.CREATED)


def test_force_renews_both(cert_dir: Path, start) -> None:
    ensure_certificates(cert_dir, now=start)
    again = ensure_certificates(cert_dir, now=start, force=True)
    assert (again.ca, again.serving) == (Action.RENEWED, Action.RENEWED)
    assert again.ca_reason == "forced"


def test_rejects_renewal_window_longer_than_lifetime(cert_dir: Path) -> None:
    with pytest.raises(ValueError):
        ensure_certificates(cert_dir, serving_days=20, renew_before=timedelta(days=30))
    assert not cert_dir.exists()


def test_existing_directory_mode_is_kept(tmp_path: Path) -> None:
    cert_dir = tmp_path / "mounted"
    cert_dir.mkdir(mode=0o755)
    os.chmod(cert_dir, 0o755)
    ensure_certificates(cert_dir)
    assert stat.S_IMODE(cert_dir.stat().st_mode) == 0o755


def test_concurrent_callers_produce_one_consistent_pair(cert_dir: Path) -> None:
    results: list[authority.EnsureResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        try:
            barrier.wait()
            results.append(ensure_certificates(cert_dir, service=SERVICE, namespace=NAMESPACE))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [r.ca for r in results].count(Action.CREATED) == 1
    paths = CertPaths(cert_dir)
    assert describe(paths.tls_cert, paths.tls_key).key_matches is True
    load_certificate(paths.tls_cert).verify_directly_issued_by(load_certificate(paths.ca_cert))
    assert sorted(p.name for p in cert_dir.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
