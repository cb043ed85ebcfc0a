"""The restore plan (`policies.restore`): decoding the snapshot Secret in both of the
platform's encodings, the name replacement algorithm, and the objects a restore
creates."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from policies import kinds
from policies.models import NameReplacement, VirtualDiskSnapshot
from policies.restore import (
    DiskMetadata,
    RestorePlan,
    SnapshotContent,
    SnapshotContentError,
    apply_name_replacements,
    build_restored_objects,
    decode_snapshot_secret,
    original_disk_metadata,
    plan_restore,
    secret_data_bytes,
)

API = "virtualization.deckhouse.io/v1alpha2"
UID = "7e1a-restore1"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def raw_json(value: Any) -> str:
    """A data value as platforms since v1.0 write it: JSON under the Secret's base64."""
    return b64(json.dumps(value))


def double_base64(value: Any) -> str:
    """A data value as platforms before v1.0 wrote it: base64 of the JSON, then the
    Secret's own base64."""
    return b64(b64(json.dumps(value)))


def replacements(*entries: tuple[str | None, str, str]) -> list[NameReplacement]:
    result = []
    for kind, name, to in entries:
        source: dict[str, str] = {"name": name}
        if kind is not None:
            source["kind"] = kind
        result.append(NameReplacement.model_validate({"from": source, "to": to}))
    return result


def stored_vm() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "VirtualMachine",
        "metadata": {
            "name": "vm1",
            "namespace": "old-ns",
            "uid": "vm-uid",
            "resourceVersion": "4711",
            "labels": {"app": "web"},
            "annotations": {"team": "blue"},
            "ownerReferences": [{"kind": "Something", "name": "x", "uid": "y"}],
        },
        "spec": {
            "runPolicy": "AlwaysOnUnlessStoppedManually",
            "virtualMachineIPAddressName": "stale-ip-name",
            "provisioning": {"type": "UserDataRef", "userDataRef": {"kind": "Secret", "name": "vm1-cloud-init"}},
            "blockDeviceRefs": [
                {"kind": "VirtualDisk", "name": "vm1-root"},
                {"kind": "ClusterVirtualImage", "name": "vm1-root"},
            ],
            "networks": [{"type": "Main"}, {"type": "Network", "name": "net1"}],
        },
        "status": {
            "phase": "Running",
            "networks": [
                {"type": "Main", "macAddress": "aa:bb:cc:00:00:00"},
                {"type": "Network", "name": "net1", "macAddress": "AA:BB:CC:00:00:01"},
            ],
        },
    }


def stored_content() -> dict[str, Any]:
    return {
        "vm": stored_vm(),
        "vmip": {
            "kind": "VirtualMachineIPAddress",
            "metadata": {"name": "vm1-ip", "namespace": "old-ns", "uid": "ip-uid"},
            "spec": {"type": "Static", "staticIP": "10.66.10.5"},
            "status": {"address": "10.66.10.5", "phase": "Attached", "virtualMachineName": "vm1"},
        },
        "vmmacs": [
            {
                "kind": "VirtualMachineMACAddress",
                "metadata": {"name": "vm1-mac-net1"},
                "spec": {"address": "aa:bb:cc:00:00:01"},
                "status": {"address": "aa:bb:cc:00:00:01"},
            }
        ],
        "provisioner": {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vm1-cloud-init", "uid": "s-uid", "labels": {"l": "1"}},
            "type": "Opaque",
            "data": {"userData": b64("#cloud-config\n")},
        },
        "vmbdas": [
            {
                "kind": "VirtualMachineBlockDeviceAttachment",
                "metadata": {"name": "vm1-data-attach"},
                "spec": {"virtualMachineName": "vm1", "blockDeviceRef": {"kind": "VirtualDisk", "name": "vm1-data"}},
                "status": {"phase": "Attached"},
            }
        ],
    }


def decoded(values: dict[str, Any] | None = None) -> SnapshotContent:
    content = decode_snapshot_secret("snap1", {k: raw_json(v) for k, v in (values or stored_content()).items()})
    assert isinstance(content, SnapshotContent), content
    return content


def disk_snapshot(name: str, disk: str) -> VirtualDiskSnapshot:
    return VirtualDiskSnapshot.model_validate(
        {"kind": "VirtualDiskSnapshot", "metadata": {"name": name, "namespace": "ns1"}, "spec": {"virtualDiskName": disk}}
    )


