"""A tiny self-signed certificate authority for the webhook's serving certificate.

What it does: create an ECDSA P-256 CA and a serving certificate signed by it,
lay them out as ``ca.crt`` / ``ca.key`` / ``tls.crt`` / ``tls.key`` (the
Kubernetes TLS Secret layout plus the CA key), and keep them fresh with
:func:`ensure_certificates` (idempotent: it only writes what is missing, about
to expire, broken, or lacking a SAN).

What it must not do: talk to the Kubernetes API, know about the webhook or its
configuration, or import anything but the standard library and
``cryptography``.  Publishing ``ca.crt`` as a ``caBundle`` (see
:mod:`certs.bundle`) is the caller's job.

Write protocol (why the order matters)
--------------------------------------
Every file is written to a temporary file in the same directory and then
``os.replace``-d over the target, so a reader sees either the old or the new
file, never half of one.  Two files cannot be replaced together, so the order
is chosen so that the *certificate* is the commit point of each pair:

1. ``ca.key`` then ``ca.crt`` -- the CA pair, key first;
2. ``tls.key`` then ``tls.crt`` -- the serving pair, key first.

Readers (``ssl.SSLContext.load_cert_chain`` and :mod:`certs.tlscontext`) read
the certificate first and the key second.  With key-first writes, a reader that
sees the *new* certificate is guaranteed to read the *new* key after it: a new
certificate is never paired with an old key.  The remaining window (old
certificate, new key) is detected as a key mismatch by OpenSSL, and
:class:`certs.tlscontext.ServerContextCache` then keeps serving its previous
context and retries once ``tls.crt`` changes.  The CA files are written before
the serving files so that whoever sees the new ``tls.crt`` finds its issuer in
``ca.crt`` already.

Concurrent writers (several workers calling :func:`ensure_certificates` at
start-up) are serialised with an ``flock`` on the directory itself, so two
processes cannot interleave their key/certificate writes into a mismatched
pair.  No lock file is created: the directory may later become a Secret.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import CertificateError
from certs.inspect import (
    is_ca_certificate,
    key_matches_certificate,
    load_certificate,
    load_private_key,
    subject_alt_names,
)

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "Action",
    "CertPaths",
    "EnsureResult",
    "IssuerKey",
    "certificate_pem",
    "create_ca",
    "ensure_certificates",
    "generate_private_key",
    "issue_serving_certificate",
    "private_key_pem",
    "service_sans",
    "write_file_atomic",
]

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
TLS_CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"

KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644
DIR_MODE = 0o700

# Certificates start this long before "now": a client whose clock is a little
# behind ours must not reject a freshly issued certificate as "not yet valid".
BACKDATE = timedelta(hours=1)

# RFC 1123 label, which is what Kubernetes requires of namespace names and (in
# the stricter RFC 1035 form) of Service names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""Key types this module can sign with (and generates: ECDSA P-256)."""


class Action(StrEnum):
    CREATED = "created"
    RENEWED = "renewed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class CertPaths:
    """The four files of a certificate directory."""

    cert_dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.cert_dir / CA_CERT_FILE

    @property
    def ca_key(self) -> Path:
        return self.cert_dir / CA_KEY_FILE

    @property
    def tls_cert(self) -> Path:
        return self.cert_dir / TLS_CERT_FILE

    @property
    def tls_key(self) -> Path:
        return self.cert_dir / TLS_KEY_FILE


@dataclass(frozen=True)
class EnsureResult:
    """What :func:`ensure_certificates` did, per pair, and why."""

    paths: CertPaths
    ca: Action
    serving: Action
    ca_reason: str | None
    """Why the CA was created or renewed; ``None`` when unchanged."""
    serving_reason: str | None
    ca_not_after: datetime
    serving_not_after: datetime

    @property
    def changed(self) -> bool:
        return self.ca is not Action.UNCHANGED or self.serving is not Action.UNCHANGED

    @property
    def ca_rotated(self) -> bool:
        """True when ``ca.crt`` changed, i.e. a published caBundle must be updated."""
        return self.ca is not Action.UNCHANGED


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


# --------------------------------------------------------------------------- SANs


