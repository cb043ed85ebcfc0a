"""Property tests: the engine never raises, whatever a client sends.

The webhook hands the engine whatever the API server forwards and `snapguard check`
whatever a manifest holds, so `Engine.decide` and `Engine.defaults` must turn every
input into a value. Hypothesis generates objects shaped like the governed kinds (valid
spec values mixed with wrong types, missing keys, unicode and empty names, nested
junk), CREATE and UPDATE with arbitrary old objects, and decides them against a small
realistic cluster, a view given every kind but holding nothing, and an empty view.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import kinds
from policies.catalogue import CATALOGUE, Action, Operation, Outcome
from policies.engine import OBJECT_INVALID, Decision, Engine, EngineRequest
from policies.models import parse_object
from policies.view import InMemoryView

API = kinds.API_VERSION
GOVERNED = (
    kinds.VIRTUAL_DISK_SNAPSHOT,
    kinds.VIRTUAL_MACHINE_SNAPSHOT,
    kinds.VIRTUAL_MACHINE_RESTORE,
    kinds.VIRTUAL_DISK,
)
REPLICATED = "replicated.csi.storage.deckhouse.io"
VS_NAME = "d8v-vds-snap1-9b2f6c1e-3a4d-4e5f-8a7b-1c2d3e4f5a6b"
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the views -----------------------------------------------------------------------


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "ns1", "generation": 1, **extra}


STATE: list[dict[str, Any]] = [
    {
        "apiVersion": API,
        "kind": "VirtualDisk",
        "metadata": _meta("d1"),
        "spec": {"persistentVolumeClaim": {"size": "10Gi", "storageClassName": "replicated"}},
        "status": {
            "phase": "Ready",
            "capacity": "10Gi",
            "storageClassName": "replicated",
            "target": {"persistentVolumeClaimName": "pvc-d1"},
            "attachedToVirtualMachines": [{"name": "vm1", "mounted": True}],
            "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}],
        },
    },
    {
        "apiVersion": API,
        "kind": "VirtualDisk",
        "metadata": _meta("d2"),
        "spec": {"persistentVolumeClaim": {"size": "5Gi"}},
        "status": {
            "phase": "Resizing",
            "capacity": "5Gi",
            "target": {"persistentVolumeClaimName": "pvc-d2"},
            "attachedToVirtualMachines": [{"name": "vm1"}, {"name": "vm2"}],
            "conditions": [{"type": "Resizing", "status": "True", "observedGeneration": 1}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta("pvc-d1"),
        "spec": {"storageClassName": "replicated"},
        "status": {"phase": "Bound"},
    },
    {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "replicated"}, "provisioner": REPLICATED},
    {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "local-thin"},
        "provisioner": "local.csi.storage.deckhouse.io",
    },
    {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {
            "name": "replicated-vsc",
            "annotations": {kinds.DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "driver": REPLICATED,
        "deletionPolicy": "Delete",
    },
    {
        "apiVersion": API,
        "kind": "VirtualMachine",
        "metadata": _meta("vm1"),
        "spec": {
            "virtualMachineIPAddressName": "vm1-ip",
            "blockDeviceRefs": [{"kind": "VirtualDisk", "name": "d1"}],
            "provisioning": {"type": "UserDataRef", "userDataRef": {"kind": "Secret", "name": "cloud-init"}},
            "runPolicy": "AlwaysOnUnlessStoppedManually",
        },
        "status": {
            "phase": "Running",
            "virtualMachineIPAddressName": "vm1-ip",
            "ipAddress": "10.66.10.5",
            "blockDeviceRefs": [{"kind": "VirtualDisk", "name": "d1", "size": "10Gi", "attached": True}],
            "conditions": [
                {"type": "AgentReady", "status": "True"},
                {"type": "BlockDevicesReady", "status": "True"},
            ],
        },
    },
    {
        "apiVersion": API,
        "kind": "VirtualMachineIPAddress",
        "metadata": _meta("vm1-ip"),
        "spec": {"type": "Auto"},
        "status": {"phase": "Attached", "address": "10.66.10.5", "virtualMachineName": "vm1"},
    },
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta("cloud-init"),
        "type": "provisioning.virtualization.deckhouse.io/cloud-init",
        "data": {"userData": base64.b64encode(b"#cloud-config\n").decode()},
    },
    {
        "apiVersion": API,
        "kind": "VirtualDiskSnapshot",
        "metadata": _meta("snap1"),
        "spec": {"virtualDiskName": "d1", "requiredConsistency": True},
        "status": {"phase": "Ready", "volumeSnapshotName": VS_NAME, "consistent": True},
    },
    {
        "apiVersion": API,
        "kind": "VirtualDiskSnapshot",
        "metadata": _meta("snap-pending"),
        "spec": {"virtualDiskName": "gone"},
        "status": {"phase": "InProgress"},
    },
    {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": _meta(VS_NAME, annotations={"virtualization.deckhouse.io/storage-class-name": "replicated"}),
        "spec": {"source": {"persistentVolumeClaimName": "pvc-d1"}},
        "status": {"readyToUse": True, "restoreSize": "10Gi"},
    },
    {
        "apiVersion": API,
        "kind": "VirtualMachineSnapshot",
        "metadata": _meta("vmsnap1"),
        "spec": {"virtualMachineName": "vm1", "requiredConsistency": True, "keepIPAddress": "Always"},
        "status": {
            "phase": "Ready",
            "consistent": True,
            "virtualMachineSnapshotSecretName": "vmsnap1-secret",
            "virtualDiskSnapshotNames": ["snap1"],
            "conditions": [{"type": "VirtualMachineSnapshotReady", "status": "True"}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta("vmsnap1-secret"),
        "type": kinds.SNAPSHOT_SECRET_TYPE,
        "data": {
            "vm": _b64(
                {
                    "apiVersion": API,
                    "kind": "VirtualMachine",
                    "metadata": {"name": "vm1", "namespace": "ns1"},
                    "spec": {
                        "virtualMachineIPAddressName": "vm1-ip",
                        "blockDeviceRefs": [{"kind": "VirtualDisk", "name": "d1"}],
                        "provisioning": {"type": "UserDataRef", "userDataRef": {"kind": "Secret", "name": "cloud-init"}},
                    },
                }
            ),
            "vmip": _b64(
                {
                    "apiVersion": API,
                    "kind": "VirtualMachineIPAddress",
                    "metadata": {"name": "vm1-ip"},
                    "spec": {"type": "Static", "staticIP": "10.66.10.5"},
                }
            ),
            "provisioner": _b64(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "cloud-init"},
                    "data": {"userData": base64.b64encode(b"#cloud-config\n").decode()},
                }
            ),
        },
    },
    # A Secret whose content is not what a snapshot Secret holds.
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta("broken-secret"),
        "type": kinds.SNAPSHOT_SECRET_TYPE,
        "data": {"vm": base64.b64encode(b"not json, not base64 either \xff").decode()},
    },
    {
        "apiVersion": API,
        "kind": "VirtualMachineSnapshot",
        "metadata": _meta("vmsnap-broken"),
        "spec": {"virtualMachineName": "vm1"},
        "status": {
            "phase": "Ready",
            "virtualMachineSnapshotSecretName": "broken-secret",
            "virtualDiskSnapshotNames": ["snap1", "snap-pending", "missing"],
            "conditions": [{"type": "VirtualMachineSnapshotReady", "status": "True"}],
        },
    },
]


def realistic_view() -> InMemoryView:
    return InMemoryView(parse_object(obj) for obj in STATE)


# Built once: rules only read the view (and a property below checks deciding twice
# gives the same answer).
VIEWS: dict[str, InMemoryView] = {
    "realistic": realistic_view(),
    "given-but-empty": InMemoryView(given_kinds=list(kinds.KINDS)),
    "empty": InMemoryView(),
}


# --- the objects ---------------------------------------------------------------------

NAMES_IN_STATE = ["d1", "d2", "gone", "snap1", "snap-pending", "vm1", "vm2", "vmsnap1", "vmsnap-broken"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
junk = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=8,
)
names = st.one_of(
    st.sampled_from(NAMES_IN_STATE), st.sampled_from(NAMES_IN_STATE), st.just(""), st.text(max_size=12)
)


def _one_in(odds: int) -> st.SearchStrategy[bool]:
    # sampled_from draws near-uniformly (integers() favours its bounds) and shrinks
    # towards its first element, here "no": a shrunk example keeps valid values.
    return st.sampled_from(range(odds)).map(lambda i: i == odds - 1)


def ref(*in_state: str) -> st.SearchStrategy[str]:
    """A reference to another object: mostly one the realistic view holds."""
    return st.one_of(st.sampled_from(in_state), st.sampled_from(in_state), names)


@st.composite
def _sometimes_junk(draw: st.DrawFn, valid: st.SearchStrategy[Any], odds: int) -> Any:
    if draw(_one_in(odds)):
        return draw(junk)
    return draw(valid)


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field: nearly always a valid value, now and then a value of any JSON type (so
    most objects get past the model and reach the rules, and some do not)."""
    return _sometimes_junk(valid, 25)


