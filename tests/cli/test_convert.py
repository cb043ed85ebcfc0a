"""`snapguard convert`: VirtualMachineRestore manifests in, their VirtualMachineOperation
/ VirtualMachineSnapshotOperation replacements out, through the real entry point.

Every converted document is validated against the platform's v1.10 CRDs, copied into
`tests/cli/convert/crds/`: the structural schema (types, required fields, enums,
minLength, no field the API server would prune) and every CEL rule of the schema, each
written out here as a Python check (a CEL rule this file does not know fails the test).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.models import VirtualMachineOperation, VirtualMachineSnapshotOperation, parse_object
from snapguard.cli import main

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent / "convert"
STATE = HERE / "state.yaml"
MANIFESTS = HERE / "manifests"
CRDS = HERE / "crds"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["convert", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def documents(out: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(out) if d is not None]


def comment_blocks(out: str) -> list[str]:
    """The `#` lines above each document, joined per document."""
    blocks = []
    for part in out.split("---\n")[1:]:
        lines = [line[2:] for line in part.splitlines() if line.startswith("#")]
        blocks.append(" ".join(lines))
    return blocks


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- the v1.10 CRDs --------------------------------------------------------------------


def _between(value: Any, low: int = 1, high: int = 59) -> bool:
    return isinstance(value, str) and low <= len(value) <= high


def _customized(clone: dict[str, Any]) -> bool:
    customization = clone.get("customization") or {}
    return bool(customization.get("namePrefix") or customization.get("nameSuffix") or clone.get("nameReplacement"))


# The CEL rules of the two CRDs, by message, as Python; evaluated on CREATE (oldSelf
# is the object itself).
CEL: dict[str, Callable[[Any], bool]] = {
    ".spec is immutable": lambda spec: True,
    "The `Start` operation cannot be performed forcibly.": lambda s: s["type"] != "Start" or not s.get("force"),
    "Restore requires restore field.": lambda s: s["type"] != "Restore" or "restore" in s,
    "Clone requires clone field.": lambda s: s["type"] != "Clone" or "clone" in s,
    "spec.migrate can only be set when spec.type is 'Migrate'": lambda s: "migrate" not in s or s["type"] == "Migrate",
    "CreateVirtualMachineName requires clone field.": lambda s: s["type"] != "CreateVirtualMachineName"
    or "createVirtualMachine" in s,
    "At least one of customization.namePrefix, customization.nameSuffix, or nameReplacement must be set": _customized,
    "Each nameReplacement.to must be between 1 and 59 characters": lambda items: all(
        _between(item.get("to")) for item in items
    ),
    "namePrefix length must be between 1 and 59 characters if set": lambda c: "namePrefix" not in c
    or _between(c["namePrefix"]),
    "nameSuffix length must be between 1 and 59 characters if set": lambda c: "nameSuffix" not in c
    or _between(c["nameSuffix"]),
}

TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
}


def schema_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """What the API server's structural validation and CEL would refuse (or prune)."""
    errors: list[str] = []
    kind = schema.get("type")
    if kind and not isinstance(value, TYPES[kind]):
        return [f"{path}: not a {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']}")
    if kind == "object" and "properties" in schema:
        properties = schema["properties"]
        errors += [f"{path}.{key}: required" for key in schema.get("required", []) if key not in value]
        errors += [f"{path}.{key}: unknown field (pruned)" for key in value if key not in properties]
        for key, child in value.items():
            if key in properties:
                errors += schema_errors(properties[key], child, f"{path}.{key}")
    if kind == "array":
        for index, item in enumerate(value):
            errors += schema_errors(schema["items"], item, f"{path}[{index}]")
    for rule in schema.get("x-kubernetes-validations", []):
        message = " ".join(rule["message"].split())
        check = CEL.get(message)
        if check is None:
            errors.append(f"{path}: CEL rule this test does not know: {message}")
        elif not check(value):
            errors.append(f"{path}: {message}")
    return errors


