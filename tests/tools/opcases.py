"""Write the case folders of the operation rules (vmop Restore/Clone, vmsop) from one
base cluster and a table of variations. A convenience for authors: the folders under
tests/cases/ are the source of truth and are committed; rerun after changing the table:

    python -m tests.tools.opcases

Base cluster (namespace ns1): VM vm1 Running with a ready guest agent, disks vm1-root
(boot) and vm1-data (hot-plugged by VMBDA vm1-data-attach), VMIP vm1-ip (Static
10.66.10.5) and VMMAC vm1-mac-net1 attached to vm1, provisioning Secret vm1-cloud-init,
and a Ready snapshot snap1 of vm1 whose Secret stores all of them (the VM also refers
to ClusterVirtualImage ubuntu-24-04, which exists).
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

CASES = Path(__file__).resolve().parent.parent / "cases"
DVP = "virtualization.deckhouse.io/v1alpha2"
NS = "ns1"
Obj = dict[str, Any]


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def cond(type_: str, status: str = "True") -> Obj:
    return {"type": type_, "status": status, "reason": type_, "observedGeneration": 1}


STORED_VM: Obj = {
    "apiVersion": DVP,
    "kind": "VirtualMachine",
    "metadata": {"name": "vm1", "namespace": NS, "labels": {"app": "web"}},
    "spec": {
        "runPolicy": "AlwaysOnUnlessStoppedManually",
        "virtualMachineIPAddressName": "vm1-ip",
        "provisioning": {"type": "UserDataRef", "userDataRef": {"kind": "Secret", "name": "vm1-cloud-init"}},
        "blockDeviceRefs": [
            {"kind": "VirtualDisk", "name": "vm1-root"},
            {"kind": "ClusterVirtualImage", "name": "ubuntu-24-04"},
        ],
        "networks": [{"type": "Main"}, {"type": "Network", "name": "net1"}],
    },
    "status": {
        "phase": "Running",
        "networks": [
            {"type": "Main", "macAddress": "aa:bb:cc:00:00:00"},
            {"type": "Network", "name": "net1", "macAddress": "aa:bb:cc:00:00:01"},
        ],
    },
}
STORED_VMIP: Obj = {
    "apiVersion": DVP,
    "kind": "VirtualMachineIPAddress",
    "metadata": {"name": "vm1-ip", "namespace": NS},
    "spec": {"type": "Static", "staticIP": "10.66.10.5"},
    "status": {"address": "10.66.10.5", "phase": "Attached", "virtualMachineName": "vm1"},
}
STORED_MAC: Obj = {
    "apiVersion": DVP,
    "kind": "VirtualMachineMACAddress",
    "metadata": {"name": "vm1-mac-net1", "namespace": NS},
    "spec": {"address": "aa:bb:cc:00:00:01"},
    "status": {"address": "aa:bb:cc:00:00:01", "phase": "Attached", "virtualMachineName": "vm1"},
}
CLOUD_INIT = {"userData": base64.b64encode(b"#cloud-config\npackages: [qemu-guest-agent]\n").decode()}
STORED_SECRET: Obj = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "vm1-cloud-init", "namespace": NS},
    "type": "Opaque",
    "data": CLOUD_INIT,
}
STORED_VMBDA: Obj = {
    "apiVersion": DVP,
    "kind": "VirtualMachineBlockDeviceAttachment",
    "metadata": {"name": "vm1-data-attach", "namespace": NS},
    "spec": {"virtualMachineName": "vm1", "blockDeviceRef": {"kind": "VirtualDisk", "name": "vm1-data"}},
}


def disk(name: str, vm: str | None = "vm1") -> Obj:
    return {
        "apiVersion": DVP,
        "kind": "VirtualDisk",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {"persistentVolumeClaim": {"size": "10Gi", "storageClassName": "replicated"}},
        "status": {
            "phase": "Ready",
            "capacity": "10Gi",
            "storageClassName": "replicated",
            "target": {"persistentVolumeClaimName": f"vd-{name}"},
            "attachedToVirtualMachines": [{"name": vm, "mounted": True}] if vm else [],
            "conditions": [cond("Ready")],
        },
    }


def pvc(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"vd-{name}", "namespace": NS},
        "spec": {"storageClassName": "replicated"},
        "status": {"phase": "Bound"},
    }


def disk_snapshot(disk_name: str) -> Obj:
    return {
        "apiVersion": DVP,
        "kind": "VirtualDiskSnapshot",
        "metadata": {"name": f"{disk_name}-5d2c", "namespace": NS, "generation": 1},
        "spec": {"virtualDiskName": disk_name, "requiredConsistency": True},
        "status": {"phase": "Ready", "consistent": True, "conditions": [cond("VirtualDiskSnapshotReady")]},
    }


def empty(kind: str) -> Obj:
    return {"apiVersion": "v1", "kind": f"{kind}List", "items": []}


def base_state() -> list[Obj]:
    vm = copy.deepcopy(STORED_VM)
    vm["metadata"]["generation"] = 1
    vm["status"] = {
        "phase": "Running",
        "virtualMachineIPAddressName": "vm1-ip",
        "blockDeviceRefs": [
            {"kind": "VirtualDisk", "name": "vm1-root", "attached": True},
            {
                "kind": "VirtualDisk",
                "name": "vm1-data",
                "attached": True,
                "hotplugged": True,
                "virtualMachineBlockDeviceAttachmentName": "vm1-data-attach",
            },
            {"kind": "ClusterVirtualImage", "name": "ubuntu-24-04", "attached": True},
        ],
        "networks": STORED_VM["status"]["networks"],
        "conditions": [cond("AgentReady"), cond("BlockDevicesReady")],
    }
    vm["spec"]["networks"][1]["virtualMachineMACAddressName"] = "vm1-mac-net1"
    snapshot = {
        "apiVersion": DVP,
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": "snap1", "namespace": NS, "uid": "5d2c", "generation": 1},
        "spec": {"virtualMachineName": "vm1", "requiredConsistency": True, "keepIPAddress": "Always"},
        "status": {
            "phase": "Ready",
            "consistent": True,
            "virtualDiskSnapshotNames": ["vm1-root-5d2c", "vm1-data-5d2c"],
            "virtualMachineSnapshotSecretName": "d8v-vms-snap1-5d2c",
            "conditions": [cond("VirtualMachineSnapshotReady")],
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "d8v-vms-snap1-5d2c", "namespace": NS},
        "type": "virtualmachine.virtualization.deckhouse.io/snapshot",
        "data": {
            "vm": b64(STORED_VM),
            "vmip": b64(STORED_VMIP),
            "vmmacs": b64([STORED_MAC]),
            "provisioner": b64(STORED_SECRET),
            "vmbdas": b64([STORED_VMBDA]),
        },
    }
    vmbda = copy.deepcopy(STORED_VMBDA)
    vmbda["status"] = {"phase": "Attached", "virtualMachineName": "vm1"}
    return [
        vm,
        disk("vm1-root"),
        disk("vm1-data"),
        pvc("vm1-root"),
        pvc("vm1-data"),
        copy.deepcopy(STORED_VMIP),
        copy.deepcopy(STORED_MAC),
        vmbda,
        copy.deepcopy(STORED_SECRET),
        snapshot,
        secret,
        disk_snapshot("vm1-root"),
        disk_snapshot("vm1-data"),
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "replicated"},
            "provisioner": "replicated.csi.storage.deckhouse.io",
        },
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {
                "name": "replicated-vsc",
                "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"},
            },
            "driver": "replicated.csi.storage.deckhouse.io",
        },
        {"apiVersion": DVP, "kind": "ClusterVirtualImage", "metadata": {"name": "ubuntu-24-04"}},
        # Empty lists: the kinds are given even where a case removes their objects.
        empty("VirtualMachineOperation"),
        empty("VirtualMachineSnapshotOperation"),
        empty("VirtualImage"),
        empty("ClusterVirtualImage"),
        empty("VirtualMachineSnapshot"),
        empty("VirtualMachine"),
    ]


def restore(mode: str = "Strict", name: str = "restore1", **spec: Any) -> Obj:
    return {
        "apiVersion": DVP,
        "kind": "VirtualMachineOperation",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": "Restore", "virtualMachineName": "vm1",
                 "restore": {"mode": mode, "virtualMachineSnapshotName": "snap1"}, **spec},
    }


def clone(mode: str = "Strict", prefix: str | None = "copy-", replacements: list[Obj] | None = None) -> Obj:
    body: Obj = {"mode": mode}
    if prefix is not None:
        body["customization"] = {"namePrefix": prefix}
    if replacements:
        body["nameReplacement"] = replacements
    return {
        "apiVersion": DVP,
        "kind": "VirtualMachineOperation",
        "metadata": {"name": "clone1", "namespace": NS},
        "spec": {"type": "Clone", "virtualMachineName": "vm1", "clone": body},
    }


def legacy_restore(replacements: list[Obj] | None = None) -> Obj:
    spec: Obj = {"virtualMachineSnapshotName": "snap1"}
    if replacements:
        spec["nameReplacements"] = replacements
    return {"apiVersion": DVP, "kind": "VirtualMachineRestore", "metadata": {"name": "r1", "namespace": NS},
            "spec": spec}


def long_clone() -> Obj:
    obj = clone(prefix="a" * 59)
    obj["spec"]["clone"]["customization"]["nameSuffix"] = "-x"
    return obj


def vmsop(mode: str = "Strict", prefix: str | None = "new-", replacements: list[Obj] | None = None) -> Obj:
    body: Obj = {"mode": mode}
    if prefix is not None:
        body["customization"] = {"namePrefix": prefix}
    if replacements:
        body["nameReplacement"] = replacements
    return {
        "apiVersion": DVP,
        "kind": "VirtualMachineSnapshotOperation",
        "metadata": {"name": "create1", "namespace": NS},
        "spec": {"type": "CreateVirtualMachine", "virtualMachineSnapshotName": "snap1", "createVirtualMachine": body},
    }


State = list[Obj]
Change = Callable[[State], None]


def find(state: State, kind: str, name: str) -> Obj:
    return next(o for o in state if o.get("kind") == kind and o["metadata"]["name"] == name)


def drop(kind: str, name: str = "") -> Change:
    """Remove an object, or (a `...List` kind) the empty list that says the kind is given."""
    if kind.endswith("List"):
        return lambda state: state.remove(next(o for o in state if o.get("kind") == kind))
    return lambda state: state.remove(find(state, kind, name))


def set_path(kind: str, name: str, path: str, value: Any) -> Change:
    def change(state: State) -> None:
        target = find(state, kind, name)
        *parents, last = path.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value

    return change


def add(obj: Obj) -> Change:
    return lambda state: state.append(obj)


def other_vm(name: str = "vm2") -> Obj:
    vm = copy.deepcopy(base_state()[0])
    vm["metadata"]["name"] = name
    vm["spec"] = {"runPolicy": "AlwaysOn"}
    vm["status"] = {"phase": "Running", "conditions": [cond("AgentReady")]}
    return vm


def unfinished_vmop(name: str, phase: str = "InProgress", type_: str = "Restore") -> Obj:
    return {
        "apiVersion": DVP,
        "kind": "VirtualMachineOperation",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": type_, "virtualMachineName": "vm1"},
        "status": {"phase": phase},
    }


# rule -> case -> (description, outcome, object, changes, extra expected keys)
Case = tuple[str, str, Obj, list[Change], dict[str, Any]]
TABLE: dict[str, dict[str, Case]] = {
    "op-spec-valid": {
        "valid-restore": ("A complete Restore passes the platform's schema.", "pass", restore(), [], {}),
        "restore-without-restore-field": (
            "type Restore without spec.restore is refused with the CEL rule's message.", "fail",
            {**restore(), "spec": {"type": "Restore", "virtualMachineName": "vm1"}}, [],
            {"messages": ["Restore requires restore field."], "allowed": False}),
        "clone-without-clone-field": (
            "type Clone without spec.clone is refused.", "fail",
            {**clone(), "spec": {"type": "Clone", "virtualMachineName": "vm1"}}, [],
            {"messages": ["Clone requires clone field."]}),
        "unknown-mode": ("A mode other than DryRun, Strict or BestEffort is refused.", "fail",
                         restore(mode="Safe"), [], {"messages": ['Unsupported value: "Safe"']}),
        "clone-without-names": (
            "A clone with no prefix, suffix or nameReplacement is refused.", "fail", clone(prefix=None), [],
            {"messages": ["At least one of customization.namePrefix, customization.nameSuffix, or nameReplacement must be set"]}),
        "long-prefix": ("A namePrefix over 59 characters is refused.", "fail", clone(prefix="p" * 60), [],
                        {"messages": ["namePrefix length must be between 1 and 59 characters if set"]}),
        "long-replacement": (
            "A nameReplacement.to over 59 characters is refused.", "fail",
            vmsop(prefix=None, replacements=[{"from": {"name": "vm1"}, "to": "v" * 60}]), [],
            {"messages": ["Each nameReplacement.to must be between 1 and 59 characters"]}),
        "dry-run-still-denied": (
            "DryRun does not soften op-spec-valid: a malformed spec is refused in every mode.", "fail",
            clone(mode="DryRun", prefix=None), [], {"action": "deny", "allowed": False}),
        "vmsop-without-body": (
            "A vmsop without createVirtualMachine has nothing to do (the CRD's CEL rule misses it).", "fail",
            {**vmsop(), "spec": {"type": "CreateVirtualMachine", "virtualMachineSnapshotName": "snap1"}}, [],
            {"messages": ["requires createVirtualMachine field"]}),
    },
    "op-in-progress": {
        "nothing-running": ("No other operation for the VM: passes.", "pass", restore(), [], {}),
        "older-restore-running": (
            "An unfinished vmop for the same VM blocks a new one, named in the message.", "fail", restore(),
            [add(unfinished_vmop("restore0"))],
            {"messages": ['Previously created operation "restore0" should finish first']}),
        "start-pending-blocks-too": (
            "Any unfinished vmop of the VM blocks, a Start too (Restore neither supersedes nor is superseded).",
            "fail", clone(), [add(unfinished_vmop("start0", "Pending", "Start"))], {"messages": ['"start0"']}),
        "finished-ones-do-not-block": (
            "Completed, Failed and Superseded operations do not block.", "pass", restore(),
            [add(unfinished_vmop("a", "Completed")), add(unfinished_vmop("b", "Failed")),
             add(unfinished_vmop("c", "Superseded"))], {}),
        "vmsop-on-same-snapshot": (
            "An unfinished vmsop on the same snapshot blocks a new vmsop.", "fail", vmsop(),
            [add({**vmsop(), "metadata": {"name": "create0", "namespace": NS}, "status": {"phase": "InProgress"}})],
            {"messages": ['"create0"']}),
        "dry-run-warns": (
            "In DryRun the same finding is a warning and the operation is allowed.", "fail",
            restore(mode="DryRun"), [add(unfinished_vmop("restore0"))], {"action": "warn", "allowed": True}),
        "no-operations-in-state": (
            "A state without VirtualMachineOperations cannot say: unknown.", "unknown", restore(),
            [drop("VirtualMachineOperationList")], {"messages": ["VirtualMachineOperation"]}),
    },
    "op-vm-exists": {
        "vm-exists": ("The VM exists: passes.", "pass", restore(), [], {}),
        "vm-missing": ("No such VM: the restore would fail with VirtualMachineNotFound.", "fail",
                       {**restore(), "spec": {**restore()["spec"], "virtualMachineName": "vm9"}}, [],
                       {"messages": ["VirtualMachine not found", "VirtualMachineSnapshotOperation"]}),
    },
    "op-vm-phase": {
        "running": ("A Running VM can be restored.", "pass", restore(), [], {}),
        "migrating-restore": (
            "A Migrating VM cannot be restored.", "fail", restore(),
            [set_path("VirtualMachine", "vm1", "status.phase", "Migrating")],
            {"messages": ["Operation type Restore is not applicable for VirtualMachine in phase Migrating"]}),
        "pending-clone": (
            "Clone needs Stopped or Running: a Pending VM is refused (Restore would accept it).", "fail", clone(),
            [set_path("VirtualMachine", "vm1", "status.phase", "Pending")],
            {"messages": ["Operation type Clone is not applicable for VirtualMachine in phase Pending"]}),
        "pending-restore": (
            "Restore accepts a Pending VM.", "pass", restore(),
            [set_path("VirtualMachine", "vm1", "status.phase", "Pending")], {}),
    },
    "op-snapshot-exists": {
        "exists": ("The snapshot exists: passes.", "pass", vmsop(), [], {}),
        "missing": ("No such snapshot: refused, naming it.", "fail", vmsop(), [drop("VirtualMachineSnapshot", "snap1")],
                    {"messages": ['The VirtualMachineSnapshot "snap1" was not found']}),
    },
    "op-snapshot-ready": {
        "ready": ("A Ready snapshot with its Secret and disks passes.", "pass", restore(), [], {}),
        "in-progress": ("A snapshot still InProgress cannot be restored yet.", "fail", restore(),
                        [set_path("VirtualMachineSnapshot", "snap1", "status.phase", "InProgress")],
                        {"messages": ['"InProgress" phase']}),
        "secret-lost": ("The snapshot's Secret is gone: nothing to restore from.", "fail", vmsop(),
                        [drop("Secret", "d8v-vms-snap1-5d2c")], {"messages": ["not found"]}),
        "disk-snapshot-lost": ("A VirtualDiskSnapshot of the snapshot is gone.", "fail", restore(),
                               [drop("VirtualDiskSnapshot", "vm1-data-5d2c")], {"messages": ['"vm1-data-5d2c" not found']}),
    },
    "op-snapshot-of-vm": {
        "same-vm": ("The snapshot is of the VM restored: passes.", "pass", restore(), [], {}),
        "other-vm": ("Restoring vm2 from a snapshot of vm1 would write vm1's manifest.", "fail",
                     {**restore(), "spec": {**restore()["spec"], "virtualMachineName": "vm2"}}, [add(other_vm())],
                     {"messages": ['is of virtual machine "vm1", not of "vm2"']}),
    },
    "restore-running-vm": {
        "stopped": ("A Stopped VM is restored without a restart.", "pass", restore(),
                    [set_path("VirtualMachine", "vm1", "status.phase", "Stopped")], {}),
        "running": ("A Running VM is stopped and started again: a warning, allowed.", "fail", restore(), [],
                    {"messages": ["stops it, and starts it again"], "allowed": True, "action": "warn"}),
    },
    "restore-disk-in-use": {
        "own-disks": ("The VM's own disks are replaced by the restore: no conflict.", "pass", restore(), [], {}),
        "disk-used-by-other-vm": (
            "A disk under a restored name is attached to another VM.", "fail", restore(),
            [set_path("VirtualDisk", "vm1-data", "status.attachedToVirtualMachines", [{"name": "vm2", "mounted": True}])],
            {"messages": ['the virtual disk "vm1-data" already in use', '"vm2"']}),
        "dry-run-warns": (
            "DryRun reports the conflict as a warning.", "fail", restore(mode="DryRun"),
            [set_path("VirtualDisk", "vm1-data", "status.attachedToVirtualMachines", [{"name": "vm2", "mounted": True}])],
            {"action": "warn", "allowed": True}),
    },
    "restore-vmbda-in-use": {
        "own-attachment": ("The VM's own VMBDA is replaced: no conflict.", "pass", restore(), [], {}),
        "attachment-of-other-vm": (
            "A VMBDA under a restored name attaches to another VM.", "fail", restore(),
            [set_path("VirtualMachineBlockDeviceAttachment", "vm1-data-attach", "spec.virtualMachineName", "vm2")],
            {"messages": ['"vm1-data-attach" already in use', '"vm2"']}),
    },
    "restore-ip-conflict": {
        "own-address": ("The VM's own VMIP holds the stored IP: no conflict.", "pass", restore(), [], {}),
        "ip-taken-by-other-vm": (
            "Another VMIP, attached to another VM, holds the stored static IP.", "fail", restore(),
            [drop("VirtualMachineIPAddress", "vm1-ip"),
             add({**copy.deepcopy(STORED_VMIP), "metadata": {"name": "vm2-ip", "namespace": NS},
                  "status": {"address": "10.66.10.5", "phase": "Attached", "virtualMachineName": "vm2"}})],
            {"messages": ['the IP Address "10.66.10.5" cannot be used for the restore', "VirtualMachineIPAddress/vm2-ip"]}),
        "vmip-attached-elsewhere": (
            "The VMIP under the stored name is attached to another VM.", "fail", restore(),
            [set_path("VirtualMachineIPAddress", "vm1-ip", "status.virtualMachineName", "vm2")],
            {"messages": ['the virtual machine ip address "vm1-ip" is already in use']}),
    },
    "restore-mac-conflict": {
        "own-mac": ("The VM's own VMMAC: no conflict.", "pass", restore(), [], {}),
        "mac-attached-elsewhere": (
            "The VMMAC under the stored name is attached to another VM.", "fail", restore(),
            [set_path("VirtualMachineMACAddress", "vm1-mac-net1", "status.virtualMachineName", "vm2")],
            {"messages": ['"vm1-mac-net1" is already in use']}),
    },
    "restore-secret-mismatch": {
        "same-data": ("The provisioning Secret holds the stored data.", "pass", restore(), [], {}),
        "changed-data": ("The provisioning Secret was edited since the snapshot.", "fail", restore(),
                         [set_path("Secret", "vm1-cloud-init", "data", {"userData": "Y2hhbmdlZA=="})],
                         {"messages": ['the provisioner secret "vm1-cloud-init" the secret has different data']}),
        "best-effort-ignores": ("BestEffort keeps the existing Secret: not checked.", "pass", restore(mode="BestEffort"),
                                [set_path("Secret", "vm1-cloud-init", "data", {"userData": "Y2hhbmdlZA=="})], {}),
    },
    "restore-images-missing": {
        "image-exists": ("The stored VM's image exists.", "pass", restore(), [], {}),
        "image-gone-strict": ("The image is gone: Strict leaves the VM Pending (a warning).", "fail", restore(),
                              [drop("ClusterVirtualImage", "ubuntu-24-04")],
                              {"messages": ['ClusterVirtualImage "ubuntu-24-04"', "stay Pending"], "action": "warn"}),
        "image-gone-best-effort": ("BestEffort drops the device (still a warning).", "fail", vmsop(mode="BestEffort"),
                                   [drop("ClusterVirtualImage", "ubuntu-24-04")], {"messages": ["dropped"]}),
    },
    "clone-names": {
        "prefixed": ("A prefix gives every copy a valid, distinct name.", "pass", clone(), [], {}),
        "vm-name-too-long": (
            "The customized VM name is longer than 63 characters.", "fail", long_clone(), [],
            {"messages": ['too long (64 > 63): resource name exceeds maximum allowed length']}),
        "invalid-name": ("A prefix with upper-case letters gives invalid names.", "fail", clone(prefix="Copy-"), [],
                         {"messages": ["is not a valid name"]}),
        "two-disks-one-name": (
            "Two disks renamed to one name.", "fail",
            vmsop(prefix=None, replacements=[{"from": {"name": "vm1"}, "to": "vm2"},
                                             {"from": {"kind": "VirtualDisk", "name": "vm1-root"}, "to": "d"},
                                             {"from": {"kind": "VirtualDisk", "name": "vm1-data"}, "to": "d"}]),
            [], {"messages": ['same name "d"']}),
        "kind-not-cloned": (
            "A from.kind the clone does not create never applies.", "fail",
            clone(prefix="c-", replacements=[{"from": {"kind": "VirtualMachineIPAddress", "name": "vm1-ip"}, "to": "x"}]),
            [], {"messages": ["is not a kind a clone creates"]}),
    },
    "clone-name-conflict": {
        "free-names": ("Nothing exists under the copies' names.", "pass", vmsop(), [], {}),
        "vm-exists": ("A VM already exists under the copy's name.", "fail", clone(),
                      [add(other_vm("copy-vm1"))],
                      {"messages": ["VirtualMachine with name copy-vm1 already exists", "namePrefix"]}),
        "vmsop-without-rename-conflicts": (
            "A vmsop that keeps the original names collides with the VM itself.", "fail",
            vmsop(prefix=None, replacements=[{"from": {"kind": "VirtualMachine", "name": "vm1"}, "to": "vm1-new"}]), [],
            {"messages": ["VirtualDisk with name vm1-root already exists", "nameReplacement entry"]}),
        "dry-run-warns": ("DryRun reports the conflict as a warning.", "fail", clone(mode="DryRun"),
                          [add(other_vm("copy-vm1"))], {"action": "warn", "allowed": True}),
    },
    "clone-secret-mismatch": {
        "no-secret-under-new-name": ("No Secret under the copy's name.", "pass", vmsop(), [], {}),
        "different-secret": (
            "A Secret under the copy's name holds other data.", "fail", vmsop(),
            [add({**copy.deepcopy(STORED_SECRET), "metadata": {"name": "new-vm1-cloud-init", "namespace": NS},
                  "data": {"userData": "b3RoZXI="}})],
            {"messages": ["content of the secret new-vm1-cloud-init is different from that in the snapshot"]}),
        "best-effort-ignores": (
            "BestEffort is not checked.", "pass", vmsop(mode="BestEffort"),
            [add({**copy.deepcopy(STORED_SECRET), "metadata": {"name": "new-vm1-cloud-init", "namespace": NS},
                  "data": {"userData": "b3RoZXI="}})], {}),
    },
    "snapshot-class-field-ignored": {
        "no-class-field": ("A snapshot without class fields gets no warning.", "pass",
                           {"apiVersion": DVP, "kind": "VirtualMachineSnapshot",
                            "metadata": {"name": "s2", "namespace": NS}, "spec": {"virtualMachineName": "vm1"}}, [], {}),
        "vds-class-name": (
            "v1.10 ignores spec.volumeSnapshotClassName: a warning says so.", "fail",
            {"apiVersion": DVP, "kind": "VirtualDiskSnapshot", "metadata": {"name": "d2", "namespace": NS},
             "spec": {"virtualDiskName": "vm1-root", "volumeSnapshotClassName": "replicated-vsc"}}, [],
            {"messages": ["removed from the platform in v0.24"], "action": "warn", "allowed": True}),
        "vms-classes": (
            "v1.10 ignores spec.volumeSnapshotClasses.", "fail",
            {"apiVersion": DVP, "kind": "VirtualMachineSnapshot", "metadata": {"name": "s2", "namespace": NS},
             "spec": {"virtualMachineName": "vm1", "volumeSnapshotClasses": [
                 {"storageClassName": "replicated", "volumeSnapshotClassName": "replicated-vsc"}]}}, [],
            {"messages": ["spec.volumeSnapshotClasses was removed"]}),
    },
    "vmr-deprecated": {
        "restore-on-v1.1": ("Before v1.2 VirtualMachineRestore is the restore API: no finding.", "pass",
                            legacy_restore(), [], {"platformVersion": "1.1"}),
        "restore-on-v1.8": ("On v1.2 - v1.8 a VirtualMachineRestore is allowed with a warning naming the vmop.",
                            "fail", legacy_restore(), [],
                            {"platformVersion": "1.8", "action": "warn",
                             "messages": ["deprecated since v1.2", "VirtualMachineOperation of type Restore"]}),
        "restore-on-v1.9": ("From v1.9 the kind is not served: denied, pointing at snapguard convert.", "fail",
                            legacy_restore(), [], {"platformVersion": "1.9", "action": "deny", "allowed": False,
                                                   "messages": ["not served from v1.9", "snapguard convert"]}),
        "renaming-restore": ("A restore with nameReplacements maps to a vmsop.", "fail",
                             legacy_restore([{"from": {"name": "vm1"}, "to": "vm2"}]), [],
                             {"messages": ["VirtualMachineSnapshotOperation of type CreateVirtualMachine"]}),
    },
    "vms-consistency": {
        "clone-of-vm-without-agent": (
            "A vmop Clone first takes a consistent snapshot: without a guest agent the VM cannot be frozen.",
            "fail", clone(), [set_path("VirtualMachine", "vm1", "status.conditions", [cond("BlockDevicesReady")])],
            {"messages": ['the clone first takes a consistent snapshot of virtual machine "vm1"', "qemu-guest-agent"],
             "allowed": False}),
        "clone-dry-run-of-vm-without-agent": (
            "In DryRun the clone's snapshot findings are warnings too.", "fail", clone(mode="DryRun"),
            [set_path("VirtualMachine", "vm1", "status.conditions", [cond("BlockDevicesReady")])],
            {"action": "warn", "allowed": True}),
        "clone-of-stopped-vm": (
            "A Stopped VM needs no agent for the clone's snapshot.", "pass", clone(),
            [set_path("VirtualMachine", "vm1", "status.conditions", [cond("BlockDevicesReady")]),
             set_path("VirtualMachine", "vm1", "status.phase", "Stopped")], {}),
    },
    "vms-disk-resizing": {
        "clone-of-resizing-disk": (
            "A clone of a VM whose disk is resizing is refused under the snapshot rule's id.", "fail", clone(),
            [set_path("VirtualDisk", "vm1-data", "status.phase", "Resizing")],
            {"messages": ["the clone first takes a consistent snapshot", "resiz"]}),
    },
    "op-not-served": {
        "served-on-current": ("A vmop Restore on v1.10 is served.", "pass", restore(), [], {}),
        "vmop-on-v1.0": ("vmop Restore does not exist on v1.0.", "fail", restore(), [],
                         {"platformVersion": "1.0", "messages": ["exists from DVP v1.1"]}),
        "vmsop-on-v1.1": ("vmsop does not exist on v1.1.", "fail", vmsop(), [],
                          {"platformVersion": "1.1", "messages": ["exists from DVP v1.2"]}),
        "dry-run-on-v1.0-still-denied": ("DryRun does not make an unserved kind exist.", "fail",
                                         restore(mode="DryRun"), [],
                                         {"platformVersion": "1.0", "action": "deny", "allowed": False}),
    },
}


def write() -> None:
    for rule_id, cases in TABLE.items():
        for case_name, (description, outcome, obj, changes, extra) in cases.items():
            state = base_state()
            for change in changes:
                change(state)
            # Only the folders of this table are rewritten: a rule's other cases stay.
            folder = CASES / rule_id / case_name
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            (folder / "state.yaml").write_text(yaml.safe_dump_all(state, sort_keys=False))
            (folder / "object.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
            expected = {"description": description, "outcome": outcome, **extra}
            (folder / "expected.yaml").write_text(yaml.safe_dump(expected, sort_keys=False))


if __name__ == "__main__":
    write()
