"""The defaulter (SPEC 2, "Defaults"): RFC 6902 `add` operations for absent defaulted
fields of a CREATE, computed against the raw request object.

Every patch is applied with the `jsonpatch` library, the way the API server would apply
the webhook's patch, and the result is compared with the original plus exactly the
defaults: nothing else added, changed or removed (unknown fields included).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from policies import kinds
from policies.catalogue import Operation
from policies.config import load_policy
from policies.defaults import default_patch
from policies.engine import Engine, EngineRequest

API = kinds.API_VERSION
VDS = kinds.VIRTUAL_DISK_SNAPSHOT
VMS = kinds.VIRTUAL_MACHINE_SNAPSHOT
VMR = kinds.VIRTUAL_MACHINE_RESTORE
VD = kinds.VIRTUAL_DISK


def manifest(kind: str, spec: Any = None, *, with_spec: bool = True, **top: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": API,
        "kind": kind,
        "metadata": {"name": "snap1", "namespace": "ns1"},
    }
    if with_spec:
        obj["spec"] = spec
    obj.update(top)
    return obj


def create(obj: Any, kind: str | None = None, namespace: str = "ns1") -> EngineRequest:
    kind = kind or obj["kind"]
    return EngineRequest(Operation.CREATE, kind, namespace, "snap1", obj)


def patched(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """`obj` with the RFC 6902 patch applied by jsonpatch (on a copy)."""
    result: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return result


def test_vds_without_required_consistency_gets_an_add() -> None:
    """A VirtualDiskSnapshot without requiredConsistency gets exactly one add of true."""
    obj = manifest(VDS, {"virtualDiskName": "d1"})
    ops = Engine().defaults(create(obj))
    assert ops == [{"op": "add", "path": "/spec/requiredConsistency", "value": True}]
    assert patched(obj, ops)["spec"] == {"virtualDiskName": "d1", "requiredConsistency": True}


def test_vms_without_defaults_gets_both_adds() -> None:
    """A VirtualMachineSnapshot gets requiredConsistency: true and keepIPAddress: Always."""
    obj = manifest(VMS, {"virtualMachineName": "vm1"})
    ops = Engine().defaults(create(obj))
    assert all(op["op"] == "add" for op in ops)
    assert sorted(op["path"] for op in ops) == ["/spec/keepIPAddress", "/spec/requiredConsistency"]
    assert patched(obj, ops)["spec"] == {
        "virtualMachineName": "vm1",
        "requiredConsistency": True,
        "keepIPAddress": "Always",
    }


def test_vms_with_one_default_gets_only_the_other() -> None:
    """A VirtualMachineSnapshot that sets keepIPAddress gets only requiredConsistency."""
    obj = manifest(VMS, {"virtualMachineName": "vm1", "keepIPAddress": "Never"})
    ops = Engine().defaults(create(obj))
    assert ops == [{"op": "add", "path": "/spec/requiredConsistency", "value": True}]
    assert patched(obj, ops)["spec"]["keepIPAddress"] == "Never"


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        (VDS, {"virtualDiskName": "d1", "requiredConsistency": False}),
        (VDS, {"virtualDiskName": "d1", "requiredConsistency": True}),
        (VMS, {"virtualMachineName": "vm1", "requiredConsistency": False, "keepIPAddress": "Never"}),
        (VMS, {"virtualMachineName": "vm1", "requiredConsistency": True, "keepIPAddress": "Always"}),
    ],
    ids=["vds-false", "vds-true", "vms-false-never", "vms-true-always"],
)
def test_object_with_every_default_gets_an_empty_patch(kind: str, spec: dict[str, Any]) -> None:
    """Present values are never changed (false stays false) and a complete object gets
    no patch at all: an empty list, not a list of no-op replaces."""
    obj = manifest(kind, spec)
    assert Engine().defaults(create(obj)) == []
    assert default_patch(kind, obj) == []


def test_present_false_is_never_overwritten() -> None:
    """requiredConsistency: false survives the defaulter on a VirtualMachineSnapshot that
    lacks the other default."""
    obj = manifest(VMS, {"virtualMachineName": "vm1", "requiredConsistency": False})
    ops = Engine().defaults(create(obj))
    assert ops == [{"op": "add", "path": "/spec/keepIPAddress", "value": "Always"}]
    assert patched(obj, ops)["spec"]["requiredConsistency"] is False


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (VDS, {"requiredConsistency": True}),
        (VMS, {"requiredConsistency": True, "keepIPAddress": "Always"}),
    ],
)
def test_absent_spec_gets_one_add_of_spec(kind: str, expected: dict[str, Any]) -> None:
    """Without a spec the patch is a single add of /spec holding every default (an add
    below a missing /spec would fail to apply)."""
    obj = manifest(kind, with_spec=False)
    ops = Engine().defaults(create(obj))
    assert ops == [{"op": "add", "path": "/spec", "value": expected}]
    assert patched(obj, ops) == {**obj, "spec": expected}


def test_explicit_null_counts_as_absent() -> None:
    """A null the API server would prune is defaulted, and the add replaces the null."""
    obj = manifest(VMS, {"virtualMachineName": "vm1", "requiredConsistency": None})
    ops = Engine().defaults(create(obj))
    result = patched(obj, ops)
    assert result["spec"]["requiredConsistency"] is True
    assert result["spec"]["keepIPAddress"] == "Always"


def test_unknown_fields_are_never_removed() -> None:
    """Fields the models do not know (newer CRD fields, annotations, status, a field at
    the top level) are kept: the patched object is the original plus exactly the
    defaults, never a re-serialised model."""
    obj = manifest(
        VMS,
        {
            "virtualMachineName": "vm1",
            "futureField": {"nested": [1, {"deep": None}], "flag": False},
            "volumeSnapshotClasses": [{"storageClassName": "sc", "volumeSnapshotClassName": "vsc"}],
        },
        status={"phase": "Pending", "somethingNew": "x"},
        extraTopLevel=["kept"],
    )
    obj["metadata"]["annotations"] = {"example.com/keep": "yes"}
    obj["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update"}]
    ops = Engine().defaults(create(obj))
    assert all(op["op"] == "add" for op in ops)
    expected = copy.deepcopy(obj)
    expected["spec"]["requiredConsistency"] = True
    expected["spec"]["keepIPAddress"] = "Always"
    assert patched(obj, ops) == expected


def test_defaulter_does_not_mutate_the_request() -> None:
    """The defaulter only describes the change; the request object is left as it came."""
    for obj in (
        manifest(VMS, {"virtualMachineName": "vm1"}),
        manifest(VMS, with_spec=False),
        manifest(VDS, {"virtualDiskName": "d1", "requiredConsistency": None}),
    ):
        before = copy.deepcopy(obj)
        Engine().defaults(create(obj))
        assert obj == before


def test_update_gets_no_defaults() -> None:
    """Defaults are for CREATE only: an UPDATE never gets a patch (it would be a spec
    change of an idempotent resource)."""
    obj = manifest(VMS, {"virtualMachineName": "vm1"})
    request = EngineRequest(Operation.UPDATE, VMS, "ns1", "snap1", obj, copy.deepcopy(obj))
    assert Engine().defaults(request) == []


@pytest.mark.parametrize("operation", [Operation.DELETE, Operation.CONNECT])
def test_other_operations_get_no_defaults(operation: Operation) -> None:
    """DELETE and CONNECT are never patched."""
    obj = manifest(VDS, {"virtualDiskName": "d1"})
    assert Engine().defaults(EngineRequest(operation, VDS, "ns1", "snap1", obj)) == []


def test_restore_gets_no_defaults() -> None:
    """A VirtualMachineRestore has no webhook defaults (restoreMode is the CRD's)."""
    obj = manifest(VMR, {"virtualMachineSnapshotName": "vmsnap1"})
    assert Engine().defaults(create(obj)) == []
    assert Engine().defaults(create(manifest(VMR, with_spec=False))) == []


def test_virtual_disk_gets_no_defaults() -> None:
    """A VirtualDisk, even one created from a snapshot, gets no defaults."""
    obj = manifest(
        VD,
        {"dataSource": {"type": "ObjectRef", "objectRef": {"kind": VDS, "name": "snap1"}}},
    )
    assert Engine().defaults(create(obj)) == []
    assert Engine().defaults(create(manifest(VD, with_spec=False))) == []


def test_exempt_namespace_gets_no_defaults() -> None:
    """An exempt namespace is not mutated either."""
    engine = Engine(load_policy({"exemptNamespaces": ["kube-system"]}, "policy.yaml"))
    obj = manifest(VDS, {"virtualDiskName": "d1"})
    assert engine.defaults(create(obj, namespace="kube-system")) == []
    assert engine.defaults(create(obj, namespace="ns1")) != []


@pytest.mark.parametrize("raw", [None, [], "spec", 3, {"kind": VDS, "spec": ["not", "a", "map"]}])
def test_non_objects_and_non_object_specs_get_no_patch(raw: Any) -> None:
    """What is not an object with an object spec is the API server's to reject: the
    defaulter returns no patch rather than one that cannot apply."""
    assert default_patch(VDS, raw) == []


def test_default_values_are_not_shared_between_patches() -> None:
    """Each patch carries its own value objects: mutating one patch's /spec value does
    not change the next patch (the DEFAULTS table is not aliased)."""
    first = default_patch(VMS, manifest(VMS, with_spec=False))
    first[0]["value"]["keepIPAddress"] = "Never"
    second = default_patch(VMS, manifest(VMS, with_spec=False))
    assert second[0]["value"]["keepIPAddress"] == "Always"