def service_sans(service: str | None, namespace: str | None) -> list[str]:
    """The SANs a serving certificate needs.

    Always ``localhost`` and ``127.0.0.1`` (local runs, port-forwards, probes);
    with a ``service`` also every name the API server or a pod may use for it:
    ``<svc>``, ``<svc>.<ns>``, ``<svc>.<ns>.svc`` (what the API server dials for
    a ``service`` webhook reference) and ``<svc>.<ns>.svc.cluster.local``.

    A ``service`` without ``namespace`` is a ``ValueError`` (the in-cluster names
    cannot be formed); a ``namespace`` without ``service`` is ignored.
    """
    sans = ["localhost", "127.0.0.1"]
    if service is None:
        return sans
    if namespace is None:
        raise ValueError(f"service {service!r} given without a namespace")
    for kind, value in (("service", service), ("namespace", namespace)):
        if not _DNS_LABEL.match(value):
            raise ValueError(
                f"invalid {kind} name {value!r}: must be a DNS label "
                "(lower-case alphanumerics and '-', at most 63 characters)"
            )
    sans += [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]
    return sans


def _general_name(san: str) -> x509.GeneralName:
    # IP literals must be IPAddress SANs: TLS clients never match an IP against
    # a DNSName entry, so "127.0.0.1" as a DNSName would fail verification.
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def _canonical_san(san: str) -> str:
    """Text form used when comparing required SANs with a certificate's SANs."""
    try:
        return str(ipaddress.ip_address(san))
    except ValueError:
        return san.lower()


