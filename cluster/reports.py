"""Writing the audit's PolicyReports (`wgpolicyk8s.io/v1alpha2`) to a cluster.

Each report is created, or, when it exists (409), read and replaced with the read
`resourceVersion` (one retry on a concurrent write's 409). Reports this tool wrote
earlier (its name and its managed-by label) in a namespace that no longer has anything
to report are deleted, so a dashboard never shows findings about objects long gone.
The reports themselves are built, purely, by `policies.reports`; the requests go
through `cluster.api`'s `KubeApi`, the connection is `cluster.paged`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.kinds import KindInfo
from policies.reports import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REPORT_GROUP,
    REPORT_KIND,
    REPORT_NAME,
    REPORT_PLURAL,
    REPORT_VERSION,
)

from .api import ApiError
from .paged import Cluster, ClusterError, api_reason, request

# A replace that loses a race with another writer (409 on PUT) is retried this often.
REPLACE_ATTEMPTS = 3
# The kind for `KubeApi` (not one of `policies.kinds`: the engine never reads it).
POLICY_REPORT = KindInfo(REPORT_KIND, REPORT_GROUP, REPORT_VERSION, REPORT_PLURAL)


class _Reports:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.api = cluster.api(POLICY_REPORT)

    def _fail(self, what: str, error: ApiError) -> ClusterError:
        if error.not_found and what.startswith("create"):
            return ClusterError(
                f"the API server at {self.cluster.server} does not serve "
                f"{REPORT_PLURAL}.{REPORT_GROUP}/{REPORT_VERSION}: install the PolicyReport CRD "
                "(kubernetes-sigs/wg-policy-prototypes) first"
            )
        return ClusterError(f"cannot {what} at {self.cluster.server}: {api_reason(error)}")

    def apply(self, report: dict[str, Any]) -> str:
        namespace = report["metadata"]["namespace"]
        name = report["metadata"]["name"]
        where = f"PolicyReport {namespace}/{name}"
        server = self.cluster.server
        try:
            request(server, self.api.create, report)
            return f"{where} created"
        except ApiError as error:
            if not error.conflict:
                raise self._fail(f"create {where}", error) from None
        for attempt in range(REPLACE_ATTEMPTS):
            try:
                current = request(server, self.api.get, REPORT_KIND, namespace, name)
                if current is None:  # deleted since the create's 409
                    raise ApiError(404, "NotFound", f'{REPORT_PLURAL}.{REPORT_GROUP} "{name}" not found')
                body = dict(report)
                body["metadata"] = {
                    **report["metadata"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                }
                request(server, self.api.replace, body)
                return f"{where} updated"
            except ApiError as error:
                if error.conflict and attempt + 1 < REPLACE_ATTEMPTS:
                    continue
                raise self._fail(f"replace {where}", error) from None
        raise ClusterError(f"cannot replace {where} at {server}")  # pragma: no cover

    def stale(self, namespace: str | None, keep: set[str]) -> list[str]:
        """Delete this tool's reports in namespaces (in scope) not in `keep`."""
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        server = self.cluster.server
        done: list[str] = []
        token: str | None = None
        while True:
            try:
                page = request(
                    server,
                    self.api.list_page,
                    REPORT_KIND,
                    namespace,
                    continue_token=token,
                    label_selector=selector,
                )
            except ApiError as error:
                raise self._fail("list PolicyReports", error) from None
            for item in page.get("items") or ():
                meta = item.get("metadata") or {}
                item_namespace = str(meta.get("namespace") or "")
                if meta.get("name") != REPORT_NAME or item_namespace in keep:
                    continue
                try:
                    deleted = request(server, self.api.delete, REPORT_KIND, item_namespace, REPORT_NAME)
                except ApiError as error:
                    raise self._fail(
                        f"delete PolicyReport {item_namespace}/{REPORT_NAME}", error
                    ) from None
                if deleted:  # not when it was already gone (404)
                    done.append(
                        f"PolicyReport {item_namespace}/{REPORT_NAME} deleted (nothing to report)"
                    )
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return done


def apply_policy_reports(
    cluster: Cluster, reports: Sequence[dict[str, Any]], *, namespace: str | None
) -> list[str]:
    """Create or replace each report; delete stale ones in scope (`namespace`, or every
    namespace for None). Returns one line per write."""
    writer = _Reports(cluster)
    done = [writer.apply(report) for report in reports]
    done.extend(writer.stale(namespace, {r["metadata"]["namespace"] for r in reports}))
    return done
