"""CA bundles (the ``caBundle`` of a webhook configuration) across CA rotations.

When the CA is rotated, the API server must trust the new CA *before* the
webhook starts serving a certificate signed by it, and keep trusting the old
CA until every replica has switched.  :func:`merge_ca_bundle` produces that
overlap: the new CA first, then every still-valid CA of the current bundle,
each certificate once.  Expired CAs fall out on the next merge, so the bundle
does not grow forever.

This module only transforms bytes: it must not read or write files or talk to
the Kubernetes API (publishing the bundle is the caller's job), and it imports
nothing but the standard library and ``cryptography``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certs.errors import CertificateError

__all__ = ["merge_ca_bundle", "split_pem_bundle"]

_PEM_CERT_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL
)


def split_pem_bundle(data: bytes) -> list[bytes]:
    """The ``CERTIFICATE`` PEM blocks of ``data``, in order, each ending in a newline.

    Text between blocks (comments, ``openssl x509 -text`` dumps) and other block
    types are ignored, as PEM allows; the blocks are returned verbatim, not
    parsed.
    """
    return [m.group(0) + b"\n" for m in _PEM_CERT_BLOCK.finditer(data)]


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def merge_ca_bundle(existing_pem: bytes, new_ca_pem: bytes, now: datetime | None = None) -> bytes:
    """A bundle with the CA(s) of ``new_ca_pem`` first, then every certificate of
    ``existing_pem`` that is still valid at ``now`` (default: the current time),
    without duplicates (compared by SHA-256 fingerprint).

    ``new_ca_pem`` must contain at least one well-formed certificate, otherwise
    ``CertificateError``.  Blocks of ``existing_pem`` that do not parse are
    dropped rather than fatal: a bundle nobody can parse trusts nothing, and the
    point of the merge is to repair it.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)

    new_blocks = split_pem_bundle(new_ca_pem)
    if not new_blocks:
        raise CertificateError(None, "new CA: no PEM certificate found")
    out: list[bytes] = []
    seen: set[bytes] = set()
    for block in new_blocks:
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError as exc:
            raise CertificateError(None, f"new CA: malformed PEM certificate: {exc}") from None
        if _fingerprint(cert) not in seen:
            seen.add(_fingerprint(cert))
            out.append(cert.public_bytes(serialization.Encoding.PEM))

    for block in split_pem_bundle(existing_pem):
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError:
            continue
        if cert.not_valid_after_utc <= now:
            continue  # an expired CA verifies nothing; let it drop out
        fp = _fingerprint(cert)
        if fp in seen:
            continue
        seen.add(fp)
        out.append(cert.public_bytes(serialization.Encoding.PEM))
    return b"".join(out)
