"""What the controllers share: the platform's names, annotations and finalizers, owner
references, conditions and status writes, the "GET before create" rule, and the
per-reconcile view of the cluster the engine decides from.

Names are deterministic (a function of the owner's name and uid), so a reconciler that
was killed and restarted finds what it created before instead of creating it twice.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from cluster.api import ApiError
from policies import kinds
from policies.engine import Engine
from policies.models import KubeObject, parse_object
from policies.view import InMemoryView

from .client import ClusterClient

log = logging.getLogger("reconciler")

JSONObject = dict[str, Any]


@dataclass(frozen=True)
class Result:
    """What a reconcile asks of the queue: nothing (done, or waiting for a watch
    event), `requeue` at once (it made one step and has more to do), or
    `requeue_after` seconds (a poll, in case no watch event comes)."""

    requeue: bool = False
    requeue_after: float | None = None


DONE = Result()
AGAIN = Result(requeue=True)


@dataclass(frozen=True)
class Context:
    client: ClusterClient
    engine: Engine
    # How long a reconcile waiting on something outside the reconciler (a CSI driver,
    # a snapshot) waits before it looks again even without a watch event.
    poll_interval: float = 10.0


class Controller(Protocol):
    kind: str

    def reconcile(self, namespace: str, name: str) -> Result: ...

# --- the platform's strings ----------------------------------------------------------

# `api/core/v1alpha2/finalizers.go`
VDS_CLEANUP_FINALIZER = "virtualization.deckhouse.io/vdsnapshot-cleanup"
VDS_PROTECTION_FINALIZER = "virtualization.deckhouse.io/vdsnapshot-protection"

# The platform puts this on the KubeVirt VMI; there is no VMI here, so it goes on the
# VirtualMachine and "freeze" there *is* the frozen state (docs/reconciler.md).
FILESYSTEM_REQUEST_ANNOTATION = "virtualization.deckhouse.io/virtual-machine-filesystem-request"
FREEZE = "freeze"
UNFREEZE = "unfreeze"

# VolumeSnapshot annotations (`common/annotations/annotations.go`, §1.7).
STORAGE_CLASS_ANNOTATION = kinds.VOLUME_SNAPSHOT_STORAGE_CLASS_ANNOTATION
VOLUME_MODE_ANNOTATION = "virtualization.deckhouse.io/volume-mode"
ACCESS_MODE_ANNOTATION = "virtualization.deckhouse.io/access-mode"
VD_ORIGINAL_ANNOTATIONS_ANNOTATION = "virtualization.deckhouse.io/vd-original-annotations"
VD_ORIGINAL_LABELS_ANNOTATION = "virtualization.deckhouse.io/vd-original-labels"
VD_ORIGINAL_SIZE_ANNOTATION = "virtualization.deckhouse.io/vd-original-size"
VD_HAD_OWNER_REFERENCE_ANNOTATION = "virtualization.deckhouse.io/vd-had-owner-reference"

PENDING = "Pending"
IN_PROGRESS = "InProgress"
READY = "Ready"
FAILED = "Failed"
TERMINATING = "Terminating"

MAX_NAME_LENGTH = 253


def supplement_name(prefix: str, name: str, uid: str) -> str:
    """`<prefix><name>-<uid>`, the name part shortened so the whole fits 253 characters
    (`supplements/generator.go`, v1.6.0+); a cut never leaves a trailing '-' or '.'."""
    room = MAX_NAME_LENGTH - len(prefix) - 1 - len(uid)
    part = name[:room].rstrip("-.") if len(name) > room else name
    return f"{prefix}{part}-{uid}"


def volume_snapshot_name(vds: JSONObject) -> str:
    return supplement_name("d8v-vds-", name_of(vds), uid_of(vds))


def snapshot_secret_name(vms: JSONObject) -> str:
    return supplement_name("d8v-vms-", name_of(vms), uid_of(vms))


def child_disk_snapshot_name(disk: str, vms_uid: str) -> str:
    """`<vdName>-<vmSnapshotUID>` (§2.7)."""
    return supplement_name("", disk, vms_uid)


# --- metadata ------------------------------------------------------------------------


def meta(obj: JSONObject) -> JSONObject:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def name_of(obj: JSONObject) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: JSONObject) -> str:
    return str(meta(obj).get("namespace") or "")


def uid_of(obj: JSONObject) -> str:
    return str(meta(obj).get("uid") or "")


def deleting(obj: JSONObject) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def finalizers_of(obj: JSONObject) -> list[str]:
    return [str(f) for f in meta(obj).get("finalizers") or []]


def annotations_of(obj: JSONObject) -> dict[str, str]:
    value = meta(obj).get("annotations")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def status_of(obj: JSONObject) -> JSONObject:
    value = obj.get("status")
    return value if isinstance(value, dict) else {}


def spec_of(obj: JSONObject) -> JSONObject:
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def phase_of(obj: JSONObject) -> str:
    return str(status_of(obj).get("phase") or "")


def owner_reference(owner: JSONObject) -> JSONObject:
    """A controller reference to `owner`, as controller-runtime builds it."""
    return {
        "apiVersion": owner.get("apiVersion") or kinds.KINDS[owner["kind"]].api_version,
        "kind": owner["kind"],
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: JSONObject, owner_uid: str) -> bool:
    return bool(owner_uid) and any(
        isinstance(ref, dict) and ref.get("uid") == owner_uid for ref in meta(obj).get("ownerReferences") or []
    )


def owners_of_kind(obj: JSONObject, kind: str) -> list[str]:
    return [
        str(ref.get("name"))
        for ref in meta(obj).get("ownerReferences") or []
        if isinstance(ref, dict) and ref.get("kind") == kind and ref.get("name")
    ]


# --- conditions and status -------------------------------------------------------------


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(obj: JSONObject, type_: str) -> JSONObject | None:
    for entry in status_of(obj).get("conditions") or []:
        if isinstance(entry, dict) and entry.get("type") == type_:
            return entry
    return None


def condition_true(obj: JSONObject, type_: str) -> bool:
    entry = condition(obj, type_)
    return entry is not None and entry.get("status") == "True"


class StatusBuilder:
    """A new status for `obj`, started from its current one: set the phase, fields and
    conditions, then `changed` says whether there is anything to write. A condition
    keeps its lastTransitionTime while its status stays the same."""

    def __init__(self, obj: JSONObject) -> None:
        self.obj = obj
        self.status: JSONObject = copy.deepcopy(status_of(obj))
        self.generation = meta(obj).get("generation")

    def phase(self, phase: str) -> StatusBuilder:
        self.status["phase"] = phase
        return self

    def set(self, field: str, value: Any) -> StatusBuilder:
        if value is None:
            self.status.pop(field, None)
        else:
            self.status[field] = value
        return self

    def condition(self, type_: str, status: str, reason: str, message: str = "") -> StatusBuilder:
        conditions = [c for c in self.status.get("conditions") or [] if isinstance(c, dict)]
        previous = next((c for c in conditions if c.get("type") == type_), None)
        entry: JSONObject = {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": (
                previous.get("lastTransitionTime")
                if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime")
                else now()
            ),
        }
        if self.generation is not None:
            entry["observedGeneration"] = self.generation
        if previous is not None:
            conditions[conditions.index(previous)] = entry
        else:
            conditions.append(entry)
        self.status["conditions"] = conditions
        return self

    def build(self) -> JSONObject:
        if self.generation is not None:
            self.status["observedGeneration"] = self.generation
        return self.status

    @property
    def changed(self) -> bool:
        return self.build() != status_of(self.obj)


def write_status(client: ClusterClient, obj: JSONObject, builder: StatusBuilder) -> JSONObject:
    """Write the built status if it differs; conditional on obj's resourceVersion (a
    409 means someone else wrote first: the caller requeues and recomputes)."""
    if not builder.changed:
        return obj
    old_phase, new_phase = phase_of(obj), str(builder.status.get("phase") or "")
    written = client.replace_status({**obj, "status": builder.build()})
    if old_phase != new_phase:
        log.info("%s %s/%s: phase %s -> %s", obj["kind"], namespace_of(obj), name_of(obj), old_phase or '""', new_phase)
    return written


def patch_finalizers(client: ClusterClient, obj: JSONObject, finalizers: list[str]) -> JSONObject:
    """Replace metadata.finalizers, conditional on obj's resourceVersion (merge patches
    replace lists whole, so a stale list must never win)."""
    return client.patch(
        obj["kind"],
        namespace_of(obj) or None,
        name_of(obj),
        {"metadata": {"finalizers": finalizers, "resourceVersion": meta(obj).get("resourceVersion")}},
    )


def add_finalizer(client: ClusterClient, obj: JSONObject, finalizer: str) -> JSONObject:
    current = finalizers_of(obj)
    if finalizer in current:
        return obj
    return patch_finalizers(client, obj, [*current, finalizer])


def remove_finalizer(client: ClusterClient, obj: JSONObject, finalizer: str) -> JSONObject:
    current = finalizers_of(obj)
    if finalizer not in current:
        return obj
    return patch_finalizers(client, obj, [f for f in current if f != finalizer])


# --- create once ---------------------------------------------------------------------


class ForeignObject(Exception):
    """An object under a name this reconciler would create exists and is not its own."""

    def __init__(self, existing: JSONObject) -> None:
        super().__init__(f'{existing.get("kind")} "{name_of(existing)}" exists and is not ours')
        self.existing = existing


def create_once(client: ClusterClient, desired: JSONObject, ours: Callable[[JSONObject], bool]) -> JSONObject:
    """GET first: an existing object is accepted only if `ours(existing)`, otherwise
    ForeignObject; absent, it is created. An AlreadyExists on create (someone raced
    us) is judged the same way after another GET."""
    kind, namespace, name = desired["kind"], namespace_of(desired) or None, name_of(desired)
    existing = client.get(kind, namespace, name)
    if existing is None:
        try:
            return client.create(desired)
        except ApiError as error:
            if error.status != 409:
                raise
        existing = client.get(kind, namespace, name)
        if existing is None:  # created and deleted meanwhile: let the caller retry
            raise ApiError(409, "Conflict", f'{kind} "{name}" appeared and vanished while being created')
    if not ours(existing):
        raise ForeignObject(existing)
    return existing


# --- the engine's view -------------------------------------------------------------------


@dataclass
class ViewReader:
    """Builds an InMemoryView for one decision from fresh reads. A kind is marked
    given as soon as it was looked up, found or not: a rule then sees "absent", never
    "unknown"."""

    client: ClusterClient
    view: InMemoryView

    @classmethod
    def new(cls, client: ClusterClient) -> ViewReader:
        return cls(client, InMemoryView())

    def _put(self, raw: JSONObject) -> None:
        try:
            model: KubeObject = parse_object(raw)
        except (ValidationError, KeyError):
            return  # an object of a shape no rule can read is left out, as the cache does
        self.view.put(model)

    def put(self, raw: JSONObject) -> None:
        self.view.mark_given(raw["kind"])
        self._put(raw)

    def get(self, kind: str, namespace: str | None, name: str | None) -> JSONObject | None:
        self.view.mark_given(kind)
        if not name:
            return None
        raw = self.client.get(kind, namespace if kinds.is_namespaced(kind) else None, name)
        if raw is not None:
            self._put(raw)
        return raw

    def get_many(self, kind: str, namespace: str, names: Iterable[str]) -> dict[str, JSONObject]:
        found: dict[str, JSONObject] = {}
        for name in dict.fromkeys(names):
            raw = self.get(kind, namespace, name)
            if raw is not None:
                found[name] = raw
        return found

    def list(self, kind: str, namespace: str | None) -> list[JSONObject]:
        self.view.mark_given(kind)
        items = self.client.list(kind, namespace if kinds.is_namespaced(kind) else None)
        for raw in items:
            self._put(raw)
        return items


def json_annotation(value: dict[str, str]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def ensure_period(message: str) -> str:
    """The platform appends '.' to messages that lack one."""
    message = message.rstrip()
    return message if message.endswith(".") else message + "."