DISK_SNAPSHOTS = {
    "vm1-root-5d2c": disk_snapshot("vm1-root-5d2c", "vm1-root"),
    "vm1-data-5d2c": disk_snapshot("vm1-data-5d2c", "vm1-data"),
}


def plan(entries: list[NameReplacement] | None = None, content: SnapshotContent | None = None) -> RestorePlan:
    return plan_restore(
        "ns1", entries or [], content or decoded(), ["vm1-root-5d2c", "vm1-data-5d2c"], DISK_SNAPSHOTS
    )


# --- the snapshot Secret -----------------------------------------------------------


class TestDecodeSnapshotSecret:
    def test_raw_json_values(self) -> None:
        """Platforms since v1.0 store raw JSON under the Secret's base64."""
        content = decoded()
        assert content.vm["metadata"]["name"] == "vm1"
        assert content.vmip is not None and content.vmip["spec"]["staticIP"] == "10.66.10.5"
        assert [m["metadata"]["name"] for m in content.vmmacs] == ["vm1-mac-net1"]
        assert content.provisioner is not None and content.provisioner["kind"] == "Secret"
        assert [b["metadata"]["name"] for b in content.vmbdas] == ["vm1-data-attach"]

    def test_double_base64_values(self) -> None:
        """Platforms before v1.0 base64-encoded the JSON once more; both decode alike."""
        values = stored_content()
        content = decode_snapshot_secret("snap1", {k: double_base64(v) for k, v in values.items()})
        assert content == decoded(values)

    def test_mixed_encodings_and_leading_space(self) -> None:
        """Each value is judged by itself; JSON may start after white space."""
        values = stored_content()
        data = {"vm": b64("\n  " + json.dumps(values["vm"])), "vmbdas": double_base64(values["vmbdas"])}
        content = decode_snapshot_secret("snap1", data)
        assert isinstance(content, SnapshotContent)
        assert content.vmip is None and content.vmmacs == () and content.provisioner is None
        assert len(content.vmbdas) == 1

    def test_garbage_is_an_error_value_naming_secret_and_key(self) -> None:
        """A value that is neither JSON nor base64 of JSON is an error value, not a crash."""
        error = decode_snapshot_secret("snap1", {"vm": b64("this is not json")})
        assert isinstance(error, SnapshotContentError)
        assert (error.secret, error.key) == ("snap1", "vm")
        assert '"vm"' in error.message and '"snap1"' in error.message

    def test_unpadded_inner_base64_is_rejected(self) -> None:
        """The inner base64 must be strict and padded, as Go's StdEncoding writes it."""
        inner = b64(json.dumps(stored_vm()))
        assert inner.endswith("=")
        error = decode_snapshot_secret("snap1", {"vm": b64(inner.rstrip("="))})
        assert isinstance(error, SnapshotContentError) and error.key == "vm"

    def test_inner_base64_with_foreign_characters_is_rejected(self) -> None:
        error = decode_snapshot_secret("snap1", {"vm": b64("e30=!")})
        assert isinstance(error, SnapshotContentError)

    def test_base64_of_something_else_is_rejected(self) -> None:
        """Strict base64 that does not hold JSON is still an error."""
        error = decode_snapshot_secret("snap1", {"vm": b64(b64("plain text"))})
        assert isinstance(error, SnapshotContentError) and "not valid JSON" in error.message

    def test_outer_value_not_base64(self) -> None:
        """A data value must itself be base64 (that is what a Secret's data is)."""
        error = decode_snapshot_secret("snap1", {"vm": "{not base64}"})
        assert isinstance(error, SnapshotContentError) and "base64" in error.message

    def test_invalid_utf8_is_an_error(self) -> None:
        error = decode_snapshot_secret("snap1", {"vm": b64(b"{\xff\xfe}")})
        assert isinstance(error, SnapshotContentError)

    def test_missing_vm(self) -> None:
        error = decode_snapshot_secret("snap1", {"vmip": raw_json(stored_content()["vmip"])})
        assert isinstance(error, SnapshotContentError) and error.key == "vm"

    @pytest.mark.parametrize(
        ("key", "value", "fragment"),
        [
            ("vm", ["not", "an", "object"], "array, not an object"),
            ("vmip", "a string", "string, not an object"),
            ("vmmacs", {"metadata": {"name": "x"}}, "object, not an array"),
            ("vmbdas", [{"metadata": {}}], "item 0 an object without metadata.name"),
            ("provisioner", {"kind": "Secret"}, "without metadata.name"),
        ],
    )
    def test_wrong_shapes(self, key: str, value: Any, fragment: str) -> None:
        """A key holding the wrong JSON type, or an object without a name, is reported."""
        data = {k: raw_json(v) for k, v in stored_content().items()}
        # Only objects and arrays can be told apart as raw JSON; anything else is the
        # pre-v1.0 base64 form.
        data[key] = raw_json(value) if isinstance(value, (dict, list)) else double_base64(value)
        error = decode_snapshot_secret("snap1", data)
        assert isinstance(error, SnapshotContentError) and error.key == key
        assert fragment in error.message

    def test_null_arrays_are_empty(self) -> None:
        """Go's encoder writes a nil slice as null (seen in the base64 form, since a raw
        `null` does not start with `{` or `[`); an empty value is no value."""
        data = {"vm": raw_json(stored_vm()), "vmmacs": double_base64(None), "vmbdas": b64("")}
        content = decode_snapshot_secret("snap1", data)
        assert isinstance(content, SnapshotContent) and content.vmmacs == () and content.vmbdas == ()