def maybe_dict(
    required: dict[str, st.SearchStrategy[Any]] | None = None,
    optional: dict[str, st.SearchStrategy[Any]] | None = None,
) -> st.SearchStrategy[Any]:
    """A mapping with any subset of the optional keys, sometimes with unknown extra keys
    (which the models must ignore), now and then junk instead of a mapping."""
    base = st.fixed_dictionaries(required or {}, optional=optional or {})
    extra = st.dictionaries(st.text(max_size=6), junk, min_size=1, max_size=2)
    with_extra = st.builds(lambda known, unknown: {**unknown, **known}, base, extra)
    return _sometimes_junk(st.one_of(base, base, base, with_extra), 30)


quantities = st.one_of(
    st.sampled_from(["10Gi", "10737418240", "11G", "10G", "5Gi", "1Ti", "0", "-1Gi", "1e3", "1.5Gi", "garbage", "", "1e999999"]),
    st.integers(min_value=-(2**64), max_value=2**64),
)
metadata = maybe_dict(
    optional={
        "name": names,
        "namespace": st.sampled_from(["ns1", "ns2", "", "default"]),
        "generation": field(st.integers(min_value=0, max_value=3)),
        "labels": field(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2)),
        "deletionTimestamp": st.just("2026-11-27T00:00:00Z"),
        "ownerReferences": field(st.lists(maybe_dict(optional={"kind": st.text(max_size=8), "name": names}), max_size=1)),
    }
)
# A request's status is never read by the rules; it only has to get past the models.
status = maybe_dict(optional={"phase": st.sampled_from(["Ready", "Pending", ""]), "conditions": st.just([])})

