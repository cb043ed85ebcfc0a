"""The AdmissionReview v1 codec: request -> engine input, decision -> response.

Pure functions, so the webhook (`webhook/`), `snapguard review` and the tests share one
translation. The shape of a response follows SPEC's webhook section exactly: the uid,
apiVersion and kind are echoed; a denial is `allowed: false` with status 403 Forbidden,
one line per violated rule in `status.message` and one cause per violation; `warn`
findings and `unknown` outcomes go to `warnings`, `audit` findings to
`auditAnnotations`; defaults travel as a base64 JSONPatch.

Two error channels, never mixed: a body that is not an AdmissionReview raises
`ReviewError` (the webhook answers HTTP 400); a bad Kubernetes operation is a normal
response with `allowed: false`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import kinds
from .catalogue import Operation
from .engine import Decision, Engine, EngineRequest
from .view import ClusterView

ADMISSION_API_VERSION = "admission.k8s.io/v1"
AUDIT_KEY_LIMIT = 63  # auditAnnotations keys are qualified names


class ReviewError(ValueError):
    """The body is not a well-formed AdmissionReview v1 request."""


class GroupVersionKind(BaseModel):
    model_config = ConfigDict(extra="ignore")
    group: str = ""
    version: str = ""
    kind: str


class UserInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: str = ""


class AdmissionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    uid: str = Field(min_length=1)
    kind: GroupVersionKind
    name: str = ""
    namespace: str = ""
    operation: Operation
    user_info: UserInfo = Field(default_factory=UserInfo, alias="userInfo")
    object: Any = None
    old_object: Any = Field(default=None, alias="oldObject")
    dry_run: bool = Field(default=False, alias="dryRun")


class AdmissionReview(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    api_version: str = Field(alias="apiVersion")
    kind: str
    request: AdmissionRequest


def parse_review(body: Any) -> AdmissionReview:
    """Validate a decoded JSON body; raises ReviewError with one line saying why."""
    if not isinstance(body, dict):
        raise ReviewError("the body must be a JSON object (an AdmissionReview)")
    if body.get("apiVersion") != ADMISSION_API_VERSION or body.get("kind") != "AdmissionReview":
        raise ReviewError(
            f"expected apiVersion {ADMISSION_API_VERSION} and kind AdmissionReview, got "
            f"{body.get('apiVersion')!r} and {body.get('kind')!r}"
        )
    if not isinstance(body.get("request"), dict):
        raise ReviewError("the AdmissionReview has no request")
    try:
        return AdmissionReview.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise ReviewError(f"{location}: {first['msg']}") from None


def _object_name(request: AdmissionRequest) -> str:
    if request.name:
        return request.name
    for candidate in (request.object, request.old_object):
        if isinstance(candidate, dict) and isinstance(candidate.get("metadata"), dict):
            meta = candidate["metadata"]
            name = meta.get("name") or meta.get("generateName")
            if isinstance(name, str) and name:
                return name
    return ""


def governed_kind(gvk: GroupVersionKind) -> str | None:
    """The kind, when it is one the product governs in its own API group."""
    info = kinds.kind_info(gvk.kind)
    if info is None or gvk.kind not in kinds.GOVERNED_KINDS or gvk.group != info.group:
        return None
    return gvk.kind


def engine_request(review: AdmissionReview) -> EngineRequest | None:
    """The engine's input for a review, or None when the product does not govern it."""
    request = review.request
    kind = governed_kind(request.kind)
    if kind is None or request.operation not in (Operation.CREATE, Operation.UPDATE):
        return None
    return EngineRequest(
        operation=request.operation,
        kind=kind,
        namespace=request.namespace,
        name=_object_name(request),
        object=request.object,
        old_object=request.old_object,
        uid=request.uid,
        dry_run=request.dry_run,
        user=request.user_info.username,
    )


def review_response(
    review: AdmissionReview,
    decision: Decision,
    patch: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The AdmissionReview v1 response for a decision (and an optional JSONPatch)."""
    response: dict[str, Any] = {"uid": review.request.uid, "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = {
            "code": 403,
            "reason": "Forbidden",
            "message": "\n".join(f"{v.rule}: {v.message}" for v in decision.violations),
            "details": {
                "causes": [
                    {"field": v.field, "message": v.message, "reason": v.rule}
                    for v in decision.violations
                ]
            },
        }
    if decision.warnings:
        response["warnings"] = [f"{v.rule}: {v.message}" for v in decision.warnings]
    if decision.audits:
        annotations: dict[str, str] = {}
        for violation in decision.audits:
            key = violation.rule[:AUDIT_KEY_LIMIT]
            annotations[key] = (
                f"{annotations[key]}\n{violation.message}" if key in annotations else violation.message
            )
        response["auditAnnotations"] = annotations
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(patch, separators=(",", ":")).encode()
        ).decode()
    return {"apiVersion": review.api_version, "kind": review.kind, "response": response}


def answer_review(
    engine: Engine, view: ClusterView, body: Any, *, mutate: bool = False
) -> tuple[dict[str, Any], Decision, EngineRequest | None]:
    """Decide one AdmissionReview body: the validating answer, or with `mutate` the
    defaulting answer. Raises ReviewError for a body that is not a review."""
    review = parse_review(body)
    request = engine_request(review)
    if request is None:
        return review_response(review, Decision()), Decision(), None
    if mutate:
        return review_response(review, Decision(), engine.defaults(request)), Decision(), request
    decision = engine.decide(request, view)
    return review_response(review, decision), decision, request
