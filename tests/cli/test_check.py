"""`snapguard check` as CI uses it: outputs, exit codes, order of application and bad
input, through the real command-line entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from snapguard.cli import main

STATE = """\
apiVersion: v1
kind: List
items:
- apiVersion: virtualization.deckhouse.io/v1alpha2
  kind: VirtualDisk
  metadata: {name: d1, namespace: ns1, generation: 1}
  status:
    phase: Ready
    target: {persistentVolumeClaimName: pvc-d1}
    attachedToVirtualMachines: [{name: vm1, mounted: true}]
    conditions: [{type: Ready, status: "True"}]
- apiVersion: virtualization.deckhouse.io/v1alpha2
  kind: VirtualMachine
  metadata: {name: vm1, namespace: ns1}
  status:
    phase: Running
    conditions: [{type: AgentReady, status: "False"}]
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: pvc-d1, namespace: ns1}
  spec: {storageClassName: fast}
  status: {phase: Bound}
- apiVersion: storage.k8s.io/v1
  kind: StorageClass
  metadata: {name: fast}
  provisioner: fast.csi
- apiVersion: snapshot.storage.k8s.io/v1
  kind: VolumeSnapshotClass
  metadata:
    name: fast-snap
    annotations: {snapshot.storage.kubernetes.io/is-default-class: "true"}
  driver: fast.csi
