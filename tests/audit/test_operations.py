"""The audit of VirtualMachineOperations (Restore, Clone) and
VirtualMachineSnapshotOperations: unfinished ones are decided as if created now,
Failed ones are `operation-failed` with the failed items of `status.resources`, old
unfinished ones are `snapshot-stuck`. What the op rules decide is theirs (tests/cases);
here a recording engine shows what the audit asks it and does with the answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.audit import FINDING_RULES, OPERATION_FAILED, SNAPSHOT_STUCK, audit
from policies.catalogue import Action, Operation, Outcome
from policies.engine import Decision, Engine, EngineRequest, Violation
from policies.reports import policy_reports
from policies.view import ClusterView
from snapguard.cli import main

from . import objects as o
from .test_audit import NOW, STUCK_AFTER, findings, run, view_of

DENIED = Decision(
    allowed=False,
    governed=True,
    violations=(Violation("op-snapshot-exists", Action.DENY, 'no VirtualMachineSnapshot "vms1"'),),
)


class RecordingEngine(Engine):
    """Answers every operation with `answer` and records the requests it got; other
    kinds go to the real engine."""

    def __init__(self, answer: Decision = DENIED) -> None:
        super().__init__()
        self.answer = answer
        self.requests: list[EngineRequest] = []

    def decide(self, request: EngineRequest, view: ClusterView) -> Decision:
        if request.kind not in ("VirtualMachineOperation", "VirtualMachineSnapshotOperation"):
            return super().decide(request, view)
        self.requests.append(request)
        return self.answer


def audited(items: list[dict[str, Any]], engine: Engine | None = None) -> Any:
    return run(items, engine=engine or RecordingEngine())


class TestUnfinished:
    @pytest.mark.parametrize("phase", ["", "Pending", "InProgress"])
    @pytest.mark.parametrize(
        "item",
        [
            pytest.param(o.operation("restore-op"), id="vmop-restore"),
            pytest.param(o.operation("clone-op", type_="Clone"), id="vmop-clone"),
            pytest.param(o.snapshot_operation("vmsop"), id="vmsop"),
        ],
    )
    def test_unfinished_operation_is_decided_as_a_create_of_the_stored_object(
        self, item: dict[str, Any], phase: str
    ) -> None:
        """A governed operation that has not finished is a CREATE of the stored object,
        with its uid, and its decision is a result like an unfinished snapshot's."""
        item["status"]["phase"] = phase
        engine = RecordingEngine()
        report = audited([item], engine)
        (request,) = engine.requests
        assert (request.operation, request.kind, request.name, request.uid) == (
            Operation.CREATE, item["kind"], item["metadata"]["name"], f"uid-{item['metadata']['name']}")
        stored = {k: v for k, v in item["spec"].items() if not isinstance(v, dict)}
        assert request.object["spec"].items() >= stored.items()
        (result,) = report.results
        assert (result.kind, result.name, result.decision) == (item["kind"], item["metadata"]["name"], DENIED)
        assert report.summary.denied == 1 and report.summary.failed

    @pytest.mark.parametrize("type_", ["Start", "Stop", "Restart", "Migrate", "Evict"])
    def test_other_operation_types_are_not_audited(self, type_: str) -> None:
        """Start, Stop, ... are not governed: not decided, not stuck, not failed."""
        items = [
            o.operation("a", type_=type_, created="2020-01-01T00:00:00Z"),
            o.operation("b", type_=type_, phase="Failed"),
        ]
        engine = RecordingEngine()
        report = audited(items, engine)
        assert engine.requests == [] and report.results == () and report.findings == ()
        assert report.checks == ()

    @pytest.mark.parametrize("phase", ["Completed", "Failed", "Superseded", "Terminating"])
    def test_finished_operation_is_not_re_decided(self, phase: str) -> None:
        engine = RecordingEngine()
        report = audited([o.operation("r", phase=phase), o.snapshot_operation("s", phase=phase)], engine)
        assert engine.requests == [] and report.results == ()

    def test_deleting_operation_is_skipped(self) -> None:
        item = o.operation("gone", created="2020-01-01T00:00:00Z")
        item["metadata"]["deletionTimestamp"] = "2025-06-01T11:00:00Z"
        report = audited([item])
        assert report.results == () and report.findings == ()

    def test_operations_are_listed_in_the_namespaces_asked_for(self) -> None:
        engine = RecordingEngine()
        report = audit(engine, view_of([o.operation("a", "ns1"), o.snapshot_operation("b", "ns2")]),
                       now=NOW, stuck_after=STUCK_AFTER, preflight=False, namespaces={"ns2"})
        assert [r.name for r in report.results] == ["b"]

    def test_with_the_real_engine_an_operation_is_never_an_error(self) -> None:
        """Whatever rules the catalogue has for operations, the audit of one runs
        through the engine without a rule error."""
        report = run([o.operation("r"), o.operation("c", type_="Clone"), o.snapshot_operation("s")])
        for result in report.results:
            assert all(r.outcome is not Outcome.ERROR for r in result.decision.results)