def _crd_schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / name).read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    # status is the controller's; a manifest to create carries none.
    return {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "status"}}


SCHEMAS = {
    "VirtualMachineOperation": _crd_schema("virtualmachineoperations.yaml"),
    "VirtualMachineSnapshotOperation": _crd_schema("virtualmachinesnapshotoperations.yaml"),
}


def assert_valid(obj: dict[str, Any], mode: str = "Strict") -> None:
    """A converted object is what the v1.10 API server accepts, and the engine reads it."""
    assert obj["apiVersion"] == "virtualization.deckhouse.io/v1alpha2"
    assert obj["metadata"]["name"]
    assert schema_errors(SCHEMAS[obj["kind"]], obj) == []
    model = parse_object(obj)
    assert isinstance(model, VirtualMachineOperation | VirtualMachineSnapshotOperation)
    assert model.mode == mode
    if isinstance(model, VirtualMachineSnapshotOperation):
        assert model.spec.type == "CreateVirtualMachine"
        assert model.spec.create_virtual_machine is not None
    else:
        assert model.spec.type == "Restore" and model.snapshot_name


def test_the_validator_refuses_what_the_platform_refuses() -> None:
    """The CRD check above can fail: each of these breaks one schema or CEL rule."""
    vmsop: dict[str, Any] = {
        "apiVersion": "virtualization.deckhouse.io/v1alpha2",
        "kind": "VirtualMachineSnapshotOperation",
        "metadata": {"name": "x"},
        "spec": {
            "type": "CreateVirtualMachine",
            "virtualMachineSnapshotName": "s",
            "createVirtualMachine": {"mode": "Strict", "nameReplacement": [{"from": {"name": "a"}, "to": "b"}]},
        },
    }
    assert schema_errors(SCHEMAS["VirtualMachineSnapshotOperation"], vmsop) == []
    broken = [
        {"nameReplacement": []},
        {"nameReplacement": [{"from": {"name": "a"}, "to": "b" * 60}]},
        {"nameReplacement": [{"from": {"name": ""}, "to": "b"}]},
        {"nameReplacements": [{"from": {"name": "a"}, "to": "b"}]},
        {"mode": "Safe"},
        {"customization": {"namePrefix": ""}},
    ]
    for change in broken:
        spec = {**vmsop["spec"], "createVirtualMachine": {**vmsop["spec"]["createVirtualMachine"], **change}}
        if "nameReplacements" in change:
            spec["createVirtualMachine"].pop("nameReplacement")
        assert schema_errors(SCHEMAS["VirtualMachineSnapshotOperation"], {**vmsop, "spec": spec}), change
    vmop = {
        "apiVersion": "virtualization.deckhouse.io/v1alpha2",
        "kind": "VirtualMachineOperation",
        "metadata": {"name": "x"},
        "spec": {"type": "Restore", "virtualMachineName": "vm"},
    }
    assert schema_errors(SCHEMAS["VirtualMachineOperation"], vmop) == [".spec: Restore requires restore field."]


# --- the fixture: one restore of each shape --------------------------------------------


@pytest.fixture
def converted(capsys: pytest.CaptureFixture[str]) -> tuple[list[dict[str, Any]], list[str], str]:
    code, out, err = run(capsys, "--state", str(STATE), str(MANIFESTS))
    assert code == 0, err
    return documents(out), comment_blocks(out), err


def test_every_document_in_input_order(converted: tuple[list[dict[str, Any]], list[str], str]) -> None:
    objects, _, _ = converted
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("VirtualMachineOperation", "restore-forced"),
        ("VirtualMachineSnapshotOperation", "restore-copy"),
        ("ConfigMap", "unrelated"),
        ("VirtualMachineOperation", "restore-in-place"),
        ("VirtualMachineSnapshotOperation", "restore-gone"),
    ]
    for obj in objects:
        if obj["kind"] != "ConfigMap":
            assert_valid(obj)


