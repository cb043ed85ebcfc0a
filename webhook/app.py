"""The admission webhook's HTTP layer: a Flask app that moves AdmissionReviews in and
out of the engine.

Nothing is decided here: `/validate` and `/mutate` hand the decoded body to
`policies.admission.answer_review`, the one translation between AdmissionReview and
the engine. What this module owns is HTTP: the body limit (413), the content type
(415), malformed bodies (400), the JSON error body, readiness, metrics and the decision
log. Two error channels, never mixed: a bad HTTP request is a 4xx with `{"error": ...}`;
a bad Kubernetes operation is HTTP 200 with `allowed: false`.

No request ever gets a 500 or a traceback: every exception has a handler, and a failure
while deciding (a bug) is logged and answered with HTTP 200 under the policy's
`ruleErrors` action, as the engine does for a rule that raised.
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any, TextIO

from flask import Flask, Response, request
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    MethodNotAllowed,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)

from certs.errors import CertificateError
from certs.inspect import certificate_expiry
from policies import kinds, limits
from policies.admission import ReviewError, answer_review, parse_review, review_response
from policies.catalogue import Action
from policies.engine import Decision, Engine, EngineRequest, Violation

from .decisionlog import DecisionLog
from .metrics import WebhookMetrics
from .settings import ON_REJECTED, WebhookSettings
from .tls import process_context_cache
from .viewsource import ViewSource

JSON = "application/json"
# Pseudo rule id of the answer given when deciding failed unexpectedly (a bug).
WEBHOOK_ERROR = "webhook-error"
_GOVERNED = frozenset(kinds.GOVERNED_KINDS)
_READ_CHUNK = 64 * 1024


# One encoder for every answer: json.dumps with options builds a new one per call.
# ASCII-only JSON: a message can quote a string from the request, and JSON allows a
# lone surrogate (\ud800) there that UTF-8 cannot encode; escaped, it always can.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _json_response(payload: Any, status: int = 200) -> Response:
    return Response(_encode(payload), status, mimetype=JSON)


def _dig(body: Any, *path: str) -> Any:
    """A value inside the (already validated) body, or "" when absent."""
    for key in path:
        if not isinstance(body, dict):
            return ""
        body = body.get(key)
    return "" if body is None else body


class AdmissionHandler:
    """The state of one app: engine, view source, metrics, log."""

    def __init__(
        self,
        settings: WebhookSettings,
        view_source: ViewSource,
        metrics: WebhookMetrics,
        log: DecisionLog,
    ) -> None:
        self.settings = settings
        self.view_source = view_source
        self.engine = Engine(settings.policy)
        self.metrics = metrics
        self.log = log

    # ------------------------------------------------------------------ reviews

    def read_review_body(self) -> Any:
        """The decoded JSON body; 413, 415 or 400 (as HTTPException) otherwise."""
        limit = self.settings.max_body_bytes
        # Refuse on the announced length before reading a byte.
        if request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge(
                f"the body is {request.content_length} bytes; an AdmissionReview is at most "
                f"{limit} bytes (the API server's own request limit)"
            )
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UnsupportedMediaType(
                f"Content-Encoding {encoding} is not supported: compression is not supported, "
                "send the AdmissionReview uncompressed (the API server never compresses it)"
            )
        if request.mimetype != JSON:
            raise UnsupportedMediaType(
                f"Content-Type must be {JSON}, got {request.content_type or 'none'}"
            )
        data = self._read_capped(limit)
        if len(data) > limit:
            raise RequestEntityTooLarge(
                f"the body exceeds {limit} bytes (the API server's own request limit)"
            )
        if not data:
            raise BadRequest("the body is empty; expected an AdmissionReview")
        try:
            body = json.loads(data, parse_int=limits.parse_int)
        except (ValueError, RecursionError) as error:
            raise BadRequest(f"the body is not valid JSON: {error}") from None
        problem = limits.find_problem(body)
        if problem is not None:
            raise BadRequest(f"the body is beyond the input limits: {problem}")
        return body

    @staticmethod
    def _read_capped(limit: int) -> bytes:
        """At most `limit + 1` bytes, whatever the client announced or streams: a lying
        client cannot make us buffer more than the limit.

        Straight from the WSGI input, as werkzeug would (the announced length, or a
        terminated stream such as gunicorn's chunked body), without its RawIOBase
        wrapper: `read(n)` there allocates an n-byte buffer first, 3 MiB per request,
        which cost more than deciding the review."""
        environ = request.environ
        stream = environ["wsgi.input"]
        length = request.content_length
        if length is not None:
            # Announced (and checked <= limit): read exactly that much, never more.
            data: bytes = stream.read(length) if length else b""
            if len(data) < length:
                raise BadRequest("the client sent less than its Content-Length")
            return data
        if not environ.get("wsgi.input_terminated"):
            return b""  # no length and no terminated stream: no body (WSGI)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = stream.read(min(_READ_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)

    def review(self, mutate: bool) -> Response:
        body = self.read_review_body()
        start = time.perf_counter()
        webhook = "mutate" if mutate else "validate"
        try:
            response, decision, engine_request = answer_review(
                self.engine, self.view_source.view(), body, mutate=mutate
            )
        except ReviewError as error:
            raise BadRequest(f"not an AdmissionReview v1 request: {error}") from None
        except Exception as error:
            response, decision = self._failed(body, error, webhook, mutate)
            engine_request = None
        try:
            self._record(webhook, body, response, decision, engine_request, start)
        except Exception as error:  # bookkeeping must never change the answer
            self.log.error("recording an admission decision failed", error, webhook=webhook)
        return _json_response(response)

    def _failed(
        self, body: Any, error: Exception, webhook: str, mutate: bool
    ) -> tuple[dict[str, Any], Decision]:
        """The answer when deciding raised: allowed or denied by `ruleErrors` (a
        defaulting failure allows: defaults are a convenience, the mutating webhook
        runs with failurePolicy Ignore)."""
        self.log.error(
            "deciding an admission request failed",
            error,
            webhook=webhook,
            uid=str(_dig(body, "request", "uid")),
        )
        message = (
            f"dvp-snapguard failed to decide this request ({type(error).__name__}); "
            "this is a bug in dvp-snapguard, please report it with the webhook's log"
        )
        deny = not mutate and self.settings.policy.rule_errors is Action.DENY
        violation = Violation(WEBHOOK_ERROR, Action.DENY if deny else Action.WARN, message)
        decision = (
            Decision(allowed=False, governed=True, violations=(violation,))
            if deny
            else Decision(governed=True, warnings=(violation,))
        )
        return review_response(parse_review(body), decision), decision

    def _record(
        self,
        webhook: str,
        body: Any,
        response: dict[str, Any],
        decision: Decision,
        engine_request: EngineRequest | None,
        start: float,
    ) -> None:
        answer = response["response"]
        if not answer["allowed"]:
            outcome = "denied"
        elif "patch" in answer:
            outcome = "patched"
        else:
            outcome = "allowed"
        admission = body["request"]
        kind = str(_dig(admission, "kind", "kind"))
        operation = str(admission.get("operation", ""))
        dry_run = bool(admission.get("dryRun") or False)
        name = engine_request.name if engine_request else str(admission.get("name") or "")
        seconds = time.perf_counter() - start
        self.metrics.observe_request(
            webhook,
            kind if kind in _GOVERNED else "other",
            operation,
            outcome,
            dry_run,
            seconds,
            decision.results,
        )
        self.log.decision(
            webhook=webhook,
            uid=str(admission.get("uid", "")),
            kind=kind,
            namespace=str(admission.get("namespace") or ""),
            name=name,
            operation=operation,
            user=str(_dig(admission, "userInfo", "username")),
            decision=outcome,
            rules=decision.rule_ids,
            dry_run=dry_run,
            duration_ms=seconds * 1000.0,
        )

    # ------------------------------------------------------------- operations

    def certificate_status(self) -> tuple[bool, str]:
        settings = self.settings
        if not (settings.cert_file and settings.key_file):
            return True, "no certificate configured (TLS terminated in front of the app)"
        cache = process_context_cache(settings.cert_file, settings.key_file, settings.client_ca)
        ok, reason = cache.status()
        if cache.not_after is not None:
            self.metrics.set_certificate_expiry(cache.not_after.timestamp())
        return ok, reason

    def healthz(self) -> Response:
        return _json_response({"status": "ok"})

    def readyz(self) -> Response:
        cert_ok, cert_reason = self.certificate_status()
        view_ok, view_reason = self.view_source.ready()
        ready = cert_ok and view_ok
        return _json_response(
            {
                "ready": ready,
                # The platform version decisions are made for (SPEC, "Platform versions").
                "platformVersion": str(self.engine.platform),
                "certificates": {"ok": cert_ok, "reason": cert_reason},
                "view": {"ok": view_ok, "reason": view_reason},
            },
            200 if ready else 503,
        )

    def metrics_page(self) -> Response:
        settings = self.settings
        if settings.cert_file and settings.key_file:
            cache = process_context_cache(settings.cert_file, settings.key_file, settings.client_ca)
            expiry = cache.not_after
            if expiry is None:
                try:
                    expiry = certificate_expiry(settings.cert_file)
                except CertificateError:
                    expiry = None
            if expiry is not None:
                self.metrics.set_certificate_expiry(expiry.timestamp())
        self.metrics.set_view_counts(self.view_source.view().counts())
        payload, content_type = self.metrics.render()
        return Response(payload, 200, content_type=content_type)

    # ----------------------------------------------------------------- errors

    def rejected(self, status: int, path: str, reason: str) -> None:
        """Log and count a request answered with an HTTP error (by the app or the server)."""
        try:
            self.metrics.observe_rejected(status)
            self.log.rejected(status=status, path=path, reason=reason)
        except Exception as error:  # bookkeeping must never change the answer
            self.log.error("recording a rejected request failed", error)

    def http_error(self, error: HTTPException) -> Response:
        status = error.code or 400
        if status >= 500:  # nothing we raise; never answer 500 all the same
            status = 503
        description = error.description or error.name
        self.rejected(status, request.path, description)
        response = _json_response({"error": description}, status)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    def unexpected_error(self, error: Exception) -> Response:
        self.log.error("unexpected error answering a request", error, path=request.path)
        return _json_response({"error": "internal error; see the webhook's log"}, 503)


def create_app(
    settings: WebhookSettings,
    view_source: ViewSource,
    *,
    log_stream: TextIO | None = None,
) -> Flask:
    """The webhook app: POST /validate and /mutate, GET /healthz, /readyz and /metrics.

    `log_stream` receives the JSON decision lines (default: stderr at write time)."""
    app = Flask(__name__)
    # Werkzeug's own guard as well: a chunked body past the limit raises 413 on read.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    handler = AdmissionHandler(
        settings, view_source, WebhookMetrics(settings.metrics_dir), DecisionLog(log_stream)
    )
    app.extensions["snapguard"] = handler
    app.config[ON_REJECTED] = handler.rejected
    app.add_url_rule(
        "/validate", "validate", partial(handler.review, mutate=False), methods=["POST"]
    )
    app.add_url_rule("/mutate", "mutate", partial(handler.review, mutate=True), methods=["POST"])
    app.add_url_rule("/healthz", "healthz", handler.healthz, methods=["GET"])
    app.add_url_rule("/readyz", "readyz", handler.readyz, methods=["GET"])
    app.add_url_rule("/metrics", "metrics", handler.metrics_page, methods=["GET"])
    app.register_error_handler(HTTPException, handler.http_error)
    app.register_error_handler(Exception, handler.unexpected_error)
    return app
