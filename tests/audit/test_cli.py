"""`snapguard audit` over state files, through the real entry point: every output format,
exit codes 0/1/2, durations, scope and PolicyReports printed as YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import yaml

from snapguard.cli import main
from snapguard.commands.audit import ProgressLine, parse_duration

from . import objects as o

# Created long before any test runs: an unfinished snapshot of it is stuck.
LONG_AGO = "2020-01-01T00:00:00Z"


def write_state(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False))
    return path


def clean_items() -> list[dict[str, Any]]:
    """A namespace where everything is fine: one Ready snapshot with its VolumeSnapshot,
    one VM that can be snapshotted consistently."""
    return [
        o.storage_class(),
        o.snapshot_class(),
        *o.healthy_namespace(),
        o.disk_snapshot("ready", volume_snapshot="vs1"),
        o.volume_snapshot("vs1"),
    ]


def troubled_items() -> list[dict[str, Any]]:
    """A denied Pending snapshot (stuck), a lost one, a failed one, and a VM without its
    agent in another namespace."""
    return [
        o.storage_class(),
        o.snapshot_class(),
        o.disk("d1", "ns1", vm="vm1"),
        o.pvc("pvc-d1", "ns1"),
        o.vm("vm1", "ns1", agent=False, disks=("d1",)),
        o.disk_snapshot("pending", "ns1", phase="Pending", created=LONG_AGO),
        o.disk_snapshot("lost", "ns1", volume_snapshot="vs-gone"),
        o.disk_snapshot("failed", "ns2", phase="Failed", conditions=[
            o.condition("VirtualDiskSnapshotReady", "False", "VirtualDiskSnapshotFailed", "boom")]),
        o.volume_snapshot("vs-other", "ns1"),
    ]


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    return write_state(tmp_path / "clean.yaml", clean_items())


@pytest.fixture
def troubled(tmp_path: Path) -> Path:
    return write_state(tmp_path / "troubled.yaml", troubled_items())


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class TestExitCodes:
    def test_clean_state_exits_zero(self, clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Nothing denied, found or not ready: exit 0, also with a preflight."""
        code, out, _ = run(capsys, "--state", str(clean), "--preflight")
        assert code == 0, out
        assert "0 findings" in out and "0 not ready" in out

    def test_findings_exit_one(self, troubled: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, _ = run(capsys, "--state", str(troubled))
        assert code == 1

    def test_not_ready_vm_alone_exits_one(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A preflight entry that is not ready fails the audit even with no finding."""
        state = write_state(tmp_path / "s.yaml", [o.storage_class(), o.snapshot_class(),
                                                   o.disk("d1", vm="vm1"), o.pvc("pvc-d1"),
                                                   o.vm("vm1", agent=False, disks=("d1",))])
        assert run(capsys, "--state", str(state))[0] == 0
        assert run(capsys, "--state", str(state), "--preflight")[0] == 1

    def test_missing_state_file_exits_two(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "--state", str(tmp_path / "nope.yaml"))
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "nope.yaml: no such file or directory" in err

    def test_invalid_state_exits_two(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        bad = tmp_path / "bad.yaml"
        bad.write_text("kind: VirtualDisk\nmetadata: {name: [}\n")
        code, _, err = run(capsys, "--state", str(bad))
        assert code == 2 and err.count("\n") == 1 and "bad.yaml#0" in err


class TestUsage:
    @pytest.mark.parametrize("duration", ["3x", "30", "m30", "1m2h", "", "-5m"])
    def test_bad_duration_is_one_line_exit_two(self, clean: Path, duration: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(["audit", "--state", str(clean), f"--stuck-after={duration}"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "invalid duration" in err

    @pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("2h", 7200), ("45s", 45),
                                                   ("1h30m", 5400), ("1h0m5s", 3605)])
    def test_durations(self, text: str, seconds: int) -> None:
        assert parse_duration(text).total_seconds() == seconds

    def test_state_and_kubeconfig_are_two_sources(self, clean: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "--state", str(clean), "--kubeconfig", str(tmp_path / "k"))
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "--state and --kubeconfig" in err

    def test_apply_needs_a_cluster(self, clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "--state", str(clean), "--policy-report", "apply")
        assert code == 2 and "--policy-report apply" in err

    def test_namespace_and_all_namespaces_exclude_each_other(self, clean: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(["audit", "--state", str(clean), "-n", "ns1", "-A"])
        assert exit_info.value.code == 2

    def test_unknown_rule_in_policy(self, clean: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
        policy = tmp_path / "policy.yaml"
        policy.write_text("rules: {no-such-rule: deny}\n")
        code, _, err = run(capsys, "--state", str(clean), "--policy", str(policy))
        assert code == 2 and "no-such-rule" in err


class TestOutputs:
    def test_json_shape(self, troubled: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """results as in check with operation AUDIT, findings, preflight, summary."""
        code, out, _ = run(capsys, "--state", str(troubled), "-o", "json", "--preflight")
        document = json.loads(out)
        assert code == 1
        assert list(document) == ["platformVersion", "results", "findings", "preflight", "notes", "summary"]
        assert document["platformVersion"] == "1.10"
        (result,) = document["results"]
        assert result["source"] == f"{troubled}#0.items[5]"
        assert (result["kind"], result["namespace"], result["name"], result["operation"]) == (
            "VirtualDiskSnapshot", "ns1", "pending", "AUDIT")
        assert result["allowed"] is False
        assert [v["rule"] for v in result["violations"]] == ["vds-consistency"]
        assert set(result) == {"source", "kind", "namespace", "name", "operation", "allowed",
                               "violations", "warnings", "patch"}
        assert [(f["namespace"], f["name"], f["rule"]) for f in document["findings"]] == [
            ("ns1", "lost", "snapshot-lost"), ("ns1", "pending", "snapshot-stuck"),
            ("ns2", "failed", "snapshot-failed")]
        assert set(document["findings"][0]) == {"kind", "namespace", "name", "rule", "message"}
        (entry,) = document["preflight"]
        assert (entry["namespace"], entry["name"], entry["ready"]) == ("ns1", "vm1", False)
        assert [v["rule"] for v in entry["violations"]] == ["vms-consistency"]
        assert document["summary"] == {"checked": 1, "denied": 1, "warned": 0, "skipped": 0,
                                       "findings": 3, "preflight": 1, "notReady": 1}

    def test_json_has_no_preflight_unless_asked(self, clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
        document = json.loads(run(capsys, "--state", str(clean), "-o", "json")[1])
        assert "preflight" not in document
        assert document["results"] == [] and document["findings"] == []

    def test_text_table_is_aligned(self, troubled: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Each section is a table whose columns line up under their headers."""
        _, out, _ = run(capsys, "--state", str(troubled), "--preflight")
        lines = out.splitlines()
        header = next(line for line in lines if line.startswith("KIND") and "RULE" in line and "VERDICT" not in line)
        rows = lines[lines.index(header) + 1: lines.index(header) + 4]
        rule_column = header.index("RULE")
        assert {row[rule_column:].split()[0] for row in rows} == {
            "snapshot-lost", "snapshot-stuck", "snapshot-failed"}
        assert "Preflight" in out and "DENY vms-consistency" in out
        assert lines[-1] == "1 checked, 1 denied, 0 warned, 0 skipped, 3 findings, 1 preflight, 1 not ready"

    def test_text_notes(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A lost check that cannot run is a note, not a finding."""
        state = write_state(tmp_path / "s.yaml", [o.disk_snapshot("ready", volume_snapshot="vs1")])
        code, out, _ = run(capsys, "--state", str(state))
        assert code == 0
        assert "Notes:" in out and "snapshot-lost was not checked" in out

    def test_junit(self, troubled: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Test cases per result, per object with findings and per VM; failures per
        deny, finding and not-ready rule."""
        _, out, _ = run(capsys, "--state", str(troubled), "-o", "junit", "--preflight")
        root = ET.fromstring(out)
        suites = {s.get("name"): s for s in root.iter("testsuite")}
        assert set(suites) == {"snapguard audit: results", "snapguard audit: findings",
                               "snapguard audit: preflight"}
        findings = suites["snapguard audit: findings"]
        assert findings.get("tests") == "3" and findings.get("failures") == "3"
        failure_types = {f.get("type") for f in findings.iter("failure")}
        assert failure_types == {"snapshot-lost", "snapshot-stuck", "snapshot-failed"}
        case = next(c for c in findings.iter("testcase") if c.get("name") == "ns1/lost")
        assert case.get("file") == str(troubled) and case.get("line")
        preflight = suites["snapguard audit: preflight"]
        (vm_case,) = preflight.iter("testcase")
        assert vm_case.get("classname") == "VirtualMachine"
        assert [f.get("type") for f in vm_case.iter("failure")] == ["vms-consistency"]
        assert root.get("failures") == "5"

    def test_sarif(self, troubled: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Findings and denials are SARIF results at the state file and the line of the
        object's document; finding ids are rules of the run."""
        _, out, _ = run(capsys, "--state", str(troubled), "-o", "sarif", "--preflight")
        run_ = json.loads(out)["runs"][0]
        rule_ids = {r["id"] for r in run_["tool"]["driver"]["rules"]}
        assert {"snapshot-lost", "snapshot-failed", "snapshot-stuck", "restore-failed",
                "operation-failed", "vds-consistency"} <= rule_ids
        results = {(r["ruleId"], r["level"]) for r in run_["results"]}
        assert results >= {("vds-consistency", "error"), ("snapshot-lost", "error"),
                           ("snapshot-stuck", "error"), ("snapshot-failed", "error"),
                           ("vms-consistency", "error")}
        lost = next(r for r in run_["results"] if r["ruleId"] == "snapshot-lost")
        location = lost["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == str(troubled)
        text = troubled.read_text().splitlines()
        assert "name: lost" in "\n".join(text[location["region"]["startLine"] - 1:][:8])


class TestScope:
    def test_namespace_filters(self, troubled: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """-n keeps results, findings and preflight of one namespace."""
        document = json.loads(run(capsys, "--state", str(troubled), "-o", "json", "-n", "ns2",
                                  "--preflight")[1])
        assert [f["name"] for f in document["findings"]] == ["failed"]
        assert document["results"] == [] and document["preflight"] == []

    def test_stuck_after(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--stuck-after moves the line: a snapshot created long ago is stuck after any
        sensible duration; one created in the future never is."""
        items = [o.storage_class(), o.snapshot_class(), *o.healthy_namespace(),
                 o.disk_snapshot("future", phase="Pending", created="2999-01-01T00:00:00Z"),
                 o.disk_snapshot("old", phase="Pending", created=LONG_AGO)]
        state = write_state(tmp_path / "s.yaml", items)
        document = json.loads(run(capsys, "--state", str(state), "-o", "json", "--stuck-after", "1h30m")[1])
        assert [(f["name"], f["rule"]) for f in document["findings"]] == [("old", "snapshot-stuck")]
        assert "longer than 1h30m" in document["findings"][0]["message"]


class TestPolicyReportPrint:
    def test_print_is_multi_document_yaml(self, troubled: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--policy-report print writes one PolicyReport per namespace instead of the
        report, and keeps the exit code."""
        code, out, _ = run(capsys, "--state", str(troubled), "--policy-report", "print")
        assert code == 1
        reports = list(yaml.safe_load_all(out))
        assert [(r["kind"], r["metadata"]["namespace"]) for r in reports] == [
            ("PolicyReport", "ns1"), ("PolicyReport", "ns2")]
        assert "&id" not in out  # no YAML anchors
        ns2 = reports[1]
        assert ns2["summary"]["fail"] == 1
        (result,) = ns2["results"]
        assert (result["rule"], result["result"], result["source"]) == ("snapshot-failed", "fail", "dvp-snapguard")


def test_progress_line_redraws_in_place() -> None:
    """The progress line rewrites one line with carriage returns and clears it."""
    import io

    stream = io.StringIO()
    progress = ProgressLine(stream)
    progress("VirtualDisk", 500)
    progress("VM", 2)
    progress.clear()
    text = stream.getvalue()
    assert "\n" not in text
    assert text.startswith("\rlisting VirtualDisk: 500")
    assert "\rlisting VM: 2" + " " * (len("listing VirtualDisk: 500") - len("listing VM: 2")) in text
    assert text.endswith("\r")
