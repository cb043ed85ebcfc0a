"""VirtualMachineRestore end to end: from a snapshot the reconciler took, the restored
objects (names replaced, the restore annotation), conflicts found at reconcile time,
a snapshot that is not ready, and Forced mode."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cluster.api import KubeApi
from reconciler.loop import Reconciler
from tests.kubeapi.server import KubeAPIServer

from . import objects as o
from . import scenario

pytestmark = pytest.mark.kubeapi

VMR = "virtualmachinerestores"
ANNOTATION = "virtualization.deckhouse.io/vmrestore"


def test_restore_with_name_replacements(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """After the VM was deleted, a restore under new names creates the VMIP (the
    stored static address), the VMMAC, the VM (refs renamed, labels cleared), both
    disks from their VirtualDiskSnapshots (original labels back), the VMBDA and the
    cloud-init Secret, each annotated with the restore's uid; InProgress, then Ready."""
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler()
    vms = scenario.take_snapshot(kubeapi, api, reconciler)
    vms_uid = vms["metadata"]["uid"]
    scenario.delete_original_vm(kubeapi, api)
    restore = api.create(o.restore("r1", "vms1", replacements=scenario.RENAMES))
    uid = restore["metadata"]["uid"]
    key = ("VirtualMachineRestore", o.NS, "r1")

    reconciler.process(key)
    assert o.phase(kubeapi, VMR, "r1") == "Pending"
    reconciler.process(key)
    assert o.phase(kubeapi, VMR, "r1") == "InProgress"
    in_progress = o.condition_of(kubeapi, VMR, "r1", "VirtualMachineRestoreReady")
    assert in_progress["message"] == 'The virtual machine "vm1" is in the process of restore.'
    reconciler.run_until_idle()
    assert o.phase(kubeapi, VMR, "r1") == "Ready"
    ready = o.condition_of(kubeapi, VMR, "r1", "VirtualMachineRestoreReady")
    assert (ready["status"], ready["reason"]) == ("True", "VirtualMachineRestoreReady")
    assert o.condition_of(kubeapi, VMR, "r1", "VirtualMachineSnapshotReadyToUse")["status"] == "True"

    assert scenario.restored_state(kubeapi) == scenario.RESTORED
    for resource, names in scenario.RESTORED.items():
        for name in names:
            annotations = kubeapi.get_object(resource, name, o.NS)["metadata"]["annotations"]
            assert annotations[ANNOTATION] == uid

    vm = kubeapi.get_object("virtualmachines", "vm1-restored", o.NS)
    assert "labels" not in vm["metadata"]  # renamed: labels are not cloned
    assert vm["spec"]["virtualMachineIPAddressName"] == "vmip1-restored"
    assert vm["spec"]["blockDeviceRefs"] == [{"kind": "VirtualDisk", "name": "d1-restored"}]
    assert vm["spec"]["provisioning"]["userDataRef"]["name"] == "cloud-init-restored"
    assert vm["spec"]["networks"][1]["virtualMachineMACAddressName"] == "mac1"
    vmip = kubeapi.get_object("virtualmachineipaddresses", "vmip1-restored", o.NS)
    assert vmip["spec"] == {"type": "Static", "staticIP": scenario.IP}
    for disk, source in (("d1-restored", "d1"), ("d2-restored", "d2")):
        restored = kubeapi.get_object("virtualdisks", disk, o.NS)
        assert restored["spec"]["dataSource"] == {
            "type": "ObjectRef", "objectRef": {"kind": "VirtualDiskSnapshot", "name": f"{source}-{vms_uid}"}}
        assert restored["metadata"]["labels"] == {"disk": source}
    attachment = kubeapi.get_object("virtualmachineblockdeviceattachments", "vmbda-d2-restored", o.NS)
    assert attachment["spec"] == {"virtualMachineName": "vm1-restored",
                                  "blockDeviceRef": {"kind": "VirtualDisk", "name": "d2-restored"}}
    secret = kubeapi.get_object("secrets", "cloud-init-restored", o.NS)
    assert secret["data"] == o.secret("cloud-init")["data"]
    # The originals' disks are untouched.
    assert {"d1", "d2"} <= set(o.names(kubeapi, "virtualdisks"))