"""

INCONSISTENT = """\
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualDiskSnapshot
metadata: {name: snap-inconsistent, namespace: ns1}
spec: {virtualDiskName: d1}
"""

ACCEPTING = """\
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualDiskSnapshot
metadata: {name: snap-ok, namespace: ns1}
spec: {virtualDiskName: d1, requiredConsistency: false}
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "state.yaml").write_text(STATE)
    (tmp_path / "bad.yaml").write_text(INCONSISTENT)
    (tmp_path / "good.yaml").write_text(ACCEPTING)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_output_follows_the_spec_schema(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A denied snapshot appears with its violation, field and the summary counts."""
    code, out, _ = run(capsys, "check", "--state", str(files / "state.yaml"), "-o", "json",
                       str(files / "bad.yaml"), str(files / "good.yaml"))
    document = json.loads(out)
    assert code == 1
    first, second = document["results"]
    assert first["source"] == f"{files / 'bad.yaml'}#0"
    assert (first["kind"], first["namespace"], first["name"], first["operation"]) == (
        "VirtualDiskSnapshot", "ns1", "snap-inconsistent", "CREATE")
    assert first["allowed"] is False
    assert [v["rule"] for v in first["violations"]] == ["vds-consistency"]
    assert first["violations"][0] == {
        "rule": "vds-consistency",
        "action": "deny",
        "field": "spec.requiredConsistency",
        "message": first["violations"][0]["message"],
    }
    assert "qemu-guest-agent" in first["violations"][0]["message"]
    assert second["allowed"] is True and second["violations"] == [] and second["patch"] == []
    assert document["summary"] == {"checked": 2, "denied": 1, "warned": 0, "skipped": 0}


def test_exit_zero_when_nothing_is_denied(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An allowed object exits 0 and the text output ends with the summary."""
    code, out, _ = run(capsys, "check", "--state", str(files / "state.yaml"), str(files / "good.yaml"))
    assert code == 0
    assert out.strip().splitlines()[-1] == "1 checked, 0 denied, 0 warned, 0 skipped"
    assert "ok    VirtualDiskSnapshot ns1/snap-ok" in out


def test_strict_fails_on_a_warning(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--strict turns a warning (here: no default VolumeSnapshotClass on v0.23, where the
    spec could still name one) into exit 1."""
    state = (files / "state.yaml").read_text().replace('"true"', '"false"')
    (files / "state.yaml").write_text(state)
    old = ("--platform-version", "0.23")
    code, out, _ = run(capsys, "check", *old, "--state", str(files / "state.yaml"), str(files / "good.yaml"))
    assert code == 0 and "WARN  VirtualDiskSnapshot ns1/snap-ok: snapshot-class-default" in out
    assert out.splitlines()[0].startswith("Decided for DVP platform v0.23")
    code, _, _ = run(
        capsys, "check", *old, "--strict", "--state", str(files / "state.yaml"), str(files / "good.yaml")
    )
    assert code == 1


def test_missing_default_class_denies_on_current_platforms(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """From v0.24 the spec cannot name a class, so no default class for the driver is a deny."""
    state = (files / "state.yaml").read_text().replace('"true"', '"false"')
    (files / "state.yaml").write_text(state)
    code, out, _ = run(capsys, "check", "--state", str(files / "state.yaml"), str(files / "good.yaml"))
    assert code == 1 and "DENY  VirtualDiskSnapshot ns1/snap-ok: snapshot-class-default" in out
    assert out.splitlines()[0].startswith("Decided for DVP platform v1.10")


def test_bad_platform_version_is_an_input_error(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unusable --platform-version exits 2 with one line saying what is accepted."""
    code, out, err = run(capsys, "check", "--platform-version", "1.x", str(files / "good.yaml"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--platform-version" in err and "major.minor" in err


def test_strict_fails_on_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a state the disk cannot be looked up: unknown is a warning, and --strict fails."""
    (tmp_path / "s.yaml").write_text(ACCEPTING)
    code, out, _ = run(capsys, "check", "-o", "json", str(tmp_path / "s.yaml"))
    result = json.loads(out)["results"][0]
    assert code == 0
    assert any(w["rule"] == "vds-disk-exists" and "VirtualDisk" in w["message"] for w in result["warnings"])
    assert run(capsys, "check", "--strict", str(tmp_path / "s.yaml"))[0] == 1


def test_objects_are_applied_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A disk defined earlier in the same manifests is seen by the snapshot after it,
    as `kubectl apply -f` would create it first; a ConfigMap is skipped."""
    disk = textwrap.dedent("""\
        apiVersion: virtualization.deckhouse.io/v1alpha2
        kind: VirtualDisk
        metadata: {name: d1, namespace: ns1}
        status: {phase: Ready, target: {persistentVolumeClaimName: pvc-d1}}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: c, namespace: ns1}
        ---
        """)
    (tmp_path / "all.yaml").write_text(disk + ACCEPTING)
    code, out, _ = run(capsys, "check", "-o", "json", str(tmp_path / "all.yaml"))
    document = json.loads(out)
    assert code == 0 and document["summary"]["skipped"] == 2  # a plain disk and the ConfigMap
    (result,) = document["results"]
    assert result["source"].endswith("all.yaml#2")
    assert not any(w["rule"] == "vds-disk-exists" for w in result["warnings"])
    # Reversed order: the disk is not there yet when the snapshot is decided.
    (tmp_path / "rev.yaml").write_text(ACCEPTING + "---\n" + disk)
    _code, out, _ = run(capsys, "check", "-o", "json", str(tmp_path / "rev.yaml"))
    first = json.loads(out)["results"][0]
    assert any(w["rule"] == "vds-disk-exists" for w in first["warnings"])


def test_denied_objects_do_not_join_the_view(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A denied snapshot is not created, so a disk restored from it finds no snapshot."""
    restore = textwrap.dedent("""\
        ---
        apiVersion: virtualization.deckhouse.io/v1alpha2
        kind: VirtualDisk
        metadata: {name: restored, namespace: ns1}
        spec:
          dataSource: {type: ObjectRef, objectRef: {kind: VirtualDiskSnapshot, name: snap-inconsistent}}
        """)
    (files / "both.yaml").write_text(INCONSISTENT + restore)
    _code, out, _ = run(capsys, "check", "-o", "json", "--state", str(files / "state.yaml"), str(files / "both.yaml"))
    results = json.loads(out)["results"]
    assert [r["allowed"] for r in results] == [False, True]
    assert any(w["rule"] == "vd-snapshot-exists" for w in results[1]["warnings"])  # unknown: no VDS at all


def test_existing_object_is_decided_as_update(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An object the state already holds is an UPDATE; a changed spec is denied."""
    existing = ACCEPTING.replace("requiredConsistency: false", "requiredConsistency: true")
    (files / "state2.yaml").write_text(existing)
    code, out, _ = run(capsys, "check", "-o", "json", "--state", str(files / "state.yaml"),
                       "--state", str(files / "state2.yaml"), str(files / "good.yaml"))
    (result,) = json.loads(out)["results"]
    assert code == 1 and result["operation"] == "UPDATE"
    assert [v["rule"] for v in result["violations"]] == ["spec-immutable"]


def test_mutate_reports_and_applies_defaults(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--mutate adds the absent defaults and decides the defaulted object."""
    _code, out, _ = run(capsys, "check", "--mutate", "-o", "json", "--state", str(files / "state.yaml"),
                       str(files / "bad.yaml"), str(files / "good.yaml"))
    first, second = json.loads(out)["results"]
    assert first["patch"] == [{"op": "add", "path": "/spec/requiredConsistency", "value": True}]
    assert second["patch"] == []


def test_stdin(files: Path) -> None:
    """`-` reads manifests from standard input."""
    completed = subprocess.run(
        [sys.executable, "-m", "snapguard.cli", "check", "--state", str(files / "state.yaml"), "-"],
        input=INCONSISTENT, capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 1
    assert "-:1: DENY" in completed.stdout


def test_junit(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JUnit: one testcase per object, one failure per deny."""
    _code, out, _ = run(capsys, "check", "-o", "junit", "--state", str(files / "state.yaml"),
                       str(files / "bad.yaml"), str(files / "good.yaml"))
    root = ET.fromstring(out.split("\n", 1)[1])
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["ns1/snap-inconsistent", "ns1/snap-ok"]
    failures = cases[0].findall("failure")
    assert len(failures) == 1 and failures[0].get("type") == "vds-consistency"
    assert cases[1].findall("failure") == []
    assert root.get("failures") == "1"


def test_sarif(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SARIF 2.1.0: ruleId is the rule id, the location is the file and document line."""
    (files / "multi.yaml").write_text(ACCEPTING + "---\n" + INCONSISTENT)
    _code, out, _ = run(capsys, "check", "-o", "sarif", "--state", str(files / "state.yaml"), str(files / "multi.yaml"))
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0"
    run_ = sarif["runs"][0]
    assert {r["id"] for r in run_["tool"]["driver"]["rules"]} >= {"vds-consistency", "spec-immutable"}
    (result,) = run_["results"]
    assert result["ruleId"] == "vds-consistency" and result["level"] == "error"
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == str(files / "multi.yaml")
    assert location["region"]["startLine"] == 6  # the second document starts on line 6


def test_github(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """GitHub workflow commands carry file, line and the rule as title."""
    _code, out, _ = run(capsys, "check", "-o", "github", "--state", str(files / "state.yaml"), str(files / "bad.yaml"))
    first = out.splitlines()[0]
    assert first.startswith(f"::error file={files / 'bad.yaml'},line=1,title=vds-consistency::")
    assert "\n" not in first


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("kind: VirtualDiskSnapshot\nmetadata: {name: [x}\n", "#0: line 2: invalid YAML"),
        ("metadata: {name: x}\n", "#0: object has no kind"),
        ("kind: VirtualDiskSnapshot\nmetadata: {}\n", "#0: VirtualDiskSnapshot has no metadata.name"),
        ("---\nkind: ConfigMap\nmetadata: {name: a}\n---\n- 1\n", "#1: expected a Kubernetes object"),
        ('{"kind": "VirtualDiskSnapshot", ', "#0: line 1: invalid JSON"),
    ],
    ids=["invalid-yaml", "no-kind", "no-name", "not-a-mapping", "invalid-json"],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str) -> None:
    """Bad input names the file and document on one line, exit 2, no traceback."""
    suffix = ".json" if content.startswith("{") else ".yaml"
    path = tmp_path / f"input{suffix}"
    path.write_text(content)
    code, out, err = run(capsys, "check", str(path))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("snapguard: error: ")
    assert f"{path}{expected}" in err
    assert "Traceback" not in err and out == ""


def test_bad_state_object_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A state object of the wrong shape names the document, object and field."""
    (tmp_path / "state.yaml").write_text("kind: VirtualDisk\nmetadata: {name: d1}\nstatus: {phase: [1]}\n")
    (tmp_path / "s.yaml").write_text(ACCEPTING)
    code, _, err = run(capsys, "check", "--state", str(tmp_path / "state.yaml"), str(tmp_path / "s.yaml"))
    assert code == 2
    assert f'{tmp_path / "state.yaml"}#0: VirtualDisk "d1": status.phase' in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", str(tmp_path / "nope.yaml"))
    assert code == 2 and err.strip() == f"snapguard: error: {tmp_path / 'nope.yaml'}: no such file or directory"


def test_unknown_rule_in_policy(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in the policy file is an error naming the file and key, not ignored."""
    (files / "policy.yaml").write_text("rules:\n  vds-consistancy: warn\n")
    code, _, err = run(capsys, "check", "--policy", str(files / "policy.yaml"), str(files / "good.yaml"))
    assert code == 2
    assert f"{files / 'policy.yaml'}: rules.vds-consistancy" in err and "unknown rule id" in err


def test_policy_changes_action(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A policy setting the rule to warn lets the object through with a warning."""
    (files / "policy.yaml").write_text("rules:\n  vds-consistency: warn\n")
    code, out, _ = run(capsys, "check", "-o", "json", "--policy", str(files / "policy.yaml"),
                       "--state", str(files / "state.yaml"), str(files / "bad.yaml"))
    (result,) = json.loads(out)["results"]
    assert code == 0 and result["allowed"] is True
    assert [w["rule"] for w in result["warnings"]] == ["vds-consistency"]


def test_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["check"])
    assert raised.value.code == 2
