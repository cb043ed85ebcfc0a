"""The reconciler's only door to the cluster: reads pass through to `cluster.api.KubeApi`;
every write is guarded and counted.

* Before a write the guard asks whether this replica may act (leads the Lease, or runs
  without leader election); if not, `NotLeader` is raised and nothing is sent: a
  replica that lost its lease stops acting at the very next write.
* Writes are counted (`writes`), and an optional hook sees each one after it landed.
  Tests use the hook to kill the reconciler right after its N-th write.
* List items of built-in kinds come back without kind/apiVersion (the API server's
  typed lists omit them); they are filled in so objects parse into the engine's models.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cluster.api import MERGE_PATCH, KubeApi
from policies import kinds

JSONObject = dict[str, Any]
# (index of the write, 1-based; verb; kind; namespace; name)
WriteHook = Callable[[int, str, str, str, str], None]


class NotLeader(Exception):
    """This replica may not write: it does not hold (or no longer holds) the Lease."""


class ClusterClient:
    def __init__(
        self,
        api: KubeApi,
        *,
        may_write: Callable[[], bool] | None = None,
        write_hook: WriteHook | None = None,
    ) -> None:
        self.api = api
        self._may_write = may_write or (lambda: True)
        self.write_hook = write_hook
        self._lock = threading.Lock()
        self.writes = 0

    # --- reads --------------------------------------------------------------------

    def get(self, kind: str, namespace: str | None, name: str) -> JSONObject | None:
        obj = self.api.get(kind, namespace, name)
        return _typed(kind, obj) if obj is not None else None

    def list(self, kind: str, namespace: str | None = None) -> list[JSONObject]:
        items, _ = self.api.list_all(kind, namespace)
        return [_typed(kind, item) for item in items]

    # --- writes -------------------------------------------------------------------

    def _before(self) -> None:
        if not self._may_write():
            raise NotLeader("this replica does not hold the leader election lease")

    def _after(self, verb: str, kind: str, namespace: str | None, name: str) -> None:
        with self._lock:
            self.writes += 1
            index = self.writes
        if self.write_hook is not None:
            self.write_hook(index, verb, kind, namespace or "", name)

    def create(self, obj: JSONObject) -> JSONObject:
        self._before()
        created = self.api.create(obj)
        meta = obj.get("metadata", {})
        self._after("create", obj["kind"], meta.get("namespace"), meta.get("name", ""))
        return _typed(obj["kind"], created)

    def replace_status(self, obj: JSONObject) -> JSONObject:
        """PUT the status subresource; obj's metadata.resourceVersion makes it conditional."""
        self._before()
        updated = self.api.replace_status(obj)
        meta = obj["metadata"]
        self._after("update-status", obj["kind"], meta.get("namespace"), meta["name"])
        return _typed(obj["kind"], updated)

    def patch(self, kind: str, namespace: str | None, name: str, patch: Any) -> JSONObject:
        """A JSON merge patch of the main resource (metadata.resourceVersion in the patch
        makes it conditional)."""
        self._before()
        updated = self.api.patch(kind, namespace, name, patch, content_type=MERGE_PATCH)
        self._after("patch", kind, namespace, name)
        return _typed(kind, updated)

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        self._before()
        deleted = self.api.delete(kind, namespace, name)
        self._after("delete", kind, namespace, name)
        return deleted


def _typed(kind: str, obj: JSONObject) -> JSONObject:
    if not obj.get("kind") or not obj.get("apiVersion"):
        obj = {**obj, "kind": kind, "apiVersion": kinds.KINDS[kind].api_version}
    return obj
