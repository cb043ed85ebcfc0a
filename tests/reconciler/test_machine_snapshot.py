"""VirtualMachineSnapshot end to end: the Secret and its content, the child
VirtualDiskSnapshots, status.resources, the freeze, failures and deletion."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from cluster.api import KubeApi
from policies.catalogue import Action
from policies.config import PolicyConfig
from policies.engine import Engine
from policies.restore import SnapshotContent, decode_snapshot_secret
from reconciler.loop import Reconciler
from reconciler.objects import FILESYSTEM_REQUEST_ANNOTATION
from tests.kubeapi.server import KubeAPIServer

from . import objects as o
from . import scenario

pytestmark = pytest.mark.kubeapi

VMS = "virtualmachinesnapshots"
VDS = "virtualdisksnapshots"


def content_of(server: KubeAPIServer, vms: str) -> SnapshotContent:
    secret_name = o.status(server, VMS, vms)["virtualMachineSnapshotSecretName"]
    secret = server.get_object("secrets", secret_name, o.NS)
    assert secret is not None
    content = decode_snapshot_secret(secret_name, secret["data"])
    assert isinstance(content, SnapshotContent), content
    return content


def test_two_disks_secret_children_ready(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """A stopped VM with two disks: a Secret of the platform's type and name holding
    vm, vmip (Auto converted to Static: keepIPAddress Always), vmmacs, provisioner and
    vmbdas as raw JSON; one child VDS per disk, owned by the VMS; Ready and consistent
    once both children are; status.resources in the platform's order."""
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler()
    created = api.create(o.machine_snapshot("vms1"))
    uid = created["metadata"]["uid"]
    reconciler.run_until_idle()

    status = o.status(kubeapi, VMS, "vms1")
    assert status["phase"] == "InProgress"
    assert status["virtualMachineSnapshotSecretName"] == f"d8v-vms-vms1-{uid}"
    assert status["virtualDiskSnapshotNames"] == [f"d1-{uid}", f"d2-{uid}"]
    ready = o.condition_of(kubeapi, VMS, "vms1", "VirtualMachineSnapshotReady")
    assert ready["message"] == ('Waiting for the virtual disk snapshots to be taken for the block devices of the '
                                'virtual machine "vm1" (0/2).')
    secret = kubeapi.get_object("secrets", f"d8v-vms-vms1-{uid}", o.NS)
    assert secret["type"] == "virtualmachine.virtualization.deckhouse.io/snapshot"
    assert [(r["kind"], r["uid"]) for r in secret["metadata"]["ownerReferences"]] == [("VirtualMachineSnapshot", uid)]
    # v1.0+ format: the Secret's base64 wraps raw JSON.
    assert base64.b64decode(secret["data"]["vm"]).startswith(b"{")
    content = content_of(kubeapi, "vms1")
    assert content.vm["metadata"]["name"] == "vm1"
    assert content.vm["spec"]["blockDeviceRefs"] == [{"kind": "VirtualDisk", "name": "d1"}]
    assert content.vmip is not None
    assert (content.vmip["metadata"]["name"], content.vmip["spec"]) == ("vmip1", {"type": "Static", "staticIP": scenario.IP})
    assert [(m["metadata"]["name"], m["spec"]["address"]) for m in content.vmmacs] == [("mac1", scenario.MAC)]
    assert content.provisioner is not None and content.provisioner["metadata"]["name"] == "cloud-init"
    assert [a["metadata"]["name"] for a in content.vmbdas] == ["vmbda-d2"]

    for child, disk in ((f"d1-{uid}", "d1"), (f"d2-{uid}", "d2")):
        obj = kubeapi.get_object(VDS, child, o.NS)
        assert obj["spec"] == {"virtualDiskName": disk, "requiredConsistency": True}
        assert [(r["kind"], r["uid"]) for r in obj["metadata"]["ownerReferences"]] == [("VirtualMachineSnapshot", uid)]
        assert obj["status"]["phase"] == "InProgress"

    assert len(o.mark_volume_snapshots_ready(api)) == 2
    reconciler.run_until_idle()
    status = o.status(kubeapi, VMS, "vms1")
    assert status["phase"] == "Ready"
    assert status["consistent"] is True
    ready = o.condition_of(kubeapi, VMS, "vms1", "VirtualMachineSnapshotReady")
    assert (ready["status"], ready["reason"]) == ("True", "VirtualMachineSnapshotReady")
    assert [(r["kind"], r["name"]) for r in status["resources"]] == [
        ("VirtualMachine", "vm1"),
        ("VirtualMachineIPAddress", "vmip1"),
        ("VirtualMachineMACAddress", "mac1"),
        ("Secret", "cloud-init"),
        ("VirtualDisk", "d1"),
        ("VirtualMachineBlockDeviceAttachment", "vmbda-d2"),
        ("VirtualDisk", "d2"),
    ]
    assert {r["apiVersion"] for r in status["resources"]} == {"virtualization.deckhouse.io/v1alpha2", "v1"}
    assert all(o.status(kubeapi, VDS, name)["consistent"] is True for name in status["virtualDiskSnapshotNames"])