def test_restore_that_conflicts_now_fails_with_the_rule_message(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """The VM still exists: the engine's vmr-name-conflict rule, run right before
    acting, fails the restore with VirtualMachineRestoreConflict and its message;
    nothing is created."""
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler()
    scenario.take_snapshot(kubeapi, api, reconciler)
    api.create(o.restore("r1", "vms1"))
    reconciler.run_until_idle()
    assert o.phase(kubeapi, VMR, "r1") == "Failed"
    ready = o.condition_of(kubeapi, VMR, "r1", "VirtualMachineRestoreReady")
    assert ready["reason"] == "VirtualMachineRestoreConflict"
    assert ready["message"].startswith('The virtual machine "vm1" already exists in namespace "ns1"; delete it first')
    assert scenario.restored_state(kubeapi) == {resource: [] for resource in scenario.RESTORED}


def test_address_taken_by_another_vmip_is_a_conflict(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """Renamed objects, but the original VMIP still holds the stored static IP."""
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler()
    scenario.take_snapshot(kubeapi, api, reconciler)
    api.create(o.restore("r1", "vms1", replacements=scenario.RENAMES))
    reconciler.run_until_idle()
    ready = o.condition_of(kubeapi, VMR, "r1", "VirtualMachineRestoreReady")
    assert (o.phase(kubeapi, VMR, "r1"), ready["reason"]) == ("Failed", "VirtualMachineRestoreConflict")
    assert ready["message"].startswith(
        f'The set address "{scenario.IP}" is already in use by the different virtual machine ip address "vmip1"')


def test_restore_waits_in_pending_for_the_snapshot(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """No snapshot yet: Pending with VirtualMachineSnapshotReadyToUse False; once the
    snapshot exists and is Ready, the restore goes on."""
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler()
    api.create(o.restore("r1", "vms1", replacements=scenario.RENAMES))
    reconciler.run_until_idle()
    assert o.phase(kubeapi, VMR, "r1") == "Pending"
    to_use = o.condition_of(kubeapi, VMR, "r1", "VirtualMachineSnapshotReadyToUse")
    assert (to_use["status"], to_use["reason"], to_use["message"]) == (
        "False", "VirtualMachineSnapshotNotFound", 'The virtual machine snapshot "vms1" not found.')
    ready = o.condition_of(kubeapi, VMR, "r1", "VirtualMachineRestoreReady")
    assert (ready["reason"], ready["message"]) == (
        "VirtualMachineSnapshotNotReadyToUse", 'Waiting for the virtual machine snapshot "vms1" to be ready to use.')

    api.create(o.machine_snapshot("vms1"))
    reconciler.run_until_idle()
    to_use = o.condition_of(kubeapi, VMR, "r1", "VirtualMachineSnapshotReadyToUse")
    assert (o.phase(kubeapi, VMR, "r1"), to_use["reason"], to_use["message"]) == (
        "Pending", "VirtualMachineSnapshotNotReady", 'Waiting for the virtual machine snapshot "vms1" to be ready for use.')

    o.mark_volume_snapshots_ready(api)
    reconciler.run_until_idle()
    # The snapshot is Ready, but the original VM holds the names and the address.
    assert o.phase(kubeapi, VMR, "r1") == "Failed"
    api.delete("VirtualMachineRestore", o.NS, "r1")
    scenario.delete_original_vm(kubeapi, api)
    api.create(o.restore("r2", "vms1", replacements=scenario.RENAMES))
    reconciler.run_until_idle()
    assert o.phase(kubeapi, VMR, "r2") == "Ready"
    assert scenario.restored_state(kubeapi) == scenario.RESTORED


def test_forced_mode_is_refused(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler()
    scenario.take_snapshot(kubeapi, api, reconciler)
    api.create(o.restore("r1", "vms1", mode="Forced"))
    reconciler.run_until_idle()
    ready = o.condition_of(kubeapi, VMR, "r1", "VirtualMachineRestoreReady")
    assert (o.phase(kubeapi, VMR, "r1"), ready["reason"]) == ("Failed", "VirtualMachineRestoreFailed")
    assert "`Safe` mode only" in ready["message"]
    assert kubeapi.get_object("virtualmachines", "vm1", o.NS)["metadata"].get("annotations") is None


def test_existing_identical_secret_and_unattached_vmip_are_reused(
    kubeapi: KubeAPIServer, api: KubeApi, make_reconciler: Callable[..., Reconciler]
) -> None:
    """VMR-12/VMR-13: an existing Secret with the same data and an unattached VMIP under
    the restored names are reused as they are (they get no annotation)."""
    scenario.seed_vm(kubeapi)
    reconciler = make_reconciler()
    scenario.take_snapshot(kubeapi, api, reconciler)
    scenario.delete_original_vm(kubeapi, api)
    o.seed(kubeapi, o.vmip("vmip1-restored", address=scenario.IP, vm=None), o.secret("cloud-init-restored"))
    api.create(o.restore("r1", "vms1", replacements=scenario.RENAMES))
    reconciler.run_until_idle()
    assert o.phase(kubeapi, VMR, "r1") == "Ready"
    state = scenario.restored_state(kubeapi)
    assert state["secrets"] == [] and state["virtualmachineipaddresses"] == []
    assert state["virtualmachines"] == ["vm1-restored"]
