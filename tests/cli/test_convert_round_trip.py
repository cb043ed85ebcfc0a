"""Round trips through `snapguard convert`: a VirtualMachineRestore that v1.8 admits
becomes a vmop/vmsop that v1.10 admits too, on the same cluster (the operation rules
decide the converted output, not just its shape)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from snapguard.cli import main
from tests.tools import opcases


def legacy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": opcases.DVP,
        "kind": "VirtualMachineRestore",
        "metadata": {"name": "r1", "namespace": opcases.NS},
        "spec": {"virtualMachineSnapshotName": "snap1", **spec},
    }


def vm_deleted(state: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The base cluster after vm1 and everything of it was deleted (the snapshot stays)."""
    gone = {
        ("VirtualMachine", "vm1"),
        ("VirtualDisk", "vm1-root"),
        ("VirtualDisk", "vm1-data"),
        ("VirtualMachineIPAddress", "vm1-ip"),
        ("VirtualMachineMACAddress", "vm1-mac-net1"),
        ("VirtualMachineBlockDeviceAttachment", "vm1-data-attach"),
        ("Secret", "vm1-cloud-init"),
    }
    kept = [o for o in state if (o.get("kind"), (o.get("metadata") or {}).get("name")) not in gone]
    kept += [opcases.empty(kind) for kind in ("VirtualDisk", "VirtualMachineIPAddress", "VirtualMachineMACAddress",
                                               "VirtualMachineBlockDeviceAttachment", "Secret")]
    return kept


def decide(capsys: pytest.CaptureFixture[str], state: Path, manifest: Path, version: str) -> dict[str, Any]:
    main(["check", "-o", "json", "--platform-version", version, "--state", str(state), str(manifest)])
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    (result,) = document["results"]
    return result


CASES = {
    "forced-over-the-vm": (legacy(restoreMode="Forced"), lambda s: s, "VirtualMachineOperation"),
    "safe-after-the-vm-was-deleted": (legacy(), vm_deleted, "VirtualMachineSnapshotOperation"),
    "safe-renamed-after-the-vm-was-deleted": (
        legacy(nameReplacements=[{"from": {"kind": "VirtualMachine", "name": "vm1"}, "to": "vm1-back"}]),
        vm_deleted,
        "VirtualMachineSnapshotOperation",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_admitted_before_admitted_after(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Admitted on v1.8 as a VirtualMachineRestore, admitted on v1.10 as what convert makes of it."""
    restore, cluster, expected_kind = CASES[name]
    state = tmp_path / "state.yaml"
    state.write_text(yaml.safe_dump_all(cluster(opcases.base_state()), sort_keys=False))
    original = tmp_path / "restore.yaml"
    original.write_text(yaml.safe_dump(restore))
    before = decide(capsys, state, original, "1.8")
    assert before["allowed"], before["violations"]

    assert main(["convert", "--state", str(state), str(original)]) == 0
    converted = tmp_path / "converted.yaml"
    converted.write_text(capsys.readouterr().out)
    (document,) = [d for d in yaml.safe_load_all(converted.read_text()) if d]
    assert document["kind"] == expected_kind
    after = decide(capsys, state, converted, "1.10")
    assert after["allowed"], after["violations"]
    assert after["kind"] == expected_kind


def test_denied_before_is_denied_after(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A restore whose snapshot is gone stays refused once converted."""
    state = tmp_path / "state.yaml"
    cluster = [o for o in opcases.base_state() if o.get("kind") != "VirtualMachineSnapshot"]
    state.write_text(yaml.safe_dump_all(vm_deleted(cluster)))
    original = tmp_path / "restore.yaml"
    original.write_text(yaml.safe_dump(legacy(nameReplacements=[{"from": {"name": "vm1"}, "to": "vm2"}])))
    assert not decide(capsys, state, original, "1.8")["allowed"]
    assert main(["convert", "--state", str(state), str(original)]) == 0
    converted = tmp_path / "converted.yaml"
    converted.write_text(capsys.readouterr().out)
    after = decide(capsys, state, converted, "1.10")
    assert not after["allowed"] and {v["rule"] for v in after["violations"]} == {"op-snapshot-exists"}