@pytest.mark.parametrize(
    ("keep", "ip_type", "in_spec", "expected"),
    [
        pytest.param("Always", "Auto", True, {"type": "Static", "staticIP": scenario.IP}, id="always-auto-converted"),
        pytest.param("Always", "Static", True, {"type": "Static", "staticIP": scenario.IP}, id="always-static-kept"),
        pytest.param("Never", "Auto", True, {"type": "Auto"}, id="never-auto-in-spec-kept"),
        pytest.param("Never", "Auto", False, None, id="never-auto-not-in-spec-not-stored"),
    ],
)
def test_keep_ip_address(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler],
    keep: str, ip_type: str, in_spec: bool, expected: dict | None,
) -> None:
    """§2.6: what the `vmip` key holds for each keepIPAddress and VMIP type."""
    o.stopped_vm_with_disks(kubeapi, "d1")
    vm = o.vm("vm1", disks=("d1",), vmip="vmip1")
    if not in_spec:
        del vm["spec"]["virtualMachineIPAddressName"]
    address = o.vmip("vmip1", address=scenario.IP, type_=ip_type)
    if ip_type == "Static":
        address["spec"]["staticIP"] = scenario.IP
    o.seed(kubeapi, address, vm)
    api.create(o.machine_snapshot("vms1", keep=keep))
    make_reconciler().run_until_idle()
    content = content_of(kubeapi, "vms1")
    assert (content.vmip["spec"] if content.vmip else None) == expected


def test_running_vm_is_frozen_by_the_snapshot_and_thawed_when_all_children_are_ready(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """The VMS freezes the VM once; the children find it frozen and do not thaw it
    (the VMS is in progress); the VMS thaws it after every child is Ready. The stored
    VM does not carry the freeze request."""
    scenario.seed_vm(kubeapi, phase="Running", agent=True)
    reconciler = make_reconciler()
    api.create(o.machine_snapshot("vms1"))
    reconciler.run_until_idle()
    vm = kubeapi.get_object("virtualmachines", "vm1", o.NS)
    assert vm["metadata"]["annotations"][FILESYSTEM_REQUEST_ANNOTATION] == "freeze"
    assert FILESYSTEM_REQUEST_ANNOTATION not in (content_of(kubeapi, "vms1").vm["metadata"].get("annotations") or {})
    o.mark_volume_snapshots_ready(api)
    reconciler.run_until_idle()
    vm = kubeapi.get_object("virtualmachines", "vm1", o.NS)
    assert vm["metadata"]["annotations"][FILESYSTEM_REQUEST_ANNOTATION] == "unfreeze"
    status = o.status(kubeapi, VMS, "vms1")
    assert (status["phase"], status["consistent"]) == ("Ready", True)


def test_failed_child_fails_the_snapshot(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler()
    uid = api.create(o.machine_snapshot("vms1"))["metadata"]["uid"]
    reconciler.run_until_idle()
    child = f"d2-{uid}"
    vs_name = o.status(kubeapi, VDS, child)["volumeSnapshotName"]
    o.fail_volume_snapshot(api, vs_name, "no space left")
    reconciler.run_until_idle()
    assert o.phase(kubeapi, VMS, "vms1") == "Failed"
    ready = o.condition_of(kubeapi, VMS, "vms1", "VirtualMachineSnapshotReady")
    assert ready["reason"] == "VirtualMachineSnapshotFailed"
    assert ready["message"] == (f'The virtual disk snapshot "{child}" is failed: cannot take snapshot. '
                                f'VolumeSnapshot "{vs_name}" has an error: no space left.')


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        pytest.param("no-vm", "WaitingForTheVirtualMachine",
                     'Cannot take a snapshot: the virtual machine "vm1" does not exist.', id="vm-missing"),
        pytest.param("vm-starting", "WaitingForTheVirtualMachine",
                     'Cannot take a snapshot: the virtual machine "vm1" is not ready.', id="vm-not-ready"),
        pytest.param("disk-provisioning", "BlockDevicesNotReady",
                     'Virtual disk not ready: waiting for the virtual disk "d2" to be Ready.', id="disk-not-ready"),
        pytest.param("running-no-agent", "PotentiallyInconsistent",
                     'Cannot take a consistent snapshot of virtual machine "vm1": virtual machine agent is not '
                     "ready and the virtual machine cannot be frozen.", id="inconsistent"),
        pytest.param("no-secret", "VirtualMachineSnapshotFailed",
                     'The virtual machine provisioning secret "cloud-init" not found.', id="secret-missing"),
        pytest.param("no-vmip", "VirtualMachineSnapshotFailed",
                     'The virtual machine ip address "vmip1" not found.', id="vmip-missing"),
    ],
)
def test_failed_preconditions(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler],
    change: str, reason: str, message: str,
) -> None:
    """The engine's vms-* rules, run again at Pending, fail the snapshot with the
    platform's reason and message; nothing is created."""
    scenario.seed_vm(kubeapi)
    if change == "no-vm":
        api.delete("VirtualMachine", o.NS, "vm1")
    elif change == "vm-starting":
        o.seed(kubeapi, {**o.vm("vm1", phase="Starting", disks=("d1",))})
    elif change == "disk-provisioning":
        o.seed(kubeapi, o.disk("d2", vm="vm1", phase="Provisioning"))
    elif change == "running-no-agent":
        vm = kubeapi.get_object("virtualmachines", "vm1", o.NS)
        vm["status"]["phase"] = "Running"
        o.seed(kubeapi, vm)
    elif change == "no-secret":
        api.delete("Secret", o.NS, "cloud-init")
    elif change == "no-vmip":
        api.delete("VirtualMachineIPAddress", o.NS, "vmip1")
    api.create(o.machine_snapshot("vms1"))
    make_reconciler().run_until_idle()
    assert o.phase(kubeapi, VMS, "vms1") == "Failed"
    ready = o.condition_of(kubeapi, VMS, "vms1", "VirtualMachineSnapshotReady")
    assert (ready["reason"], ready["message"]) == (reason, message)
    assert o.names(kubeapi, VDS) == []
    assert [s["type"] for s in kubeapi.objects("secrets", o.NS)].count(
        "virtualmachine.virtualization.deckhouse.io/snapshot") == 0


