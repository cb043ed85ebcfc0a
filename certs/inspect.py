"""Read and describe certificate and key files.

This module is the single place where PEM files are loaded from disk; every
loading failure becomes a one-line :class:`~certs.errors.CertificateError`
naming the file (missing, unreadable, empty, garbage, encrypted key, ...).  It
only *reads*: it must never create, modify or delete files, and it imports
nothing but the standard library and ``cryptography``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from certs.errors import CertificateError

__all__ = [
    "CertificateInfo",
    "certificate_expiry",
    "describe",
    "is_ca_certificate",
    "is_issued_by",
    "key_matches_certificate",
    "load_certificate",
    "load_private_key",
    "read_file",
    "subject_alt_names",
]

_PEM_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY_MARKER = b"PRIVATE KEY-----"

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class CertificateInfo:
    """What ``describe`` found out about one certificate (and optionally its key)."""

    subject: str
    """RFC 4514 string, e.g. ``CN=snapguard.d8-snapguard.svc``."""
    issuer: str
    sans: list[str]
    """DNS names as-is, IP addresses in their canonical text form."""
    not_before: datetime
    """Aware UTC datetime."""
    not_after: datetime
    """Aware UTC datetime."""
    serial: int
    is_ca: bool
    key_matches: bool | None
    """``None`` when no key file was given."""
    path: str
    key_path: str | None
    sha256_fingerprint: str
    """Lower-case hex of the SHA-256 over the DER encoding."""

    def days_left(self, now: datetime | None = None) -> int:
        """Whole days until ``not_after`` (negative once expired)."""
        remaining = self.not_after - _utc(now)
        return remaining.days

    def is_expired(self, now: datetime | None = None) -> bool:
        return _utc(now) >= self.not_after

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """A JSON-ready mapping; the serial is an upper-case hex string because
        160-bit integers do not survive JSON parsers that use doubles."""
        return {
            "path": self.path,
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left(now),
            "expired": self.is_expired(now),
            "serial": format(self.serial, "X"),
            "is_ca": self.is_ca,
            "key_path": self.key_path,
            "key_matches": self.key_matches,
            "sha256_fingerprint": self.sha256_fingerprint,
        }


def _utc(now: datetime | None) -> datetime:
    """``now`` as an aware UTC datetime; a naive value is taken to be UTC."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


def read_file(path: StrPath, what: str = "file") -> bytes:
    """Read a whole file, turning every ``OSError`` into a one-line ``CertificateError``."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise CertificateError(path, f"{what} not found") from None
    except IsADirectoryError:
        raise CertificateError(path, f"is a directory, expected a {what}") from None
    except PermissionError:
        raise CertificateError(path, f"permission denied reading {what}") from None
    except OSError as exc:
        raise CertificateError(path, f"cannot read {what}: {exc.strerror or exc}") from None


def load_certificate(path: StrPath) -> x509.Certificate:
    """Load the first PEM certificate of ``path`` (a chain file yields its leaf)."""
    data = read_file(path, "certificate")
    if not data.strip():
        raise CertificateError(path, "certificate file is empty")
    if _PEM_CERT_MARKER not in data:
        if _PEM_KEY_MARKER in data:
            raise CertificateError(path, "contains a private key, expected a PEM certificate")
        raise CertificateError(path, "not a PEM certificate (no BEGIN CERTIFICATE block)")
    try:
        cert = x509.load_pem_x509_certificate(data)
        # Extensions are parsed lazily; touch them now so a malformed extension
        # is reported here, against this file, and not later somewhere random.
        _ = cert.extensions
    except ValueError as exc:
        raise CertificateError(path, f"malformed PEM certificate: {exc}") from None
    return cert


def load_private_key(path: StrPath) -> PrivateKeyTypes:
    """Load an unencrypted PEM private key (PKCS#8, SEC1 or PKCS#1)."""
    data = read_file(path, "private key")
    if not data.strip():
        raise CertificateError(path, "private key file is empty")
    if _PEM_KEY_MARKER not in data:
        if _PEM_CERT_MARKER in data:
            raise CertificateError(path, "contains a certificate, expected a PEM private key")
        raise CertificateError(path, "not a PEM private key (no BEGIN PRIVATE KEY block)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError for "encrypted but no password given".
        raise CertificateError(
            path, "private key is encrypted; an unencrypted key is required"
        ) from None
    except UnsupportedAlgorithm as exc:
        raise CertificateError(path, f"unsupported private key type: {exc}") from None
    except ValueError as exc:
        raise CertificateError(path, f"malformed PEM private key: {exc}") from None


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def key_matches_certificate(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    try:
        return _spki(key.public_key()) == _spki(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        return False


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    """The SANs of ``cert`` as strings; other name types are prefixed (``URI:...``)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for name in ext.value:
        if isinstance(name, x509.DNSName):
            out.append(name.value)
        elif isinstance(name, x509.IPAddress):
            out.append(str(name.value))
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"email:{name.value}")
        else:
            out.append(f"{type(name).__name__}:{name.value}")
    return out


def is_ca_certificate(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return bool(bc.value.ca)


def describe(cert_path: StrPath, key_path: StrPath | None = None) -> CertificateInfo:
    """Describe the certificate in ``cert_path``; with ``key_path``, also say whether
    that key belongs to it.  Raises ``CertificateError`` naming the offending file."""
    cert = load_certificate(cert_path)
    key_matches: bool | None = None
    if key_path is not None:
        key_matches = key_matches_certificate(load_private_key(key_path), cert)
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=subject_alt_names(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
        is_ca=is_ca_certificate(cert),
        key_matches=key_matches,
        path=os.fspath(cert_path),
        key_path=None if key_path is None else os.fspath(key_path),
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )


def certificate_expiry(path: StrPath) -> datetime:
    """``not_after`` of the (first) certificate in ``path`` as an aware UTC datetime."""
    return load_certificate(path).not_valid_after_utc


def is_issued_by(cert_path: StrPath, ca_path: StrPath) -> bool:
    """True when the certificate in ``cert_path`` is signed by the (first) CA in ``ca_path``."""
    cert = load_certificate(cert_path)
    ca = load_certificate(ca_path)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