SPECS: dict[str, st.SearchStrategy[Any]] = {
    kinds.VIRTUAL_DISK_SNAPSHOT: maybe_dict(
        required={"virtualDiskName": field(ref("d1", "d2", "gone"))},
        optional={
            "requiredConsistency": field(st.booleans()),
            "volumeSnapshotClassName": field(st.sampled_from(["replicated-vsc", "missing-vsc", ""])),
        }
    ),
    kinds.VIRTUAL_MACHINE_SNAPSHOT: maybe_dict(
        required={"virtualMachineName": field(ref("vm1", "vm2"))},
        optional={
            "requiredConsistency": field(st.booleans()),
            "keepIPAddress": field(st.sampled_from(["Always", "Never", "Sometimes", ""])),
            "volumeSnapshotClasses": field(
                st.lists(
                    maybe_dict(
                        optional={
                            "storageClassName": field(st.sampled_from(["replicated", "local-thin", "nope"])),
                            "volumeSnapshotClassName": field(st.sampled_from(["replicated-vsc", "nope"])),
                        }
                    ),
                    max_size=3,
                )
            ),
        }
    ),
    kinds.VIRTUAL_MACHINE_RESTORE: maybe_dict(
        required={"virtualMachineSnapshotName": field(ref("vmsnap1", "vmsnap-broken"))},
        optional={
            "restoreMode": field(st.sampled_from(["Safe", "Forced", "Strict", ""])),
            "nameReplacements": field(
                st.lists(
                    maybe_dict(
                        optional={
                            "from": maybe_dict(
                                optional={
                                    "kind": field(
                                        st.sampled_from(
                                            ["VirtualMachine", "VirtualDisk", "VirtualMachineIPAddress", "Secret", "Pod", ""]
                                        )
                                    ),
                                    "name": field(names),
                                }
                            ),
                            "to": field(st.one_of(names, st.sampled_from(["vm1-restored", "a" * 64, "UPPER", "d1"]))),
                        }
                    ),
                    max_size=4,
                )
            ),
        }
    ),
    kinds.VIRTUAL_DISK: maybe_dict(
        required={
            "dataSource": maybe_dict(
                required={
                    "type": field(st.sampled_from(["ObjectRef", "ObjectRef", "ObjectRef", "HTTP", "ContainerImage", "Upload"])),
                    "objectRef": maybe_dict(
                        required={
                            "kind": field(st.sampled_from(["VirtualDiskSnapshot", "VirtualDiskSnapshot", "VirtualImage", "ClusterVirtualImage"])),
                            "name": field(ref("snap1", "snap-pending")),
                        }
                    ),
                }
            ),
            "persistentVolumeClaim": maybe_dict(
                optional={
                    "size": field(quantities),
                    "storageClassName": field(st.sampled_from(["replicated", "local-thin", "nope", ""])),
                }
            ),
        }
    ),
}