def test_forced_becomes_vmop_restore(converted: tuple[list[dict[str, Any]], list[str], str]) -> None:
    objects, comments, _ = converted
    assert objects[0] == {
        "apiVersion": "virtualization.deckhouse.io/v1alpha2",
        "kind": "VirtualMachineOperation",
        # labels and annotations kept; uid, resourceVersion, creationTimestamp,
        # managedFields, status and kubectl's last-applied copy of the restore are not.
        "metadata": {"name": "restore-forced", "namespace": "ns1", "labels": {"team": "db"}, "annotations": {"note": "nightly"}},
        "spec": {
            "type": "Restore",
            "virtualMachineName": "vm1",
            "restore": {"mode": "Strict", "virtualMachineSnapshotName": "snap-vm1"},
        },
    }
    assert "restoreMode Forced" in comments[0]
    assert "01-forced.yaml#0" in comments[0]


def test_safe_with_replacements_becomes_vmsop_with_the_same_entries(
    converted: tuple[list[dict[str, Any]], list[str], str],
) -> None:
    objects, comments, err = converted
    spec = objects[1]["spec"]
    assert spec["type"] == "CreateVirtualMachine"
    assert spec["virtualMachineSnapshotName"] == "snap-vm1"
    assert spec["createVirtualMachine"] == {
        "mode": "Strict",
        # singular field name; the entries the new API can express, in their order
        "nameReplacement": [
            {"from": {"kind": "VirtualMachine", "name": "vm1"}, "to": "vm1-copy"},
            {"from": {"name": "vm1-root"}, "to": "vm1-copy-root"},
        ],
    }
    # the two entries without an equivalent are said above the document and on stderr
    assert 'nameReplacements[2] (VirtualMachineIPAddress "vm1-ip" -> "vm1-copy-ip") dropped' in comments[1]
    assert "nameReplacements[3]" in comments[1] and "at most 59 characters (this one has 62)" in comments[1]
    assert "new IP and MAC addresses" in comments[1]
    warnings = [line for line in err.splitlines() if "restore-copy" in line]
    assert len(warnings) == 2 and all(line.startswith("snapguard: warning: ") for line in warnings)


def test_safe_over_an_existing_vm_becomes_vmop_restore(converted: tuple[list[dict[str, Any]], list[str], str]) -> None:
    objects, comments, err = converted
    assert objects[3]["kind"] == "VirtualMachineOperation"
    assert objects[3]["spec"]["virtualMachineName"] == "vm1"
    assert "overwrites the VM in place" in comments[3]
    assert "overwrites the VM in place" in err


def test_safe_without_the_vm_becomes_vmsop_keeping_its_name(
    converted: tuple[list[dict[str, Any]], list[str], str],
) -> None:
    objects, comments, _ = converted
    # the platform needs a non-empty prefix, suffix or nameReplacement: the VM to itself
    assert objects[4]["spec"]["createVirtualMachine"] == {
        "mode": "Strict",
        "nameReplacement": [{"from": {"kind": "VirtualMachine", "name": "gone"}, "to": "gone"}],
    }
    assert 'VirtualMachine "gone" does not exist' in comments[4]


def test_passed_through_documents_are_unchanged(converted: tuple[list[dict[str, Any]], list[str], str]) -> None:
    objects, comments, _ = converted
    assert objects[2] == yaml.safe_load((MANIFESTS / "03-configmap.yaml").read_text())
    assert comments[2] == ""


def test_json_output_is_a_list_of_the_same_objects(
    capsys: pytest.CaptureFixture[str], converted: tuple[list[dict[str, Any]], list[str], str]
) -> None:
    objects, _, _ = converted
    code, out, err = run(capsys, "--state", str(STATE), "--output", "json", str(MANIFESTS))
    assert code == 0
    listing = json.loads(out)
    assert listing["kind"] == "List" and listing["items"] == objects
    # no comments in JSON: every note goes to stderr
    assert "snapguard: note: VirtualMachineRestore ns1/restore-forced" in err