# --------------------------------------------------------------------------- issuing


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key: small, fast, and accepted by every TLS client we face."""
    return ec.generate_private_key(ec.SECP256R1())


def _cn(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def create_ca(
    *,
    common_name: str = "snapguard-ca",
    now: datetime | None = None,
    days: int = 3650,
    key: IssuerKey | None = None,
) -> tuple[x509.Certificate, IssuerKey]:
    """A self-signed CA certificate and its key.

    The subject gets an ``@<unix time>`` suffix (as Kubernetes' own self-signed
    CAs do) so that an old and a new CA in one bundle are told apart by humans
    and by clients that look issuers up by name.
    """
    now = _utc(now)
    key = key if key is not None else generate_private_key()
    name = _cn(f"{common_name}@{int(now.timestamp())}")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        # path_length=0: this CA signs leaf certificates only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def issue_serving_certificate(
    ca_cert: x509.Certificate,
    ca_key: IssuerKey,
    sans: Sequence[str],
    *,
    now: datetime | None = None,
    days: int = 365,
    common_name: str | None = None,
    key: IssuerKey | None = None,
) -> tuple[x509.Certificate, IssuerKey]:
    """A TLS server certificate for ``sans`` signed by the CA.

    ``not_after`` is capped at the CA's own ``not_after``: a leaf that outlives
    its issuer would just fail verification in its last stretch.  The common
    name defaults to the first SAN of at most 64 characters (the X.509 limit);
    clients verify against the SANs only.
    """
    if not sans:
        raise ValueError("a serving certificate needs at least one SAN")
    now = _utc(now)
    key = key if key is not None else generate_private_key()
    if common_name is None:
        # Prefer the name the API server dials (<svc>.<ns>.svc) when present.
        svc_names = [s for s in sans if s.endswith(".svc") and len(s) <= 64]
        short = [s for s in sans if len(s) <= 64]
        common_name = (svc_names or short or ["snapguard"])[0]
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_cn(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key exchange (TLS 1.2 non-ECDHE suites) needs keyEncipherment.
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(s) for s in dict.fromkeys(sans)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: IssuerKey) -> bytes:
    # Unencrypted PKCS#8: what Kubernetes TLS Secrets, OpenSSL and Python's ssl
    # all read; confidentiality comes from the file mode (0600), not a password.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --------------------------------------------------------------------------- files


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; best effort (not every FS allows it).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_file_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix.

    The temporary file lives in the same directory (``os.replace`` is atomic
    only within one filesystem) and gets its final ``mode`` *before* any data is
    written, so a private key is never readable by others, not even briefly.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            # Durable before visible: after a crash we must not find a renamed
            # but empty key file.
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: IssuerKey) -> None:
    # Key first, certificate last: see "Write protocol" in the module docstring.
    write_file_atomic(key_path, private_key_pem(key), mode=KEY_FILE_MODE)
    write_file_atomic(cert_path, certificate_pem(cert), mode=CERT_FILE_MODE)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the directory itself (no lock file to leak into a Secret)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _ensure_directory(directory: Path) -> None:
    if directory.is_dir():
        # An existing directory may be a mounted volume; leave its mode alone.
        return
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask; the keys' directory must be 0700.
    os.chmod(directory, DIR_MODE)


# --------------------------------------------------------------------------- ensure


@dataclass(frozen=True)
class _Pair:
    cert: x509.Certificate
    key: IssuerKey


@dataclass(frozen=True)
class _Verdict:
    """Assessment of one cert/key pair: ``pair`` is set when it can be kept."""

    pair: _Pair | None
    reason: str | None
    existed: bool

    @property
    def action(self) -> Action:
        if self.pair is not None:
            return Action.UNCHANGED
        return Action.RENEWED if self.existed else Action.CREATED


def _load_pair(cert_path: Path, key_path: Path) -> tuple[_Pair | None, str | None]:
    try:
        cert = load_certificate(cert_path)
        key = load_private_key(key_path)
    except CertificateError as exc:
        return None, str(exc)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return None, f"{key_path}: unsupported key type {type(key).__name__}"
    if not key_matches_certificate(key, cert):
        return None, f"{key_path}: does not match {cert_path.name}"
    return _Pair(cert, key), None


def _validity_problem(cert: x509.Certificate, now: datetime, renew_before: timedelta) -> str | None:
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        return f"expired at {not_after.isoformat()}"
    if not_after - now <= renew_before:
        return f"expires at {not_after.isoformat()}, within the renewal window of {renew_before}"
    if cert.not_valid_before_utc > now:
        # Only happens when the clock went backwards; such a certificate is
        # rejected by every client, so replace it.
        return f"not valid before {cert.not_valid_before_utc.isoformat()}"
    return None


def _assess_ca(paths: CertPaths, now: datetime, renew_before: timedelta) -> _Verdict:
    existed = paths.ca_cert.exists() or paths.ca_key.exists()
    if not existed:
        return _Verdict(None, "missing", existed=False)
    pair, reason = _load_pair(paths.ca_cert, paths.ca_key)
    if pair is None:
        return _Verdict(None, reason, existed=True)
    if not is_ca_certificate(pair.cert):
        return _Verdict(None, f"{paths.ca_cert}: not a CA certificate", existed=True)
    problem = _validity_problem(pair.cert, now, renew_before)
    if problem is not None:
        return _Verdict(None, f"{paths.ca_cert}: {problem}", existed=True)
    return _Verdict(pair, None, existed=True)


def _issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _has_server_auth(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no EKU extension means "any purpose"
    return ExtendedKeyUsageOID.SERVER_AUTH in eku


def _assess_serving(
    paths: CertPaths,
    ca: _Verdict,
    sans: Sequence[str],
    now: datetime,
    renew_before: timedelta,
) -> _Verdict:
    existed = paths.tls_cert.exists() or paths.tls_key.exists()
    if ca.pair is None:
        # A new CA invalidates every certificate signed by the old one.
        if not existed:
            return _Verdict(None, "missing", existed=False)
        return _Verdict(None, f"CA was {ca.action.value}", existed=True)
    if not existed:
        return _Verdict(None, "missing", existed=False)
    pair, reason = _load_pair(paths.tls_cert, paths.tls_key)
    if pair is None:
        return _Verdict(None, reason, existed=True)
    cert = pair.cert
    problem = _validity_problem(cert, now, renew_before)
    if problem is not None:
        return _Verdict(None, f"{paths.tls_cert}: {problem}", existed=True)
    present = {_canonical_san(s) for s in subject_alt_names(cert)}
    missing = [s for s in sans if _canonical_san(s) not in present]
    if missing:
        return _Verdict(None, f"{paths.tls_cert}: missing SANs {', '.join(missing)}", existed=True)
    if not _issued_by(cert, ca.pair.cert):
        return _Verdict(None, f"{paths.tls_cert}: not signed by {paths.ca_cert.name}", existed=True)
    if not _has_server_auth(cert):
        return _Verdict(None, f"{paths.tls_cert}: no serverAuth extended key usage", existed=True)
    return _Verdict(pair, None, existed=True)


def _forced(verdict: _Verdict) -> _Verdict:
    if not verdict.existed:
        return verdict  # nothing to force: it is being created anyway
    return _Verdict(None, "forced", existed=True)


def ensure_certificates(
    cert_dir: Path,
    *,
    service: str | None = None,
    namespace: str | None = None,
    now: datetime | None = None,
    ca_days: int = 3650,
    serving_days: int = 365,
    renew_before: timedelta = timedelta(days=30),
    extra_sans: Sequence[str] = (),
    force: bool = False,
) -> EnsureResult:
    """Make ``cert_dir`` hold a usable CA and serving certificate; return what was done.

    Creates the directory (mode 0700) and any missing pair.  The CA pair is
    renewed when it expires within ``renew_before``, is unreadable, is not a
    CA, or its key does not match.  The serving pair is renewed when the CA
    changed, or it expires within ``renew_before``, is unreadable, does not
    match its key, lacks a SAN from :func:`service_sans` (or ``extra_sans``), or
    was not signed by ``ca.crt``.  ``force`` renews both regardless.

    ``now`` (default: the current time) is used both to judge existing files and
    to date new certificates, so tests can move the clock.  A missing
    ``ca.key`` counts as a broken CA: a directory holding only ``ca.crt``,
    ``tls.crt`` and ``tls.key`` (a mounted Secret managed elsewhere) should be
    read with :mod:`certs.inspect` / :mod:`certs.tlscontext`, not passed here.

    Raises ``ValueError`` for bad arguments and ``OSError`` when the directory
    cannot be written.
    """
    now = _utc(now)
    if ca_days <= 0 or serving_days <= 0:
        raise ValueError("certificate lifetimes must be positive")
    if renew_before >= timedelta(days=serving_days) or renew_before >= timedelta(days=ca_days):
        # Otherwise every call would renew: the fresh certificate is already "due".
        raise ValueError(
            f"renew_before ({renew_before}) must be shorter than the certificate lifetimes"
        )
    sans = list(dict.fromkeys([*service_sans(service, namespace), *extra_sans]))
    paths = CertPaths(Path(cert_dir))

    def assess() -> tuple[_Verdict, _Verdict]:
        ca = _assess_ca(paths, now, renew_before)
        if force:
            ca = _forced(ca)
        serving = _assess_serving(paths, ca, sans, now, renew_before)
        if force:
            serving = _forced(serving)
        return ca, serving

    ca, serving = assess()
    if ca.pair is not None and serving.pair is not None:
        # Fast path, no lock, no writes: works on a read-only mount too.
        return _result(paths, ca, serving, ca.pair, serving.pair)

    _ensure_directory(paths.cert_dir)
    with _directory_lock(paths.cert_dir):
        # Another process may have done the work while we waited for the lock.
        ca, serving = assess()
        ca_pair = ca.pair
        if ca_pair is None:
            cert, key = create_ca(now=now, days=ca_days)
            _write_pair(paths.ca_cert, paths.ca_key, cert, key)
            ca_pair = _Pair(cert, key)
        serving_pair = serving.pair
        if serving_pair is None:
            cert, key = issue_serving_certificate(
                ca_pair.cert, ca_pair.key, sans, now=now, days=serving_days
            )
            _write_pair(paths.tls_cert, paths.tls_key, cert, key)
            serving_pair = _Pair(cert, key)
    return _result(paths, ca, serving, ca_pair, serving_pair)


def _result(
    paths: CertPaths, ca: _Verdict, serving: _Verdict, ca_pair: _Pair, serving_pair: _Pair
) -> EnsureResult:
    return EnsureResult(
        paths=paths,
        ca=ca.action,
        serving=serving.action,
        ca_reason=ca.reason,
        serving_reason=serving.reason,
        ca_not_after=ca_pair.cert.not_valid_after_utc,
        serving_not_after=serving_pair.cert.not_valid_after_utc,
    )