def test_deleting_the_snapshot_removes_children_secret_and_volume_snapshots(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """The Secret and the children are owned by the VMS (garbage collected); each
    child's cleanup finalizer lets the reconciler delete its VolumeSnapshot first."""
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler()
    scenario.take_snapshot(kubeapi, api, reconciler)
    assert len(o.names(kubeapi, "volumesnapshots")) == 2
    api.delete("VirtualMachineSnapshot", o.NS, "vms1")

    def cleaned() -> bool:
        reconciler.run_until_idle()
        return not o.names(kubeapi, VDS) and not o.names(kubeapi, "volumesnapshots")

    o.wait_for(cleaned, what="children and VolumeSnapshots to be deleted")
    assert [s["metadata"]["name"] for s in kubeapi.objects("secrets", o.NS)] == ["cloud-init"]


def test_snapshot_secret_content_is_json(kubeapi: KubeAPIServer, api: KubeApi,
                                         make_reconciler: Callable[..., Reconciler]) -> None:
    """Each data value is the Secret's base64 of compact JSON (the Go encoder's form)."""
    scenario.seed_vm(kubeapi)
    api.create(o.machine_snapshot("vms1"))
    make_reconciler().run_until_idle()
    name = o.status(kubeapi, VMS, "vms1")["virtualMachineSnapshotSecretName"]
    data = kubeapi.get_object("secrets", name, o.NS)["data"]
    assert sorted(data) == ["provisioner", "vm", "vmbdas", "vmip", "vmmacs"]
    for value in data.values():
        json.loads(base64.b64decode(value))


def test_pending_changes_wait_unless_the_policy_turns_the_rule_off(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """vms-pending-changes denies by default: the snapshot waits in Pending with the
    v0.14 - v1.0 reason; with the rule off in the policy, it goes on (v1.1+)."""
    o.stopped_vm_with_disks(kubeapi, "d1")
    vm = kubeapi.get_object("virtualmachines", "vm1", o.NS)
    vm["status"]["restartAwaitingChanges"] = [{"operation": "replace", "path": "cpu.cores"}]
    o.seed(kubeapi, vm)
    api.create(o.machine_snapshot("vms1"))
    # vms-pending-changes applies before v1.1 only.
    make_reconciler(engine=Engine(PolicyConfig.model_validate({"platformVersion": "1.0"}))).run_until_idle()
    ready = o.condition_of(kubeapi, VMS, "vms1", "VirtualMachineSnapshotReady")
    assert (o.phase(kubeapi, VMS, "vms1"), ready["reason"], ready["message"]) == (
        "Pending", "RestartAwaitingChanges",
        'Waiting for the restart and approval of changes to virtual machine "vm1" before taking the snapshot.')

    relaxed = Engine(PolicyConfig.model_validate(
        {"rules": {"vms-pending-changes": Action.OFF.value}, "platformVersion": "1.0"}))
    make_reconciler(engine=relaxed).run_until_idle()
    assert o.phase(kubeapi, VMS, "vms1") == "InProgress"
