"""PolicyReports from an audit (`policies.reports`): one per namespace, the outcome
mapping, and the cap that keeps a report small enough for etcd."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policies.audit import (
    SNAPSHOT_LOST,
    AuditCheck,
    AuditFinding,
    AuditReport,
    ObjectKey,
    audit,
)
from policies.catalogue import Action, Outcome
from policies.config import PolicyConfig
from policies.engine import Engine
from policies.models import parse_object
from policies.reports import (
    DROPPED_ANNOTATION,
    MANAGED_BY_LABEL,
    MAX_RESULTS,
    policy_reports,
    result_value,
)
from policies.view import InMemoryView

from . import objects as o

NOW = datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)


def audited(items: list[dict[str, Any]], *, engine: Engine | None = None, preflight: bool = False) -> AuditReport:
    view = InMemoryView(parse_object(item) for item in items)
    return audit(engine or Engine(), view, now=NOW, stuck_after=timedelta(minutes=30),
                 preflight=preflight, namespaces=None)


def by_rule(report: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [r for r in report["results"] if r["rule"] == rule]


@pytest.mark.parametrize(
    ("outcome", "action", "expected"),
    [
        (Outcome.PASS, Action.DENY, "pass"),
        (Outcome.FAIL, Action.DENY, "fail"),
        (Outcome.FAIL, Action.AUDIT, "fail"),
        (Outcome.FAIL, Action.WARN, "warn"),
        (Outcome.ERROR, Action.DENY, "error"),
        (Outcome.UNKNOWN, Action.DENY, "skip"),
        (Outcome.SKIP, Action.OFF, None),
    ],
)
def test_result_mapping(outcome: Outcome, action: Action, expected: str | None) -> None:
    """deny/audit fail -> fail, warn fail -> warn, error -> error, unknown -> skip (not a
    pass), off -> not reported."""
    assert result_value(outcome, action) == expected


def test_one_report_per_namespace() -> None:
    """Each namespace with an audited object gets a report named dvp-snapguard, labelled
    as managed by dvp-snapguard, whose results all carry source and policy."""
    items = [o.disk_snapshot("f1", "ns1", phase="Failed"), o.disk_snapshot("f2", "ns2", phase="Failed")]
    reports = policy_reports(audited(items), now=NOW)
    assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in reports] == [
        ("ns1", "dvp-snapguard"), ("ns2", "dvp-snapguard")]
    for report in reports:
        assert report["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and report["kind"] == "PolicyReport"
        assert report["metadata"]["labels"] == {MANAGED_BY_LABEL: "dvp-snapguard"}
        assert "annotations" not in report["metadata"]
        for result in report["results"]:
            assert result["source"] == "dvp-snapguard"
            assert result["policy"] in ("dvp-snapguard", "dvp-snapguard-preflight")
            assert result["timestamp"] == {"seconds": int(NOW.timestamp()), "nanos": 250000000}
            (resource,) = result["resources"]
            assert resource["namespace"] == report["metadata"]["namespace"]


def test_findings_are_fail_results() -> None:
    """A finding is a fail with rule = the finding id and the platform's reason."""
    item = o.disk_snapshot("f", phase="Failed", conditions=[
        o.condition("VirtualDiskSnapshotReady", "False", "PotentiallyInconsistent", "no agent")])
    (report,) = policy_reports(audited([item]), now=NOW)
    (result,) = by_rule(report, "snapshot-failed")
    assert result["result"] == "fail" and "no agent" in str(result["message"])
    assert result["properties"] == {"reason": "PotentiallyInconsistent"}
    assert result["resources"] == [{"apiVersion": "virtualization.deckhouse.io/v1alpha2",
                                    "kind": "VirtualDiskSnapshot", "name": "f", "namespace": "ns1"}]
    assert report["summary"] == {"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 0}


def test_decisions_map_rule_by_rule() -> None:
    """An unfinished snapshot contributes one result per rule: its deny as fail, a rule
    set to warn as warn, passes as pass, a rule lacking a kind as skip, off rules not at
    all."""
    engine = Engine(PolicyConfig(rules={"vds-single-attachment": Action.OFF,
                                        "vds-disk-pvc-bound": Action.WARN}))
    items = [o.disk("d1", vm="vm1"), o.vm("vm1", agent=False), o.disk_snapshot("s", phase="Pending")]
    (report,) = policy_reports(audited(items, engine=engine), now=NOW)
    results = {r["rule"]: r for r in report["results"] if r["policy"] == "dvp-snapguard"}
    assert results["vds-consistency"]["result"] == "fail"
    assert results["vds-consistency"]["severity"] == "high"
    assert results["vds-disk-exists"]["result"] == "pass"
    # No PVC at all in the view: the rule is unknown, warned under its action.
    assert results["vds-disk-pvc-bound"]["result"] == "skip"
    assert results["vds-disk-pvc-bound"]["properties"]["outcome"] == "unknown"
    assert "vds-single-attachment" not in results
    assert results["snapshot-stuck"]["result"] == "pass"


def test_warn_rule_is_warn() -> None:
    """A rule configured as warn that fires is a warn result."""
    engine = Engine(PolicyConfig(rules={"vds-consistency": Action.WARN}))
    items = [o.disk("d1", vm="vm1"), o.vm("vm1", agent=False), o.disk_snapshot("s", phase="Pending")]
    (report,) = policy_reports(audited(items, engine=engine), now=NOW)
    (result,) = by_rule(report, "vds-consistency")
    assert result["result"] == "warn" and result["severity"] == "medium"


def test_preflight_results_are_on_the_vm() -> None:
    """Preflight results name the VirtualMachine under the preflight policy."""
    items = [o.storage_class(), o.snapshot_class(), o.disk("d1", vm="vm1"), o.pvc("pvc-d1"),
             o.vm("vm1", agent=False, disks=("d1",))]
    (report,) = policy_reports(audited(items, preflight=True), now=NOW)
    (result,) = by_rule(report, "vms-consistency")
    assert result["policy"] == "dvp-snapguard-preflight" and result["result"] == "fail"
    assert result["resources"][0]["kind"] == "VirtualMachine"


def _big_report(fails: int, passes: int) -> AuditReport:
    findings = tuple(
        AuditFinding(ObjectKey("VirtualDiskSnapshot", "ns1", f"lost-{i:04}", f"uid-{i}"), SNAPSHOT_LOST, "gone")
        for i in range(fails)
    )
    checks = tuple(
        AuditCheck(ObjectKey("VirtualDiskSnapshot", "ns1", f"ok-{i:04}"), SNAPSHOT_LOST, Outcome.PASS)
        for i in range(passes)
    )
    return AuditReport(findings=findings, checks=checks)


def test_cap_keeps_fails_first_and_counts_everything() -> None:
    """1,500 results: the report keeps 1,000, every fail first, counts all 1,500 in its
    summary and records the 500 it dropped."""
    (report,) = policy_reports(_big_report(fails=300, passes=1200), now=NOW)
    results = report["results"]
    assert len(results) == MAX_RESULTS
    assert [r["result"] for r in results[:300]] == ["fail"] * 300
    assert {r["result"] for r in results[300:]} == {"pass"}
    assert report["summary"] == {"pass": 1200, "fail": 300, "warn": 0, "error": 0, "skip": 0}
    assert report["metadata"]["annotations"] == {DROPPED_ANNOTATION: "500"}
    assert results[0]["resources"][0]["uid"] == "uid-0"


def test_fails_arriving_late_still_win() -> None:
    """Passes listed before the fails do not crowd them out."""
    findings = _big_report(fails=10, passes=0).findings
    checks = _big_report(fails=0, passes=MAX_RESULTS).checks
    (report,) = policy_reports(AuditReport(checks=checks, findings=findings), now=NOW)
    assert sum(1 for r in report["results"] if r["result"] == "fail") == 10


def test_byte_budget() -> None:
    """Results are also capped by size, so a report stays far under etcd's limit."""
    (report,) = policy_reports(_big_report(fails=50, passes=0), now=NOW, max_bytes=5000)
    kept = report["results"]
    assert 0 < len(kept) < 50
    assert len(json.dumps(kept).encode()) <= 5000
    assert report["summary"]["fail"] == 50
    assert report["metadata"]["annotations"] == {DROPPED_ANNOTATION: str(50 - len(kept))}


def test_long_messages_are_cut() -> None:
    """A huge message is cut rather than blowing the report up."""
    finding = AuditFinding(ObjectKey("VirtualDiskSnapshot", "ns1", "x"), SNAPSHOT_LOST, "m" * 10000)
    (report,) = policy_reports(AuditReport(findings=(finding,)), now=NOW)
    assert len(report["results"][0]["message"]) <= 2048