def test_the_worked_example_in_the_docs_is_the_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/convert.md shows the command's stdout and stderr on the fixture; regenerate
    them from `snapguard convert --state tests/cli/convert/state.yaml tests/cli/convert/manifests/`."""
    text = (ROOT / "docs" / "convert.md").read_text()
    shown = {name: re.search(rf"<!-- {name} -->\n```\w+\n(.*?)```", text, re.S) for name in ("stdout", "stderr")}
    monkeypatch.chdir(ROOT)
    code, out, err = run(capsys, "--state", "tests/cli/convert/state.yaml", "tests/cli/convert/manifests/")
    assert code == 0
    assert shown["stdout"] is not None and shown["stdout"].group(1) == out
    assert shown["stderr"] is not None and shown["stderr"].group(1) == err


# --- deciding without a state ----------------------------------------------------------


SAFE = """\
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachineRestore
metadata: {name: r1, namespace: ns1}
spec: {virtualMachineSnapshotName: snap-vm1}
"""

SNAPSHOT = """\
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachineSnapshot
metadata: {name: snap-vm1, namespace: ns1}
spec: {virtualMachineName: vm1}
"""


def convert_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: str, *args: str
) -> tuple[dict[str, Any], str, str, Path]:
    """SAFE with its flow spec after `virtualMachineSnapshotName: ` replaced by `spec`,
    converted (by default with the fixture state): the one object, stdout, stderr and
    the file."""
    path = write(tmp_path / "r.yaml", SAFE.replace("snap-vm1}", spec + "}"))
    code, out, err = run(capsys, *(args or ("--state", str(STATE))), str(path))
    assert code == 0, err
    (obj,) = documents(out)
    assert_valid(obj)
    return obj, out, err, path


def test_safe_with_replacements_needs_no_state(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(MANIFESTS / "02-safe-rename.yaml"))
    assert code == 0
    (obj,) = documents(out)
    assert obj["kind"] == "VirtualMachineSnapshotOperation"
    assert_valid(obj)


@pytest.mark.parametrize("manifest", ["01-forced.yaml", "04-safe-existing.yaml"])
def test_without_the_snapshot_the_vm_is_unknown(capsys: pytest.CaptureFixture[str], manifest: str) -> None:
    path = str(MANIFESTS / manifest)
    code, out, err = run(capsys, path)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith(f"snapguard: error: {path}#0: VirtualMachineRestore ")
    assert 'pass --state with the VirtualMachineSnapshot "ns1/snap-vm1"' in err


def test_a_state_without_the_snapshot_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", SAFE.replace("snap-vm1", "snap-other"))
    code, _, err = run(capsys, "--state", str(STATE), str(path))
    assert code == 2
    assert err == (
        f'snapguard: error: {path}#0: VirtualMachineRestore "r1": cannot tell which VM the snapshot is of '
        "(a VirtualMachineRestore does not name it, its replacement must): the state has no "
        'VirtualMachineSnapshot "ns1/snap-other": add it to --state\n'
    )


def test_a_snapshot_in_the_input_names_the_vm(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """No state: the snapshot before the restore tells the VM; whether it exists is not
    known, so the restore is assumed to be in place, and the comment says so."""
    path = write(tmp_path / "all.yaml", f"{SNAPSHOT}---\n{SAFE}")
    code, out, err = run(capsys, str(path))
    assert code == 0
    snapshot, operation = documents(out)
    assert snapshot == yaml.safe_load(SNAPSHOT)
    assert operation["spec"]["virtualMachineName"] == "vm1"
    assert_valid(operation)
    assert 'assumes VirtualMachine "vm1" exists' in comment_blocks(out)[1]
    assert "--state with the VirtualMachines decides it" in err


def test_a_vm_in_the_input_counts_as_existing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    vm = "apiVersion: virtualization.deckhouse.io/v1alpha2\nkind: VirtualMachine\nmetadata: {name: vm1, namespace: ns1}\n"
    path = write(tmp_path / "all.yaml", f"{SNAPSHOT}---\n{vm}---\n{SAFE}")
    code, out, _ = run(capsys, str(path))
    assert code == 0
    assert documents(out)[2]["kind"] == "VirtualMachineOperation"
    assert "overwrites the VM in place" in comment_blocks(out)[2]
    # an empty VirtualMachineList says there are no VMs: the VM is created anew
    path = write(tmp_path / "all.yaml", f"{SNAPSHOT}---\nkind: VirtualMachineList\napiVersion: v1\nitems: []\n---\n{SAFE}")
    code, out, _ = run(capsys, str(path))
    assert code == 0
    assert documents(out)[2]["kind"] == "VirtualMachineSnapshotOperation"
    assert_valid(documents(out)[2])


def test_the_vm_of_a_snapshot_without_virtual_machine_name_comes_from_its_secret(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    obj, _, _, _ = convert_one(capsys, tmp_path, "snap-legacy")
    # VM "legacy" is not in the state (which holds VMs): created anew under its name
    assert obj["spec"]["createVirtualMachine"]["nameReplacement"] == [
        {"from": {"kind": "VirtualMachine", "name": "legacy"}, "to": "legacy"}
    ]


def test_forced_over_a_missing_vm_warns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    obj, _, err, _ = convert_one(capsys, tmp_path, "snap-gone, restoreMode: Forced")
    assert obj["kind"] == "VirtualMachineOperation" and obj["spec"]["virtualMachineName"] == "gone"
    assert 'VirtualMachine "gone" does not exist in the state: the operation will fail' in err


def test_forced_with_replacements_says_they_are_dropped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = "snap-vm1, restoreMode: Forced, nameReplacements: [{from: {name: d1}, to: d2}]"
    obj, _, err, _ = convert_one(capsys, tmp_path, spec)
    assert obj["kind"] == "VirtualMachineOperation"
    assert 'nameReplacements dropped ("d1" -> "d2"): a VirtualMachineOperation Restore renames nothing' in err


def test_replacements_without_any_equivalent(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Nothing is left for the CEL rule: with the snapshot's VM known, it is mapped to
    its own name; without, the restore cannot be converted."""
    spec = "snap-gone, nameReplacements: [{from: {kind: VirtualMachineMACAddress, name: m}, to: m2}]"
    obj, _, _, path = convert_one(capsys, tmp_path, spec)
    assert obj["spec"]["createVirtualMachine"]["nameReplacement"] == [
        {"from": {"kind": "VirtualMachine", "name": "gone"}, "to": "gone"}
    ]
    code, out, err = run(capsys, str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f'snapguard: error: {path}#0: VirtualMachineRestore "r1": no nameReplacements entry')
    assert err.count("\n") == 1


