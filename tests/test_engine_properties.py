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


VIEWS = {
    "realistic": realistic_view,
    "given-but-empty": lambda: InMemoryView(given_kinds=list(kinds.KINDS)),
    "empty": InMemoryView,
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
names = st.one_of(st.sampled_from(NAMES_IN_STATE), st.just(""), st.text(max_size=20))


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A spec field: mostly a valid value, sometimes a value of the wrong type."""
    return st.one_of(valid, valid, junk)


def maybe_dict(
    required: dict[str, st.SearchStrategy[Any]] | None = None,
    optional: dict[str, st.SearchStrategy[Any]] | None = None,
) -> st.SearchStrategy[Any]:
    """A dict with any subset of the optional keys, plus unknown extra keys, or junk."""
    base = st.fixed_dictionaries(required or {}, optional=optional or {})
    extra = st.dictionaries(st.text(max_size=6), junk, max_size=2)
    combined = st.builds(lambda known, unknown: {**unknown, **known}, base, extra)
    return st.one_of(base, base, combined, junk)


quantities = st.one_of(
    st.sampled_from(["10Gi", "10737418240", "11G", "10G", "5Gi", "1Ti", "0", "-1Gi", "1e3", "1.5Gi", "garbage", "", "1e999999"]),
    st.integers(min_value=-(2**64), max_value=2**64),
)
conditions = st.lists(
    maybe_dict(
        optional={
            "type": st.sampled_from(["Ready", "Resizing", "AgentReady", "VirtualDiskSnapshotReady"]),
            "status": st.sampled_from(["True", "False", "Unknown"]),
            "observedGeneration": st.integers(min_value=0, max_value=3),
            "reason": st.text(max_size=8),
        }
    ),
    max_size=3,
)
metadata = maybe_dict(
    optional={
        "name": names,
        "namespace": st.sampled_from(["ns1", "ns2", "", "default"]),
        "generation": field(st.integers(min_value=0, max_value=3)),
        "uid": st.uuids().map(str),
        "labels": field(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2)),
        "annotations": field(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2)),
        "deletionTimestamp": st.just("2026-11-27T00:00:00Z"),
        "finalizers": field(st.lists(st.text(max_size=8), max_size=2)),
        "ownerReferences": field(st.lists(maybe_dict(optional={"kind": st.text(max_size=8), "name": names}), max_size=2)),
    }
)
status = maybe_dict(optional={"phase": st.sampled_from(["Ready", "Pending", "InProgress", "Failed", ""]), "conditions": conditions})

SPECS: dict[str, st.SearchStrategy[Any]] = {
    kinds.VIRTUAL_DISK_SNAPSHOT: maybe_dict(
        optional={
            "virtualDiskName": field(names),
            "requiredConsistency": field(st.booleans()),
            "volumeSnapshotClassName": field(st.sampled_from(["replicated-vsc", "missing-vsc", ""])),
        }
    ),
    kinds.VIRTUAL_MACHINE_SNAPSHOT: maybe_dict(
        optional={
            "virtualMachineName": field(names),
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
        optional={
            "virtualMachineSnapshotName": field(names),
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
        optional={
            "dataSource": maybe_dict(
                optional={
                    "type": field(st.sampled_from(["ObjectRef", "HTTP", "ContainerImage", "Upload"])),
                    "objectRef": maybe_dict(
                        optional={
                            "kind": field(st.sampled_from(["VirtualDiskSnapshot", "VirtualImage", "ClusterVirtualImage"])),
                            "name": field(names),
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
    """A raw object of `kind`: every top-level key may be missing or of a wrong type,
    and now and then the object is not a mapping at all."""
    if draw(st.integers(min_value=0, max_value=19)) == 0:
        return draw(junk)
    obj = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "apiVersion": field(st.just(API)),
                "kind": st.one_of(st.just(kind), st.just(kind), st.sampled_from(GOVERNED), junk),
                "metadata": metadata,
                "spec": SPECS[kind],
                "status": status,
            },
        )
    )
    return obj


@st.composite
def requests(draw: st.DrawFn) -> EngineRequest:
    kind = draw(st.sampled_from(GOVERNED))
    operation = draw(st.sampled_from([Operation.CREATE, Operation.UPDATE, Operation.UPDATE, Operation.DELETE]))
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
        namespace=draw(st.sampled_from(["ns1", "ns2", "", "default"]) | st.text(max_size=10)),
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
    return [engine.decide(request, make_view()) for make_view in VIEWS.values()]


@PROPERTY
@given(requests())
def test_decide_never_raises(request: EngineRequest) -> None:
    """Whatever the object, old object and operation, decide returns a Decision whose
    reported rule ids come from the catalogue (or are object-invalid), against a
    realistic view, a view given every kind but holding none, and an empty view."""
    for decision in decide_everywhere(request):
        check_decision(decision)


@PROPERTY
@given(requests())
def test_decide_is_deterministic(request: EngineRequest) -> None:
    """The same request against the same view gets the same decision, and deciding does
    not modify the request's objects."""
    before = (copy.deepcopy(request.object), copy.deepcopy(request.old_object))
    first = Engine().decide(request, realistic_view())
    second = Engine().decide(request, realistic_view())
    assert first == second
    assert (request.object, request.old_object) == before


@PROPERTY
@given(requests())
def test_rules_never_crash_on_shaped_objects(request: EngineRequest) -> None:
    """A rule that raises is reported as an `error` outcome (a bug in a rule): no rule
    of the catalogue raises on any object that passed the model's validation."""
    for decision in decide_everywhere(request):
        errors = [r for r in decision.results if r.outcome is Outcome.ERROR]
        assert not errors, [(r.rule, r.message) for r in errors]


def _spec_ok(obj: Any) -> bool:
    return isinstance(obj, dict) and (obj.get("spec") is None or isinstance(obj.get("spec"), dict))


@PROPERTY
@given(requests())
def test_defaults_are_applicable_add_operations(request: EngineRequest) -> None:
    """defaults returns a list of RFC 6902 `add` operations; whenever the object is a
    mapping with a mapping (or absent) spec, jsonpatch applies them, and the result is
    the original with only absent (or null) spec fields added."""
    ops = Engine().defaults(request)
    assert isinstance(ops, list)
    for op in ops:
        assert set(op) == {"op", "path", "value"}
        assert op["op"] == "add"
        assert op["path"] == "/spec" or op["path"].startswith("/spec/")
    if not ops:
        return
    assert request.operation is Operation.CREATE
    assert _spec_ok(request.object)
    original = copy.deepcopy(request.object)
    result = jsonpatch.apply_patch(request.object, ops)
    assert request.object == original
    assert {k: v for k, v in result.items() if k != "spec"} == {k: v for k, v in original.items() if k != "spec"}
    old_spec = original.get("spec") or {}
    new_spec = result["spec"]
    for key, value in old_spec.items():
        if value is not None:
            assert new_spec[key] == value, key
    assert set(new_spec) - set(old_spec) <= {op["path"].removeprefix("/spec/") for op in ops} | {
        key for op in ops if op["path"] == "/spec" for key in op["value"]
    }


@PROPERTY
@given(st.sampled_from(GOVERNED), st.data())
def test_defaults_apply_to_every_create(kind: str, data: st.DataObject) -> None:
    """For a CREATE of a mapping with a mapping or absent spec, the patch always
    applies (never an `add` below a missing parent) and fills every default."""
    obj = data.draw(objects(kind))
    if not _spec_ok(obj):
        return
    request = EngineRequest(Operation.CREATE, kind, "ns1", "x", obj)
    ops = Engine().defaults(request)
    result = jsonpatch.apply_patch(obj, ops)
    if kind == kinds.VIRTUAL_DISK_SNAPSHOT:
        assert result["spec"]["requiredConsistency"] is not None
    elif kind == kinds.VIRTUAL_MACHINE_SNAPSHOT:
        assert result["spec"]["requiredConsistency"] is not None
        assert result["spec"]["keepIPAddress"] is not None
    else:
        assert ops == []
    # Defaulting is idempotent: the patched object needs no further patch.
    assert Engine().defaults(EngineRequest(Operation.CREATE, kind, "ns1", "x", result)) == []