def test_secret_data_bytes_compares_content() -> None:
    """Secrets compare by decoded bytes; a value that is not base64 compares as text."""
    assert secret_data_bytes({"a": b64("x")}) == {"a": b"x"}
    assert secret_data_bytes({"a": "not base64!"}) == {"a": b"not base64!"}
    assert secret_data_bytes(None) == {}


# --- name replacements -------------------------------------------------------------


class TestApplyNameReplacements:
    def test_no_rule_keeps_the_name(self) -> None:
        assert apply_name_replacements([], kinds.VIRTUAL_DISK, "d1") == "d1"
        entries = replacements((None, "other", "x"))
        assert apply_name_replacements(entries, kinds.VIRTUAL_DISK, "d1") == "d1"

    def test_empty_kind_matches_any_kind(self) -> None:
        entries = replacements((None, "vm1", "copy"))
        for kind in (kinds.VIRTUAL_MACHINE, kinds.VIRTUAL_DISK, kinds.SECRET):
            assert apply_name_replacements(entries, kind, "vm1") == "copy"

    def test_kind_must_match_when_given(self) -> None:
        entries = replacements((kinds.VIRTUAL_DISK, "vm1", "copy"))
        assert apply_name_replacements(entries, kinds.VIRTUAL_MACHINE, "vm1") == "vm1"
        assert apply_name_replacements(entries, kinds.VIRTUAL_DISK, "vm1") == "copy"

    def test_first_applicable_rule_wins_in_order(self) -> None:
        """Rules are scanned in order; a non-applicable earlier rule is skipped."""
        entries = replacements(
            (kinds.SECRET, "vm1", "secret-copy"),
            (None, "vm1", "first"),
            (kinds.VIRTUAL_MACHINE, "vm1", "second"),
        )
        assert apply_name_replacements(entries, kinds.VIRTUAL_MACHINE, "vm1") == "first"
        assert apply_name_replacements(entries, kinds.SECRET, "vm1") == "secret-copy"

    def test_no_chaining(self) -> None:
        """A replaced name is not replaced again by a later rule."""
        entries = replacements((None, "a", "b"), (None, "b", "c"))
        assert apply_name_replacements(entries, kinds.VIRTUAL_DISK, "a") == "b"

    def test_empty_name_is_never_renamed(self) -> None:
        entries = [NameReplacement.model_validate({"from": {"name": ""}, "to": "x"})]
        assert apply_name_replacements(entries, kinds.VIRTUAL_DISK, "") == ""


# --- the plan ----------------------------------------------------------------------


