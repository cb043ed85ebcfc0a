"""certs.bundle: splitting PEM bundles and merging CA bundles across rotations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from certs.authority import certificate_pem, create_ca
from certs.bundle import merge_ca_bundle, split_pem_bundle
from certs.errors import CertificateError

NOW = datetime(2030, 6, 1, tzinfo=UTC)


def _ca(name: str, *, issued: datetime = NOW, days: int = 365) -> bytes:
    cert, _ = create_ca(common_name=name, now=issued, days=days)
    return certificate_pem(cert)


def _names(bundle: bytes) -> list[str]:
    return [
        x509.load_pem_x509_certificate(b).subject.rfc4514_string().split("@")[0]
        for b in split_pem_bundle(bundle)
    ]


def test_split_ignores_text_and_other_blocks() -> None:
    a, b = _ca("a"), _ca("b")
    key_block = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    data = b"# trust these\n" + a + b"subject=whatever\n" + key_block + b
    assert split_pem_bundle(data) == [a, b]
    assert split_pem_bundle(b"") == []
    assert split_pem_bundle(a.rstrip(b"\n")) == [a]  # missing final newline


def test_merge_keeps_old_valid_ca_after_new_one() -> None:
    old, new = _ca("old"), _ca("new")
    merged = merge_ca_bundle(old, new, NOW)
    assert _names(merged) == ["CN=new", "CN=old"]


def test_merge_drops_expired_cas() -> None:
    expired = _ca("expired", issued=NOW - timedelta(days=400), days=365)
    valid = _ca("valid")
    new = _ca("new")
    merged = merge_ca_bundle(expired + valid, new, NOW)
    assert _names(merged) == ["CN=new", "CN=valid"]


def test_merge_deduplicates_by_fingerprint() -> None:
    old, new = _ca("old"), _ca("new")
    merged = merge_ca_bundle(old + new + old, new, NOW)
    assert _names(merged) == ["CN=new", "CN=old"]
    # Merging again is a no-op: the bundle is stable across repeated reconciles.
    assert merge_ca_bundle(merged, new, NOW) == merged


def test_merge_into_empty_or_broken_bundle() -> None:
    new = _ca("new")
    assert merge_ca_bundle(b"", new, NOW) == new
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert merge_ca_bundle(broken, new, NOW) == new


def test_merge_requires_a_new_ca() -> None:
    with pytest.raises(CertificateError, match="no PEM certificate"):
        merge_ca_bundle(_ca("old"), b"nothing here", NOW)
    with pytest.raises(CertificateError, match="malformed"):
        merge_ca_bundle(b"", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", NOW)


def test_merge_defaults_to_current_time() -> None:
    now = datetime.now(UTC)
    old = _ca("old", issued=now)
    new = _ca("new", issued=now)
    assert _names(merge_ca_bundle(old, new)) == ["CN=new", "CN=old"]
