"""REST calls for `coordination.k8s.io/v1` Leases, the lock of the reconciler's leader
election. `policies.kinds` has no Lease entry (no rule reads Leases), so the path is
built here; the calls go through `KubeApi` like every other, with its errors.

Objects stay plain dicts; the times are Kubernetes MicroTime strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .api import ApiError, KubeApi

LEASE_GROUP = "coordination.k8s.io"
LEASE_VERSION = "v1"
LEASE_API_VERSION = f"{LEASE_GROUP}/{LEASE_VERSION}"
LEASE_KIND = "Lease"

Lease = dict[str, Any]


def lease_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{LEASE_GROUP}/{LEASE_VERSION}/namespaces/{namespace}/leases"
    return f"{path}/{name}" if name else path


def micro_time(moment: datetime | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseApi:
    """Get, create and replace (with the read resourceVersion: 409 when someone else
    wrote first) one namespace's Leases."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def get(self, namespace: str, name: str) -> Lease | None:
        try:
            lease: Lease = self.api._call("GET", lease_path(namespace, name))
        except ApiError as error:
            if error.not_found:
                return None
            raise
        return lease

    def create(self, lease: Lease) -> Lease:
        metadata = lease["metadata"]
        body = {"apiVersion": LEASE_API_VERSION, "kind": LEASE_KIND, **lease}
        created: Lease = self.api._call("POST", lease_path(metadata["namespace"]), body=body)
        return created

    def replace(self, lease: Lease) -> Lease:
        """PUT the whole Lease; its metadata.resourceVersion makes the write conditional."""
        metadata = lease["metadata"]
        body = {"apiVersion": LEASE_API_VERSION, "kind": LEASE_KIND, **lease}
        replaced: Lease = self.api._call(
            "PUT", lease_path(metadata["namespace"], metadata["name"]), body=body
        )
        return replaced