@st.composite
def objects(draw: st.DrawFn, kind: str) -> Any:
    """A raw object of `kind`: usually complete, but any top-level key may be missing
    or of a wrong type, and now and then the object is not a mapping at all."""
    if draw(_one_in(30)):
        return draw(junk)
    complete = st.fixed_dictionaries(
        {
            "apiVersion": st.just(API),
            "kind": field(st.one_of(st.just(kind), st.just(kind), st.just(kind), st.sampled_from(GOVERNED))),
            "metadata": metadata,
            "spec": SPECS[kind],
        },
        optional={"status": status},
    )
    partial = st.fixed_dictionaries(
        {},
        optional={
            "apiVersion": field(st.just(API)),
            "kind": field(st.just(kind)),
            "metadata": metadata,
            "spec": SPECS[kind],
            "status": status,
        },
    )
    return draw(st.one_of(complete, complete, complete, partial))


@st.composite
def requests(draw: st.DrawFn) -> EngineRequest:
    kind = draw(st.sampled_from(GOVERNED))
    operation = draw(
        st.sampled_from([Operation.CREATE, Operation.CREATE, Operation.UPDATE, Operation.UPDATE, Operation.DELETE])
    )
    obj = draw(objects(kind))
    old: Any = None
    if operation is Operation.UPDATE:
        # The old object: a mutation of the new one (the usual case), another random
        # object of the kind, or nothing at all.
        old = draw(
            st.one_of(
                st.just(copy.deepcopy(obj)),
                st.builds(lambda spec: {**obj, "spec": spec} if isinstance(obj, dict) else obj, SPECS[kind]),
                objects(kind),
                st.none(),
            )
        )
    return EngineRequest(
        operation=operation,
        kind=kind,
        namespace=draw(st.one_of(st.just("ns1"), st.just("ns1"), st.sampled_from(["ns2", "", "default"]), st.text(max_size=10))),
        name=draw(names),
        object=obj,
        old_object=old,
        uid=draw(st.uuids().map(str)),
        dry_run=draw(st.booleans()),
    )


# --- the properties ------------------------------------------------------------------

