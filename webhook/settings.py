"""What the webhook needs to know to answer: the policy, where its certificates are,
the request limits, and where multi-process metrics live.

Plain data, built by the composition root (`snapguard serve`) or by tests; nothing
here reads files or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.config import PolicyConfig

# The kube-apiserver refuses request bodies over 3 MiB (its own `maxRequestBodyBytes`),
# so an AdmissionReview it sends is never larger; anything bigger is not from it.
MAX_BODY_BYTES = 3 * 1024 * 1024

# The API server's default (and maximum) webhook timeout is 10 s: an answer later than
# that is useless. The duration histogram and the server's deadlines use it.
API_SERVER_WEBHOOK_TIMEOUT = 10.0
# The key of the WSGI app's `config` under which the app offers
# `rejected(status, path, reason)` to the server: requests the server answers with an
# error before the app sees them are logged and counted like the app's own.
ON_REJECTED = "SNAPGUARD_ON_REJECTED"


@dataclass(frozen=True)
class WebhookSettings:
    """Configuration of one webhook app (one per worker process)."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # The serving certificate and key; readiness reports on them. None only when TLS is
    # terminated elsewhere (the Flask test client).
    cert_file: str | None = None
    key_file: str | None = None
    # With a client CA every connection must present a certificate signed by it.
    client_ca: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    # PROMETHEUS_MULTIPROC_DIR when several gunicorn workers share the metrics.
    metrics_dir: str | None = None