def test_replacements_that_keep_an_existing_vm_name_warn(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = "snap-vm1, nameReplacements: [{from: {kind: VirtualDisk, name: d1}, to: d2}]"
    _, _, err, _ = convert_one(capsys, tmp_path, spec)
    assert 'VirtualMachine "vm1" exists and no entry renames it: the platform will refuse' in err


def test_duplicate_and_empty_kind_entries(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = 'snap-vm1, nameReplacements: [{from: {kind: "", name: vm1}, to: a}, {from: {name: vm1}, to: b}]'
    obj, out, err, _ = convert_one(capsys, tmp_path, spec, "--output", "yaml")
    # an empty kind matches any kind, as an absent one; the second entry never applied
    assert obj["spec"]["createVirtualMachine"]["nameReplacement"] == [{"from": {"name": "vm1"}, "to": "a"}]
    assert "an earlier entry has the same from" in comment_blocks(out)[0]
    assert "warning" not in err  # dropping a dead entry changes nothing


@pytest.mark.parametrize("mode", ["DryRun", "BestEffort"])
def test_mode(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    code, out, _ = run(capsys, "--state", str(STATE), "--mode", mode, str(MANIFESTS))
    assert code == 0
    objects = documents(out)
    assert_valid(objects[0], mode)
    assert_valid(objects[1], mode)
    assert objects[0]["spec"]["restore"]["mode"] == mode
    assert objects[1]["spec"]["createVirtualMachine"]["mode"] == mode
    assert f"mode {mode}: " in comment_blocks(out)[0]


def test_a_restore_that_already_ran_warns(capsys: pytest.CaptureFixture[str]) -> None:
    """01-forced.yaml is a `kubectl get -o yaml` of a finished restore (status Ready)."""
    code, _, err = run(capsys, "--state", str(STATE), str(MANIFESTS / "01-forced.yaml"))
    assert code == 0
    assert "the restore has already run (phase Ready): applying this runs it again" in err


# --- inputs ------------------------------------------------------------------------------


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO((MANIFESTS / "02-safe-rename.yaml").read_text()))
    code, out, _ = run(capsys, "-")
    assert code == 0
    (obj,) = documents(out)
    assert obj["kind"] == "VirtualMachineSnapshotOperation"
    assert "converted from VirtualMachineRestore ns1/restore-copy (-#0)" in comment_blocks(out)[0]


def test_files_and_lists_keep_their_order(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [yaml.safe_load((MANIFESTS / name).read_text()) for name in ("05-safe-gone.yaml", "03-configmap.yaml")],
    }
    path = write(tmp_path / "list.yaml", yaml.safe_dump(listing))
    code, out, _ = run(capsys, "--state", str(STATE), str(path), str(MANIFESTS / "01-forced.yaml"))
    assert code == 0
    assert [(o["kind"], o["metadata"]["name"]) for o in documents(out)] == [
        ("VirtualMachineSnapshotOperation", "restore-gone"),
        ("ConfigMap", "unrelated"),
        ("VirtualMachineOperation", "restore-forced"),
    ]
    assert f"({path}#0.items[0])" in comment_blocks(out)[0]


def test_nothing_to_convert(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(MANIFESTS / "03-configmap.yaml"))
    assert code == 0
    assert documents(out) == [yaml.safe_load((MANIFESTS / "03-configmap.yaml").read_text())]
    assert "nothing was converted" in err


# --- bad input: exit 2, one line naming the file and document ---------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: VirtualMachineRestore\nmetadata: {namespace: ns1}\nspec: {virtualMachineSnapshotName: s}\n",
         "#1: VirtualMachineRestore has no metadata.name"),
        ("kind: VirtualMachineRestore\nmetadata: {name: r, namespace: ns1}\nspec: [\n", "#1: line 9: invalid YAML"),
        ("kind: VirtualMachineRestore\nmetadata: {name: r, namespace: ns1}\nspec: {}\n",
         '#1: VirtualMachineRestore "r": spec.virtualMachineSnapshotName is empty'),
        ("kind: VirtualMachineRestore\nmetadata: {name: r}\nspec: {virtualMachineSnapshotName: s, restoreMode: Merge}\n",
         '#1: VirtualMachineRestore "r": spec.restoreMode "Merge" is neither Safe nor Forced'),
        ("kind: VirtualMachineRestore\nmetadata: {name: r}\nspec: {virtualMachineSnapshotName: s, nameReplacements: 3}\n",
         '#1: VirtualMachineRestore "r": spec.nameReplacements:'),
    ],
)
def test_bad_restores(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.yaml", (MANIFESTS / "03-configmap.yaml").read_text() + "---\n" + text)
    code, out, err = run(capsys, str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"snapguard: error: {path}{message}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unreadable_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"kind: ConfigMap\nmetadata: {name: caf\xe9}\n")
    code, out, err = run(capsys, str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"snapguard: error: {path}: not UTF-8 text")
    code, out, err = run(capsys, str(tmp_path / "missing.yaml"))
    assert (code, out, err) == (2, "", f"snapguard: error: {tmp_path / 'missing.yaml'}: no such file or directory\n")
    code, out, err = run(capsys, "--state", str(tmp_path / "missing.yaml"), str(MANIFESTS))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