KNOWN_RULES = set(CATALOGUE) | {OBJECT_INVALID}


def check_decision(decision: Decision) -> None:
    assert isinstance(decision, Decision)
    assert isinstance(decision.allowed, bool)
    assert decision.allowed == (not decision.violations)
    for reported in (*decision.violations, *decision.warnings, *decision.audits):
        assert reported.rule in KNOWN_RULES, reported
        assert isinstance(reported.message, str) and reported.message
        assert isinstance(reported.action, Action)
    for result in decision.results:
        assert result.rule in KNOWN_RULES
        assert isinstance(result.outcome, Outcome)


def decide_everywhere(request: EngineRequest) -> list[Decision]:
    engine = Engine()
    return [engine.decide(request, view) for view in VIEWS.values()]


# One property per entry point: generating the objects costs far more than deciding
# them, so each generated request is put through every check at once.


@PROPERTY
@given(requests())
def test_decide_never_raises(request: EngineRequest) -> None:
    """Whatever the object, old object and operation, decide returns a Decision whose
    reported rule ids come from the catalogue (or are object-invalid), against a
    realistic view, a view given every kind but holding none, and an empty view; no
    rule of the catalogue raises (an `error` outcome is a rule bug); deciding does not
    modify the request's objects, and deciding again gives the same decision."""
    before = (copy.deepcopy(request.object), copy.deepcopy(request.old_object))
    decisions = decide_everywhere(request)
    for decision in decisions:
        check_decision(decision)
        errors = [(r.rule, r.message) for r in decision.results if r.outcome is Outcome.ERROR]
        assert not errors, errors
    assert (request.object, request.old_object) == before
    assert decide_everywhere(request) == decisions


def _spec_ok(obj: Any) -> bool:
    return isinstance(obj, dict) and (obj.get("spec") is None or isinstance(obj.get("spec"), dict))


def _added_keys(ops: list[dict[str, Any]]) -> set[str]:
    keys: set[str] = set()
    for op in ops:
        if op["path"] == "/spec":
            keys.update(op["value"])
        else:
            keys.add(op["path"].removeprefix("/spec/"))
    return keys


@PROPERTY
@given(requests())
def test_defaults_are_applicable_add_operations(request: EngineRequest) -> None:
    """defaults never raises and returns a list of RFC 6902 `add` operations, only for
    a CREATE of a snapshot. Whenever the object is a mapping with a mapping (or absent)
    spec, jsonpatch applies them; the result is the original with only absent (or
    null) spec fields added, every default is then filled, and defaulting the result
    again gives no patch."""
    before = copy.deepcopy(request.object)
    ops = Engine().defaults(request)
    assert request.object == before
    assert isinstance(ops, list)
    for op in ops:
        assert set(op) == {"op", "path", "value"}
        assert op["op"] == "add"
        assert op["path"] == "/spec" or op["path"].startswith("/spec/")
    snapshot = request.kind in (kinds.VIRTUAL_DISK_SNAPSHOT, kinds.VIRTUAL_MACHINE_SNAPSHOT)
    if not (snapshot and request.operation is Operation.CREATE):
        assert ops == []
        return
    if not _spec_ok(request.object):
        assert ops == []
        return
    result = jsonpatch.apply_patch(request.object, ops)
    assert request.object == before
    assert {k: v for k, v in result.items() if k != "spec"} == {
        k: v for k, v in before.items() if k != "spec"
    }
    old_spec = before.get("spec") or {}
    new_spec = result["spec"]
    for key, value in old_spec.items():
        if value is not None:
            assert new_spec[key] == value, key
    assert set(new_spec) - set(old_spec) <= _added_keys(ops)
    assert new_spec.get("requiredConsistency") is not None
    if request.kind == kinds.VIRTUAL_MACHINE_SNAPSHOT:
        assert new_spec.get("keepIPAddress") is not None
    again = EngineRequest(Operation.CREATE, request.kind, request.namespace, request.name, result)
    assert Engine().defaults(again) == []