class TestStuck:
    @pytest.mark.parametrize(
        "item",
        [
            pytest.param(o.operation("r", phase="InProgress", created="2025-06-01T10:00:00Z"), id="vmop"),
            pytest.param(o.snapshot_operation("s", phase="Pending", created="2025-06-01T10:00:00Z"), id="vmsop"),
        ],
    )
    def test_old_unfinished_operation_is_stuck(self, item: dict[str, Any]) -> None:
        """snapshot-stuck covers operations: 2h InProgress/Pending is longer than 30m;
        the message points at the result that denies it now."""
        report = audited([item])
        (finding,) = report.findings
        assert (finding.kind, finding.rule) == (item["kind"], SNAPSHOT_STUCK)
        assert "for 2h (since 2025-06-01T10:00:00Z, longer than 30m)" in finding.message
        assert "would be denied if created now (op-snapshot-exists)" in finding.message

    def test_stuck_operation_quotes_its_completed_condition(self) -> None:
        item = o.operation("r", phase="InProgress", created="2025-06-01T10:00:00Z", conditions=[
            o.condition("Completed", "False", "RestoreInProgress", "Waiting for the operation to complete.")])
        (finding,) = audited([item], RecordingEngine(Decision(governed=True))).findings
        assert "the platform says: RestoreInProgress: Waiting for the operation to complete" in finding.message
        assert "kubectl describe vmop -n ns1 r" in finding.message
        assert finding.reason == "RestoreInProgress"

    def test_young_operation_is_a_passed_check(self) -> None:
        report = audited([o.snapshot_operation("s", created="2025-06-01T11:45:00Z")])
        assert report.findings == ()
        assert [(c.rule, c.outcome) for c in report.checks] == [(SNAPSHOT_STUCK, Outcome.PASS)]


