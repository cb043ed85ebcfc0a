"""Writing the audit's PolicyReports (`wgpolicyk8s.io/v1alpha2`) to a cluster.

Each report is created, or, when it exists (409), read and replaced with the read
`resourceVersion` (one retry on a concurrent write's 409). Reports this tool wrote
earlier (its name and its managed-by label) in a namespace that no longer has anything
to report are deleted, so a dashboard never shows findings about objects long gone.
The reports themselves are built, purely, by `policies.reports`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from policies.reports import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REPORT_GROUP,
    REPORT_NAME,
    REPORT_PLURAL,
    REPORT_VERSION,
)

from .paged import Cluster, ClusterError, KubeApi, api_reason

# A replace that loses a race with another writer (409 on PUT) is retried this often.
REPLACE_ATTEMPTS = 3


class _Reports:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.api = KubeApi(cluster)
        self.custom = self.api.custom

    def _fail(self, what: str, error: ApiException) -> ClusterError:
        if error.status == 404 and what.startswith("create"):
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
        args = (REPORT_GROUP, REPORT_VERSION, namespace, REPORT_PLURAL)
        try:
            self.api.call(self.custom.create_namespaced_custom_object, *args, report)
            return f"{where} created"
        except ApiException as error:
            if error.status != 409:
                raise self._fail(f"create {where}", error) from None
        for attempt in range(REPLACE_ATTEMPTS):
            try:
                current = self.api.call(self.custom.get_namespaced_custom_object, *args, name)
                body = dict(report)
                body["metadata"] = {
                    **report["metadata"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                }
                self.api.call(self.custom.replace_namespaced_custom_object, *args, name, body)
                return f"{where} updated"
            except ApiException as error:
                if error.status == 409 and attempt + 1 < REPLACE_ATTEMPTS:
                    continue
                raise self._fail(f"replace {where}", error) from None
        raise ClusterError(f"cannot replace {where} at {self.cluster.server}")  # pragma: no cover

    def stale(self, namespace: str | None, keep: set[str]) -> list[str]:
        """Delete this tool's reports in namespaces (in scope) not in `keep`."""
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        try:
            if namespace is None:
                listed = self.api.call(
                    self.custom.list_cluster_custom_object,
                    REPORT_GROUP,
                    REPORT_VERSION,
                    REPORT_PLURAL,
                    label_selector=selector,
                )
            else:
                listed = self.api.call(
                    self.custom.list_namespaced_custom_object,
                    REPORT_GROUP,
                    REPORT_VERSION,
                    namespace,
                    REPORT_PLURAL,
                    label_selector=selector,
                )
        except ApiException as error:
            raise self._fail("list PolicyReports", error) from None
        done: list[str] = []
        for item in listed.get("items") or ():
            meta = item.get("metadata") or {}
            item_namespace = str(meta.get("namespace") or "")
            if meta.get("name") != REPORT_NAME or item_namespace in keep:
                continue
            try:
                self.api.call(
                    self.custom.delete_namespaced_custom_object,
                    REPORT_GROUP,
                    REPORT_VERSION,
                    item_namespace,
                    REPORT_PLURAL,
                    REPORT_NAME,
                )
            except ApiException as error:
                if error.status == 404:
                    continue
                raise self._fail(f"delete PolicyReport {item_namespace}/{REPORT_NAME}", error) from None
            done.append(f"PolicyReport {item_namespace}/{REPORT_NAME} deleted (nothing to report)")
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
