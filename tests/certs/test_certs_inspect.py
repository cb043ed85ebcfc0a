"""certs.inspect: describe(), certificate_expiry() and one-line errors for bad files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certs.authority import EnsureResult, generate_private_key, private_key_pem
from certs.errors import CertificateError
from certs.inspect import certificate_expiry, describe, is_issued_by


def test_describe_serving_certificate(issued: EnsureResult) -> None:
    info = describe(issued.paths.tls_cert, issued.paths.tls_key)
    assert info.subject == "CN=snapguard.d8-snapguard.svc"
    assert info.issuer.startswith("CN=snapguard-ca@")
    assert info.sans[:2] == ["localhost", "127.0.0.1"]
    assert "snapguard.d8-snapguard.svc.cluster.local" in info.sans
    assert info.not_before.tzinfo is not None and info.not_before.utcoffset() == timedelta(0)
    assert info.not_after.utcoffset() == timedelta(0)
    assert info.not_after == issued.serving_not_after
    assert info.is_ca is False
    assert info.key_matches is True
    assert info.serial > 0
    assert 360 <= info.days_left() <= 365
    data = info.to_dict()
    assert data["serial"] == format(info.serial, "X")
    assert data["not_after"] == info.not_after.isoformat()


def test_describe_ca_without_key(issued: EnsureResult) -> None:
    info = describe(issued.paths.ca_cert)
    assert info.is_ca is True
    assert info.key_matches is None
    assert info.sans == []
    assert info.subject == info.issuer


def test_describe_detects_foreign_key(issued: EnsureResult, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(private_key_pem(generate_private_key()))
    assert describe(issued.paths.tls_cert, other).key_matches is False
    # The CA key is not the serving key either.
    assert describe(issued.paths.tls_cert, issued.paths.ca_key).key_matches is False


def test_certificate_expiry(issued: EnsureResult) -> None:
    expiry = certificate_expiry(issued.paths.ca_cert)
    assert expiry == issued.ca_not_after
    assert expiry > datetime.now(UTC) + timedelta(days=3000)


def test_is_issued_by(issued: EnsureResult) -> None:
    assert is_issued_by(issued.paths.tls_cert, issued.paths.ca_cert)
    assert not is_issued_by(issued.paths.ca_cert, issued.paths.tls_cert)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "not found"),
        (b"", "empty"),
        (b"hello, world\n", "not a PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed"),
        (private_key_pem(generate_private_key()), "contains a private key"),
    ],
    ids=["missing", "empty", "text", "bad-der", "key-not-cert"],
)
def test_bad_certificate_files(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "tls.crt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CertificateError) as info:
        describe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message
    with pytest.raises(CertificateError):
        certificate_expiry(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="is a directory"):
        describe(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "not found"),
        (b"junk", "not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "malformed"),
    ],
)
def test_bad_key_file_is_named(
    issued: EnsureResult, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    key = tmp_path / "tls.key"
    if content is not None:
        key.write_bytes(content)
    with pytest.raises(CertificateError) as info:
        describe(issued.paths.tls_cert, key)
    assert str(info.value).startswith(f"{key}: ")
    assert expected in str(info.value)


def test_encrypted_key_is_reported(issued: EnsureResult, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = generate_private_key()
    path = tmp_path / "enc.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(CertificateError, match="encrypted"):
        describe(issued.paths.tls_cert, path)