class TestFailed:
    def test_failed_restore_operation_names_its_reason_and_failed_resources(self) -> None:
        """operation-failed: the Completed condition's reason and message, then every
        status.resources item with status Failed (kind, name, message), and only those."""
        item = o.operation(
            "restore-db", phase="Failed", vm_name="db",
            conditions=[o.condition("Completed", "False", "OperationFailed",
                                    "Restore is failed: fail to validate the resources: check the status")],
            resources=[
                o.resource_status("VirtualMachine", "db", "Completed", "db is valid for restore"),
                o.resource_status("VirtualDisk", "db-root", "Failed",
                                  'the virtual disk "db-root" is attached to virtual machine "web".'),
                o.resource_status("VirtualMachineIPAddress", "db-ip", "Failed", "the address 10.0.0.5 is taken"),
            ],
        )
        report = audited([item])
        (finding,) = report.findings
        assert (finding.kind, finding.name, finding.rule, finding.reason) == (
            "VirtualMachineOperation", "restore-db", OPERATION_FAILED, "OperationFailed")
        assert finding.message.startswith(
            'VirtualMachineOperation "restore-db" (Restore of virtual machine "db") failed: OperationFailed: '
            "Restore is failed: fail to validate the resources: check the status; failed resources: "
            'VirtualDisk "db-root": the virtual disk "db-root" is attached to virtual machine "web"; '
            'VirtualMachineIPAddress "db-ip": the address 10.0.0.5 is taken; ')
        assert "is valid for restore" not in finding.message
        assert "delete it and create a new one" in finding.message
        assert report.results == () and report.summary.failed

    def test_failed_snapshot_operation_without_resources(self) -> None:
        item = o.snapshot_operation("new-vm", phase="Failed", snapshot="vms-db", conditions=[
            o.condition("Completed", "False", "VirtualMachineSnapshotNotFound", "")])
        (finding,) = audited([item]).findings
        assert finding.rule == OPERATION_FAILED
        assert finding.message.startswith(
            'VirtualMachineSnapshotOperation "new-vm" (CreateVirtualMachine from snapshot "vms-db") failed: '
            "reason VirtualMachineSnapshotNotFound; a failed operation")
        assert "failed resources" not in finding.message

    def test_failed_without_a_condition_says_so(self) -> None:
        (finding,) = audited([o.operation("c", type_="Clone", phase="Failed")]).findings
        assert "recorded no reason (no Completed condition)" in finding.message

    def test_completed_operation_is_a_passed_check(self) -> None:
        report = audited([o.operation("r", phase="Completed"), o.snapshot_operation("s", phase="Completed")])
        assert report.findings == ()
        assert [(c.object.name, c.rule, c.outcome) for c in report.checks] == [
            ("r", OPERATION_FAILED, Outcome.PASS), ("s", OPERATION_FAILED, Outcome.PASS)]

    def test_the_finding_rule_is_in_the_catalogue_of_findings(self) -> None:
        rule = FINDING_RULES[OPERATION_FAILED]
        assert "status.resources" in rule.summary and rule.severity == "medium"


def test_policy_reports_carry_operation_findings_and_checks() -> None:
    """The PolicyReport of the namespace has a fail for the failed operation and a pass
    for the completed one, both under operation-failed, with the object as resource."""
    report = audited([
        o.operation("bad", phase="Failed", conditions=[o.condition("Completed", "False", "OperationFailed", "x")]),
        o.snapshot_operation("good", phase="Completed"),
    ])
    (policy_report,) = policy_reports(report, now=NOW)
    rows = {(r["resources"][0]["kind"], r["resources"][0]["name"], r["rule"], r["result"])
            for r in policy_report["results"]}
    assert rows == {
        ("VirtualMachineOperation", "bad", OPERATION_FAILED, "fail"),
        ("VirtualMachineSnapshotOperation", "good", OPERATION_FAILED, "pass"),
    }
    assert findings(report) == [("VirtualMachineOperation", "bad", OPERATION_FAILED)]


def test_the_cli_reports_a_failed_operation_from_state_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end through `snapguard audit --state`: a failed vmop Restore is an
    operation-failed finding in the JSON output, exit 1; a Start operation is ignored."""
    items = [
        o.operation("restore-db", phase="Failed", conditions=[
            o.condition("Completed", "False", "OperationFailed", "Restore is failed")],
            resources=[o.resource_status("VirtualDisk", "db-root", "Failed", "in use")]),
        o.operation("start-db", type_="Start", phase="Failed"),
    ]
    state = tmp_path / "state.yaml"
    state.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    code = main(["audit", "--state", str(state), "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [(f["kind"], f["name"], f["rule"]) for f in out["findings"]] == [
        ("VirtualMachineOperation", "restore-db", OPERATION_FAILED)]
    assert 'VirtualDisk "db-root": in use' in out["findings"][0]["message"]
