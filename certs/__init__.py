"""TLS material for the snapguard webhook: issue, inspect, serve and bundle certificates.

* :mod:`certs.authority` -- self-signed CA + serving certificate, kept fresh on disk;
* :mod:`certs.inspect` -- read and describe certificate/key files;
* :mod:`certs.tlscontext` -- rotation-following server ``SSLContext`` for gunicorn;
* :mod:`certs.bundle` -- ``caBundle`` merging across CA rotations.

This package imports only the standard library and ``cryptography`` (enforced
by an import-linter contract): it knows nothing about Kubernetes, the webhook
or the CLI, which build on it.
"""

from certs.authority import (
    Action,
    CertPaths,
    EnsureResult,
    create_ca,
    ensure_certificates,
    issue_serving_certificate,
    service_sans,
    write_file_atomic,
)
from certs.bundle import merge_ca_bundle, split_pem_bundle
from certs.errors import CertificateError
from certs.inspect import CertificateInfo, certificate_expiry, describe
from certs.tlscontext import ServerContextCache, gunicorn_ssl_context_hook

__all__ = [
    "Action",
    "CertPaths",
    "CertificateError",
    "CertificateInfo",
    "EnsureResult",
    "ServerContextCache",
    "certificate_expiry",
    "create_ca",
    "describe",
    "ensure_certificates",
    "gunicorn_ssl_context_hook",
    "issue_serving_certificate",
    "merge_ca_bundle",
    "service_sans",
    "split_pem_bundle",
    "write_file_atomic",
]