class TestPlan:
    def test_objects_in_platform_order_with_disks_from_their_snapshots(self) -> None:
        """VMIP, VMMACs, VM, disks (named after the VDS's virtualDiskName), VMBDAs, Secret."""
        objects = [(o.kind, o.original_name, o.restored_name, o.disk_snapshot) for o in plan().objects]
        assert objects == [
            (kinds.VIRTUAL_MACHINE_IP_ADDRESS, "vm1-ip", "vm1-ip", ""),
            (kinds.VIRTUAL_MACHINE_MAC_ADDRESS, "vm1-mac-net1", "vm1-mac-net1", ""),
            (kinds.VIRTUAL_MACHINE, "vm1", "vm1", ""),
            (kinds.VIRTUAL_DISK, "vm1-root", "vm1-root", "vm1-root-5d2c"),
            (kinds.VIRTUAL_DISK, "vm1-data", "vm1-data", "vm1-data-5d2c"),
            (kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT, "vm1-data-attach", "vm1-data-attach", ""),
            (kinds.SECRET, "vm1-cloud-init", "vm1-cloud-init", ""),
        ]

    def test_stored_objects_are_kept_and_disks_have_none(self) -> None:
        restore_plan = plan()
        assert restore_plan.vm.stored is not None and restore_plan.vm.stored["kind"] == "VirtualMachine"
        assert all(o.stored is None for o in restore_plan.of_kind(kinds.VIRTUAL_DISK))

    def test_renamed_objects_record_their_entry(self) -> None:
        restore_plan = plan(replacements((kinds.VIRTUAL_DISK, "vm1-data", "d2"), (None, "vm1", "vm2")))
        data = restore_plan.of_kind(kinds.VIRTUAL_DISK)[1]
        assert (data.restored_name, data.replacement, data.renamed) == ("d2", 0, True)
        assert (restore_plan.vm.restored_name, restore_plan.vm.replacement) == ("vm2", 1)
        assert restore_plan.vmip is not None and restore_plan.vmip.replacement is None

    def test_missing_disk_snapshot_yields_no_disk(self) -> None:
        restore_plan = plan_restore(
            "ns1", [], decoded(), ["vm1-root-5d2c", "gone"], {"vm1-root-5d2c": DISK_SNAPSHOTS["vm1-root-5d2c"]}
        )
        assert [o.original_name for o in restore_plan.of_kind(kinds.VIRTUAL_DISK)] == ["vm1-root"]
        assert restore_plan.missing_disk_snapshots == ("gone",)

    def test_optional_objects_absent(self) -> None:
        restore_plan = plan(content=decoded({"vm": stored_vm()}))
        assert restore_plan.vmip is None and restore_plan.provisioning_secret is None
        assert [o.kind for o in restore_plan.objects] == [kinds.VIRTUAL_MACHINE, kinds.VIRTUAL_DISK, kinds.VIRTUAL_DISK]


# --- the objects to create ---------------------------------------------------------


def built(restore_plan: RestorePlan, uid: str = UID, **kwargs: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in build_restored_objects(restore_plan, uid, **kwargs)}


