"""A small typed REST layer over the official client for the kinds in `policies.kinds`.

Objects travel as plain dicts (the JSON the API server speaks): the watch cache parses
them into the engine's models, the reconciler builds them with the engine's restore
plan. Every call goes through `ApiClient.call_api` on the resource's REST path, so one
code path serves core, storage, snapshot and virtualization kinds alike. API errors
become `ApiError` with the HTTP status and the Status body's reason and message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from policies import kinds
from policies.kinds import KindInfo

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    """A failed API call: `status` is the HTTP code (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


def _api_error(error: ApiException) -> ApiError:
    reason, message = str(error.reason or ""), ""
    raw = error.body
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        body = json.loads(raw or "{}")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict):
        reason = str(body.get("reason") or reason)
        message = str(body.get("message") or "")
    else:
        message = str(raw or "")
    return ApiError(int(error.status or 0), reason, message)


def _network_reason(error: BaseException) -> str:
    """`Connection refused` rather than urllib3's wrapped object reprs."""
    reason = getattr(error, "reason", None) or error
    text = " ".join(str(reason).split())
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", text)
    text = re.sub(r"^Failed to establish a new connection:\s*", "", text)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return text or type(error).__name__


def resource_path(
    kind: str | KindInfo, namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    """The REST path of a kind of `policies.kinds` (by name), or of any kind given by its KindInfo."""
    info = kind if isinstance(kind, KindInfo) else kinds.KINDS[kind]
    base = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    if info.namespaced and namespace:
        base += f"/namespaces/{namespace}"
    path = f"{base}/{info.plural}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


class KubeApi:
    """REST calls for one API server. Thread-safe as far as the underlying ApiClient is
    (urllib3's pool is); timeouts are explicit on every call: seconds in all, or a
    (connect, read) pair. Kinds are named as in `policies.kinds`; `extra_kinds` adds
    kinds the engine does not know (the audit's PolicyReport)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        timeout: float | tuple[float, float] = 30.0,
        extra_kinds: Iterable[KindInfo] = (),
    ) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.extra_kinds = {info.kind: info for info in extra_kinds}

    def _path(
        self, kind: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        return resource_path(self.extra_kinds.get(kind, kind), namespace, name, subresource)

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        stream: bool = False,
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        api = self.api_client
        try:
            method_, url, header_params, serialized, post = api.param_serialize(
                method,
                path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = api.call_api(
                method_,
                url,
                header_params=header_params,
                body=serialized,
                post_params=post,
                _request_timeout=timeout if timeout is not None else self.timeout,
            )
            raw = response.response  # urllib3's response, not preloaded
            if stream and 200 <= response.status < 300:
                return raw
            data = raw.data
            raw.release_conn()
        except ApiException as error:
            if not error.status:  # the client's own failure (TLS): the server was not reached
                raise ApiError(0, "Unreachable", f"{api.configuration.host}: {_network_reason(error)}") from None
            raise _api_error(error) from None
        except (Urllib3Error, OSError) as error:
            raise ApiError(0, "Unreachable", f"{api.configuration.host}: {_network_reason(error)}") from None
        if not 200 <= response.status < 300:
            raise _api_error(ApiException(status=response.status, reason=response.reason, body=data))
        return json.loads(data) if data else {}

    # --- reads -------------------------------------------------------------------

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call("GET", self._path(kind, namespace, name))
        except ApiError as error:
            if error.not_found:
                return None
            raise
        return result

    def served_resources(self, group_version: str) -> set[str] | None:
        """The resources (plurals, no subresources) the server serves in a group
        version, from discovery; None when it does not serve the group version."""
        path = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        try:
            listing: dict[str, Any] = self._call("GET", path)
        except ApiError as error:
            if error.not_found:
                return None
            raise
        return {
            str(entry.get("name"))
            for entry in listing.get("resources") or []
            if isinstance(entry, dict) and "/" not in str(entry.get("name", "/"))
        }

    def list_page(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        limit: int = 500,
        continue_token: str | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> dict[str, Any]:
        query: list[tuple[str, Any]] = [("limit", limit)]
        if continue_token:
            query.append(("continue", continue_token))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if label_selector:
            query.append(("labelSelector", label_selector))
        page: dict[str, Any] = self._call("GET", self._path(kind, namespace), query=query)
        return page

    def list_all(
        self, kind: str, namespace: str | None = None, *, limit: int = 500, field_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object (paged), and the resourceVersion of the first page's list."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            page = self.list_page(kind, namespace, limit=limit, continue_token=token, field_selector=field_selector)
            version = version or str(page.get("metadata", {}).get("resourceVersion") or "")
            items.extend(page.get("items") or [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items, version

    def watch(
        self,
        kind: str,
        resource_version: str,
        *,
        namespace: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> Iterator[dict[str, Any]]:
        """Watch events (dicts with `type` and `object`), bookmarks requested."""
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_seconds),
        ]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        response = self._call(
            "GET", self._path(kind, namespace), query=query, stream=True, timeout=timeout_seconds + 30
        )
        try:
            buffer = b""
            for chunk in response.stream(amt=65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)
        except (Urllib3Error, OSError) as error:
            raise ApiError(0, "Unreachable", f"watch {kind}: {error}") from None
        finally:
            response.release_conn()

    # --- writes (the reconciler is the only writer) ---------------------------------

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = obj.get("metadata", {}).get("namespace")
        result: dict[str, Any] = self._call("POST", self._path(obj["kind"], namespace), body=obj)
        return result

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        result: dict[str, Any] = self._call(
            "PUT", self._path(obj["kind"], meta.get("namespace"), meta["name"]), body=obj
        )
        return result

    def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        result: dict[str, Any] = self._call(
            "PUT", self._path(obj["kind"], meta.get("namespace"), meta["name"], "status"), body=obj
        )
        return result

    def patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        content_type: str = MERGE_PATCH,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PATCH",
            self._path(kind, namespace, name, subresource),
            body=patch,
            content_type=content_type,
        )
        return result

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            self._call("DELETE", self._path(kind, namespace, name))
        except ApiError as error:
            if error.not_found:
                return False
            raise
        return True