class TestBuildRestoredObjects:
    def test_vm_keeps_only_name_namespace_labels_annotations_spec(self) -> None:
        """The VM is created in the restore's namespace with the restore annotation."""
        vm = built(plan())[(kinds.VIRTUAL_MACHINE, "vm1")]
        assert set(vm) == {"apiVersion", "kind", "metadata", "spec"}
        assert vm["metadata"] == {
            "name": "vm1",
            "namespace": "ns1",
            "labels": {"app": "web"},
            "annotations": {"team": "blue", kinds.RESTORE_ANNOTATION: UID},
        }

    def test_vm_references_follow_the_renames(self) -> None:
        """VMIP name (set from the stored VMIP), userDataRef and VirtualDisk refs are
        renamed; a ClusterVirtualImage ref of the same name is not; labels are cleared."""
        entries = replacements(
            (kinds.VIRTUAL_MACHINE, "vm1", "vm2"),
            (None, "vm1-ip", "vm2-ip"),
            (kinds.SECRET, "vm1-cloud-init", "vm2-cloud-init"),
            (kinds.VIRTUAL_DISK, "vm1-root", "vm2-root"),
        )
        vm = built(plan(entries))[(kinds.VIRTUAL_MACHINE, "vm2")]
        spec = vm["spec"]
        assert spec["virtualMachineIPAddressName"] == "vm2-ip"
        assert spec["provisioning"]["userDataRef"] == {"kind": "Secret", "name": "vm2-cloud-init"}
        assert spec["blockDeviceRefs"] == [
            {"kind": "VirtualDisk", "name": "vm2-root"},
            {"kind": "ClusterVirtualImage", "name": "vm1-root"},
        ]
        assert "labels" not in vm["metadata"]
        assert vm["metadata"]["annotations"][kinds.RESTORE_ANNOTATION] == UID

    def test_sysprep_ref_is_not_renamed(self) -> None:
        vm_json = stored_vm()
        vm_json["spec"]["provisioning"] = {"type": "SysprepRef", "sysprepRef": {"kind": "Secret", "name": "sp"}}
        entries = replacements((kinds.SECRET, "sp", "sp2"))
        vm = built(plan(entries, decoded({"vm": vm_json})))[(kinds.VIRTUAL_MACHINE, "vm1")]
        assert vm["spec"]["provisioning"]["sysprepRef"]["name"] == "sp"

    def test_mac_address_objects_are_linked_by_position_and_address(self) -> None:
        """A non-Main network refers to the stored VMMAC holding its MAC (any case)."""
        vm = built(plan())[(kinds.VIRTUAL_MACHINE, "vm1")]
        assert vm["spec"]["networks"] == [
            {"type": "Main"},
            {"type": "Network", "name": "net1", "virtualMachineMACAddressName": "vm1-mac-net1"},
        ]

    def test_disks_are_created_from_their_snapshots(self) -> None:
        """A restored disk points at its original VirtualDiskSnapshot, even when renamed,
        and gets the original disk's metadata when given."""
        entries = replacements((kinds.VIRTUAL_DISK, "vm1-root", "vm2-root"))
        metadata = {"vm1-root-5d2c": DiskMetadata({"tier": "gold"}, {kinds.RESTORE_ANNOTATION: "old", "a": "b"})}
        disk = built(plan(entries), disk_metadata=metadata)[(kinds.VIRTUAL_DISK, "vm2-root")]
        assert disk == {
            "apiVersion": API,
            "kind": "VirtualDisk",
            "metadata": {
                "name": "vm2-root",
                "namespace": "ns1",
                "labels": {"tier": "gold"},
                "annotations": {kinds.RESTORE_ANNOTATION: UID, "a": "b"},
            },
            "spec": {
                "dataSource": {
                    "type": "ObjectRef",
                    "objectRef": {"kind": "VirtualDiskSnapshot", "name": "vm1-root-5d2c"},
                }
            },
        }

    def test_attachment_references_follow_the_renames(self) -> None:
        entries = replacements((None, "vm1", "vm2"), (kinds.VIRTUAL_DISK, "vm1-data", "vm2-data"))
        attachment = built(plan(entries))[(kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT, "vm1-data-attach")]
        assert attachment["spec"] == {
            "virtualMachineName": "vm2",
            "blockDeviceRef": {"kind": "VirtualDisk", "name": "vm2-data"},
        }
        assert "status" not in attachment

    def test_addresses_and_secret_keep_their_stored_content(self) -> None:
        objects = built(plan(replacements((kinds.SECRET, "vm1-cloud-init", "s2"))))
        vmip = objects[(kinds.VIRTUAL_MACHINE_IP_ADDRESS, "vm1-ip")]
        assert vmip["spec"] == {"type": "Static", "staticIP": "10.66.10.5"}
        assert vmip["metadata"]["namespace"] == "ns1" and "uid" not in vmip["metadata"]
        secret = objects[(kinds.SECRET, "s2")]
        assert secret["apiVersion"] == "v1" and secret["type"] == "Opaque"
        assert secret["data"] == {"userData": b64("#cloud-config\n")}
        assert secret["metadata"]["labels"] == {"l": "1"}

    def test_empty_uid_sets_no_annotation(self) -> None:
        objects = build_restored_objects(plan(), "")
        assert all(kinds.RESTORE_ANNOTATION not in o["metadata"].get("annotations", {}) for o in objects)

    def test_plan_is_not_changed(self) -> None:
        restore_plan = plan(replacements((None, "vm1", "vm2"), (None, "vm1-root", "vm2-root")))
        before = copy.deepcopy([o.stored for o in restore_plan.objects])
        objects = build_restored_objects(restore_plan, UID)
        objects[2]["spec"]["runPolicy"] = "AlwaysOff"
        assert [o.stored for o in restore_plan.objects] == before


def test_original_disk_metadata() -> None:
    """The VolumeSnapshot annotations of v1.0+ give the original disk's metadata;
    missing or broken ones give none."""
    metadata = original_disk_metadata(
        {
            "virtualization.deckhouse.io/vd-original-labels": json.dumps({"tier": "gold"}),
            "virtualization.deckhouse.io/vd-original-annotations": "{broken",
        }
    )
    assert metadata == DiskMetadata({"tier": "gold"}, {})
