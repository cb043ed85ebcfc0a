"""The pure audit (`policies.audit.audit`) over handcrafted in-memory views, with a fixed
clock: what is re-decided, what is a finding, what the preflight says."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policies.audit import (
    RESTORE_FAILED,
    SNAPSHOT_FAILED,
    SNAPSHOT_LOST,
    SNAPSHOT_STUCK,
    AuditReport,
    audit,
    parse_timestamp,
)
from policies.catalogue import Outcome
from policies.config import PolicyConfig
from policies.engine import Engine
from policies.models import parse_object
from policies.view import InMemoryView

from . import objects as o

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
STUCK_AFTER = timedelta(minutes=30)
CLASSES = [o.storage_class(), o.snapshot_class()]


def view_of(items: Iterable[dict[str, Any]], given: Iterable[str] = ()) -> InMemoryView:
    return InMemoryView((parse_object(item) for item in items), given_kinds=given)


def run(
    items: Iterable[dict[str, Any]],
    *,
    given: Iterable[str] = (),
    preflight: bool = False,
    namespaces: set[str] | None = None,
    engine: Engine | None = None,
    now: datetime = NOW,
) -> AuditReport:
    return audit(
        engine or Engine(),
        view_of(items, given),
        now=now,
        stuck_after=STUCK_AFTER,
        preflight=preflight,
        namespaces=namespaces,
    )


def findings(report: AuditReport) -> list[tuple[str, str, str]]:
    return [(f.kind, f.name, f.rule) for f in report.findings]


class TestResults:
    def test_unfinished_snapshot_is_denied_as_if_created_now(self) -> None:
        """A Pending snapshot of a disk on a running VM without an agent is decided now
        and denied by vds-consistency."""
        items = [
            *CLASSES,
            o.disk("d1", vm="vm1"),
            o.pvc("pvc-d1"),
            o.vm("vm1", agent=False),
            o.disk_snapshot("pending", phase="Pending"),
        ]
        report = run(items)
        (result,) = report.results
        assert (result.kind, result.name) == ("VirtualDiskSnapshot", "pending")
        assert not result.decision.allowed
        assert [v.rule for v in result.decision.violations] == ["vds-consistency"]
        assert report.summary.denied == 1 and report.summary.failed

    @pytest.mark.parametrize("phase", ["", "Pending", "InProgress"])
    def test_every_unfinished_phase_is_decided(self, phase: str) -> None:
        """Phase empty, Pending and InProgress all count as not finished."""
        report = run([*CLASSES, *o.healthy_namespace(), o.disk_snapshot("s", phase=phase)])
        assert [r.name for r in report.results] == ["s"]
        assert report.results[0].decision.allowed

    @pytest.mark.parametrize("phase", ["Ready", "Failed", "Terminating"])
    def test_finished_snapshot_is_not_re_decided(self, phase: str) -> None:
        """A Ready, Failed or Terminating snapshot has no result, even if it would be
        denied now (the VM has no agent)."""
        items = [*CLASSES, o.disk("d1", vm="vm1"), o.pvc("pvc-d1"), o.vm("vm1", agent=False),
                 o.disk_snapshot("done", phase=phase, volume_snapshot="vs1"), o.volume_snapshot("vs1")]
        assert run(items).results == ()

    def test_deleting_snapshot_is_skipped(self) -> None:
        """An object being deleted is going away: neither decided nor reported."""
        item = o.disk_snapshot("gone", phase="Pending", created="2020-01-01T00:00:00Z")
        item["metadata"]["deletionTimestamp"] = "2025-06-01T11:00:00Z"
        report = run([*CLASSES, *o.healthy_namespace(), item])
        assert report.results == () and report.findings == ()

    def test_the_request_is_a_create_of_the_stored_object(self) -> None:
        """A restore is decided with its own uid, so objects it already created (carrying
        its uid in the restore annotation) would not conflict; a missing snapshot denies."""
        # VirtualMachineRestore is the restore API of platforms up to v1.8.
        v1_8 = Engine(PolicyConfig.model_validate({"platformVersion": "1.8"}))
        report = run([o.restore("r1", snapshot="missing")], given=["VirtualMachineSnapshot"], engine=v1_8)
        (result,) = report.results
        assert [v.rule for v in result.decision.violations] == ["vmr-snapshot-exists"]
        assert result.object.uid == "uid-r1"

    def test_disk_from_snapshot_is_decided_while_provisioning(self) -> None:
        """A VirtualDisk created from a snapshot that is still Pending is decided; the
        snapshot it names is gone, so vd-snapshot-exists denies."""
        items = [o.disk_from_snapshot("restored", "gone-snap")]
        report = run(items, given=["VirtualDiskSnapshot"])
        (result,) = report.results
        assert result.kind == "VirtualDisk"
        assert "vd-snapshot-exists" in [v.rule for v in result.decision.violations]

    @pytest.mark.parametrize("phase", ["Ready", "Failed", "Resizing", "PVCLost"])
    def test_provisioned_disk_is_not_re_decided(self, phase: str) -> None:
        """A disk that was provisioned once may outlive its snapshot: not decided."""
        items = [o.disk_from_snapshot("restored", "gone-snap", phase=phase)]
        assert run(items, given=["VirtualDiskSnapshot"]).results == ()

    def test_disk_not_from_snapshot_is_ignored(self) -> None:
        """Only disks whose dataSource is a VirtualDiskSnapshot are audited."""
        assert run([o.disk("plain", phase="Pending")]).results == ()

    def test_exempt_namespace_is_counted_as_skipped(self) -> None:
        """An unfinished object in an exempt namespace is not decided, only counted."""
        engine = Engine(PolicyConfig(exempt_namespaces=("ns1",)))
        report = run([o.disk_snapshot("s", phase="Pending")], engine=engine)
        assert report.results == () and report.summary.skipped == 1


class TestStuck:
    @pytest.mark.parametrize(
        ("created", "stuck"),
        [
            ("2025-06-01T11:31:00Z", False),  # 29 minutes old
            ("2025-06-01T11:30:00Z", False),  # exactly 30 minutes: not longer than
            ("2025-06-01T11:29:00Z", True),  # 31 minutes
            ("2025-05-30T09:00:00Z", True),  # two days
        ],
    )
    def test_stuck_by_creation_time(self, created: str, stuck: bool) -> None:
        """Pending for longer than stuck_after, by creationTimestamp against `now`."""
        report = run([*CLASSES, *o.healthy_namespace(), o.disk_snapshot("s", phase="Pending", created=created)])
        assert (findings(report) == [("VirtualDiskSnapshot", "s", SNAPSHOT_STUCK)]) is stuck
        if not stuck:
            assert [(c.rule, c.outcome) for c in report.checks] == [(SNAPSHOT_STUCK, Outcome.PASS)]

    def test_stuck_message_says_how_long_and_what_to_do(self) -> None:
        """The message gives the age, the threshold, the platform's recorded reason and
        what to do."""
        item = o.machine_snapshot(
            "vms", phase="InProgress", created="2025-06-01T10:00:00Z",
            conditions=[o.condition("VirtualMachineSnapshotReady", "False", "Snapshotting",
                                    "Waiting for the virtual disk snapshots (0/1).")])
        report = run([*CLASSES, *o.healthy_namespace(), item])
        (finding,) = report.findings
        assert finding.rule == SNAPSHOT_STUCK
        assert "InProgress for 2h" in finding.message and "longer than 30m" in finding.message
        assert "Snapshotting: Waiting for the virtual disk snapshots (0/1)" in finding.message
        assert "delete it and create it again" in finding.message

    def test_stuck_and_denied_points_at_the_result(self) -> None:
        """A stuck snapshot that would be denied now names the rules that deny it."""
        items = [*CLASSES, o.disk("d1", vm="vm1"), o.pvc("pvc-d1"), o.vm("vm1", agent=False),
                 o.disk_snapshot("s", phase="Pending", created="2025-06-01T08:00:00Z")]
        (finding,) = run(items).findings
        assert "would be denied if created now (vds-consistency)" in finding.message

    def test_no_creation_time_cannot_be_decided(self) -> None:
        """Without a creationTimestamp the stuck check is unknown, not a pass."""
        report = run([*CLASSES, *o.healthy_namespace(), o.disk_snapshot("s", phase="Pending", created=None)])
        assert report.findings == ()
        assert [(c.rule, c.outcome) for c in report.checks] == [(SNAPSHOT_STUCK, Outcome.UNKNOWN)]

    def test_restores_are_not_stuck_snapshots(self) -> None:
        """snapshot-stuck is about snapshots; an old Pending restore is only decided."""
        item = o.restore("r1")
        item["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
        report = run([item], given=["VirtualMachineSnapshot"])
        assert report.findings == () and len(report.results) == 1


class TestFailed:
    def test_failed_disk_snapshot_reports_the_platforms_reason(self) -> None:
        """The reason and message of VirtualDiskSnapshotReady are in the finding."""
        item = o.disk_snapshot("f", phase="Failed", conditions=[
            o.condition("VirtualDiskSnapshotReady", "False", "PotentiallyInconsistent",
                        'Cannot take a consistent snapshot of virtual disk "d1".')])
        (finding,) = run([item]).findings
        assert (finding.rule, finding.reason) == (SNAPSHOT_FAILED, "PotentiallyInconsistent")
        assert 'failed: PotentiallyInconsistent: Cannot take a consistent snapshot of virtual disk "d1"' in finding.message
        assert "delete it and create it again" in finding.message

    def test_failed_as_lost_says_take_a_new_snapshot(self) -> None:
        """A snapshot the platform failed with reason Lost cannot be fixed: take a new one."""
        item = o.machine_snapshot("m", phase="Failed", conditions=[
            o.condition("VirtualMachineSnapshotReady", "False", "VirtualDiskSnapshotLost",
                        "The underlying virtual disk snapshot (vds-1) is lost.")])
        (finding,) = run([item]).findings
        assert finding.rule == SNAPSHOT_FAILED and finding.reason == "VirtualDiskSnapshotLost"
        assert "take a new snapshot" in finding.message

    def test_failed_without_a_condition(self) -> None:
        """No recorded condition is said so, not invented."""
        (finding,) = run([o.disk_snapshot("f", phase="Failed")]).findings
        assert "recorded no reason" in finding.message

    def test_failed_restore(self) -> None:
        """A Failed restore is restore-failed, with its VirtualMachineRestoreReady reason."""
        item = o.restore("r1", phase="Failed", conditions=[
            o.condition("VirtualMachineRestoreReady", "False", "VirtualMachineRestoreConflict",
                        'The virtual disk "d1" already exists.')])
        report = run([item])
        (finding,) = report.findings
        assert (finding.kind, finding.rule, finding.reason) == (
            "VirtualMachineRestore", RESTORE_FAILED, "VirtualMachineRestoreConflict")
        assert 'VirtualMachineRestoreConflict: The virtual disk "d1" already exists' in finding.message
        assert "delete it, fix the cause and create it again" in finding.message
        assert report.results == ()

    def test_ready_restore_passes(self) -> None:
        """A Ready restore is recorded as a passed restore-failed check."""
        report = run([o.restore("r1", phase="Ready")])
        assert report.findings == ()
        assert [(c.rule, c.outcome) for c in report.checks] == [(RESTORE_FAILED, Outcome.PASS)]


class TestLost:
    def test_volume_snapshot_gone(self) -> None:
        """A Ready VirtualDiskSnapshot whose VolumeSnapshot is gone is lost."""
        report = run([o.disk_snapshot("s", volume_snapshot="vs-gone")], given=["VolumeSnapshot"])
        (finding,) = report.findings
        assert finding.rule == SNAPSHOT_LOST
        assert 'VolumeSnapshot "vs-gone" no longer exists' in finding.message
        assert "delete the snapshot and take a new one" in finding.message

    def test_volume_snapshot_not_ready_to_use(self) -> None:
        """A VolumeSnapshot that is no longer readyToUse makes the snapshot lost too, as
        the platform judges it."""
        items = [o.disk_snapshot("s", volume_snapshot="vs1"), o.volume_snapshot("vs1", ready=False)]
        (finding,) = run(items).findings
        assert "not ready to use" in finding.message

    def test_volume_snapshot_present_passes(self) -> None:
        """A Ready snapshot with its VolumeSnapshot is fine: no finding, a passed check."""
        report = run([o.disk_snapshot("s", volume_snapshot="vs1"), o.volume_snapshot("vs1")])
        assert report.findings == () and report.summary.failed is False
        assert [(c.rule, c.outcome) for c in report.checks] == [(SNAPSHOT_LOST, Outcome.PASS)]

    def test_no_volume_snapshots_given_is_a_note_not_a_finding(self) -> None:
        """Without VolumeSnapshots in the view, "gone" cannot be decided: no finding, an
        unknown check, and a note saying what to add."""
        report = run([o.disk_snapshot("s", volume_snapshot="vs1")])
        assert report.findings == ()
        assert [(c.rule, c.outcome) for c in report.checks] == [(SNAPSHOT_LOST, Outcome.UNKNOWN)]
        (note,) = report.notes
        assert "snapshot-lost was not checked for 1 Ready VirtualDiskSnapshot" in note
        assert "VolumeSnapshot" in note

    def test_machine_snapshot_secret_gone(self) -> None:
        """A Ready VirtualMachineSnapshot whose Secret is gone is lost."""
        items = [o.machine_snapshot("m", secret="m-secret"), o.secret("other")]
        (finding,) = run(items).findings
        assert finding.rule == SNAPSHOT_LOST and 'Secret "m-secret" no longer exists' in finding.message
        assert 'take a new snapshot of virtual machine "vm1"' in finding.message

    def test_machine_snapshot_child_gone_or_failed(self) -> None:
        """A child VirtualDiskSnapshot that is gone, or Failed, makes it lost."""
        items = [
            o.machine_snapshot("m", secret="m-secret", children=("c1", "c2", "c3")),
            o.secret("m-secret", type_=o.SNAPSHOT_SECRET_TYPE),
            o.disk_snapshot("c1", volume_snapshot="vs1"),
            o.volume_snapshot("vs1"),
            o.disk_snapshot("c3", phase="Failed", conditions=[
                o.condition("VirtualDiskSnapshotReady", "False", "Lost", "gone")]),
        ]
        report = run(items)
        lost = [f for f in report.findings if f.kind == "VirtualMachineSnapshot"]
        (finding,) = lost
        assert 'virtual disk snapshot "c2" no longer exists' in finding.message
        assert '"c3" (reason Lost) is Failed' in finding.message
        # The failed child is reported on its own too.
        assert ("VirtualDiskSnapshot", "c3", SNAPSHOT_FAILED) in findings(report)

    def test_machine_snapshot_intact_passes(self) -> None:
        """Secret and children present: no finding."""
        items = [
            o.machine_snapshot("m", secret="m-secret", children=("c1",)),
            o.secret("m-secret", type_=o.SNAPSHOT_SECRET_TYPE),
            o.disk_snapshot("c1", volume_snapshot="vs1"),
            o.volume_snapshot("vs1"),
        ]
        assert run(items).findings == ()

    def test_machine_snapshot_without_secrets_given(self) -> None:
        """No Secret kind in the view: no lost finding for the Secret, and a note."""
        items = [o.machine_snapshot("m", secret="m-secret")]
        report = run(items)
        assert report.findings == ()
        assert any("no Secret objects" in note for note in report.notes)


class TestPreflight:
    def test_ready_vm(self) -> None:
        """A stopped VM with Ready disks on Bound PVCs can be snapshotted consistently."""
        report = run([*CLASSES, *o.healthy_namespace()], preflight=True)
        assert report.preflight is not None
        (entry,) = report.preflight
        assert (entry.namespace, entry.name, entry.ready) == ("ns1", "vm1", True)
        assert entry.violations == ()
        assert report.summary.preflight == 1 and report.summary.not_ready == 0

    def test_not_ready_vm_names_the_deny_rules(self) -> None:
        """A running VM without an agent whose disk is resizing is not ready, with the
        rule ids of each deny that fired."""
        resizing = o.disk("d2", vm="vm2", pvc="pvc-d2", phase="Resizing")
        items = [*CLASSES, resizing, o.pvc("pvc-d2"), o.vm("vm2", agent=False, disks=("d2",))]
        report = run(items, preflight=True)
        assert report.preflight is not None
        (entry,) = report.preflight
        assert entry.ready is False
        assert {v.rule for v in entry.violations} == {"vms-consistency", "vms-disk-resizing"}
        assert report.summary.not_ready == 1 and report.summary.failed

    def test_provisioning_secret_missing(self) -> None:
        """The preflight runs every vms-* rule: a missing provisioning Secret denies."""
        items = [*CLASSES, *o.healthy_namespace()[:2],
                 o.vm("vm1", phase="Stopped", disks=("d1",), provisioning_secret="cloud-init"),
                 o.secret("other")]
        report = run(items, preflight=True)
        assert report.preflight is not None
        assert [v.rule for v in report.preflight[0].violations] == ["vms-dependencies"]

    def test_no_preflight_unless_asked(self) -> None:
        """Without preflight the report has None (the JSON then has no key)."""
        assert run([*o.healthy_namespace()]).preflight is None


class TestScope:
    def test_namespaces_filter_everything(self) -> None:
        """Only the asked namespaces are audited: results, findings and preflight."""
        items = [
            *CLASSES,
            *o.healthy_namespace("ns1"),
            *o.healthy_namespace("ns2"),
            o.disk_snapshot("f1", "ns1", phase="Failed"),
            o.disk_snapshot("f2", "ns2", phase="Failed"),
        ]
        report = run(items, preflight=True, namespaces={"ns2"})
        assert [(f.namespace, f.name) for f in report.findings] == [("ns2", "f2")]
        assert report.preflight is not None
        assert [(e.namespace, e.name) for e in report.preflight] == [("ns2", "vm1")]

    def test_lists_are_read_lazily(self) -> None:
        """The audit asks the view for each kind's list and iterates it; it never asks
        for a kind's list twice (so a view may stream them)."""

        class CountingView(InMemoryView):
            calls: list[str]

            def list(self, model: type[Any], namespace: str | None = None) -> Iterator[Any]:
                self.calls.append(model.KIND)
                yield from super().list(model, namespace)

        view = CountingView(parse_object(item) for item in [*CLASSES, *o.healthy_namespace()])
        view.calls = []
        audit(Engine(), view, now=NOW, stuck_after=STUCK_AFTER, preflight=True, namespaces=None)
        counted = [k for k in view.calls if k in (
            "VirtualDiskSnapshot", "VirtualMachineSnapshot", "VirtualMachineRestore", "VirtualDisk", "VirtualMachine")]
        assert sorted(counted) == sorted(set(counted))


def test_summary_and_order() -> None:
    """Findings are sorted by namespace, kind and name; the summary counts them."""
    items = [o.disk_snapshot("b", phase="Failed"), o.disk_snapshot("a", phase="Failed"),
             o.restore("r", phase="Failed")]
    report = run(items)
    assert [(f.kind, f.name) for f in report.findings] == [
        ("VirtualDiskSnapshot", "a"), ("VirtualDiskSnapshot", "b"), ("VirtualMachineRestore", "r")]
    assert report.summary.findings == 3


def test_parse_timestamp() -> None:
    """RFC 3339 with Z or an offset; anything else is None."""
    assert parse_timestamp("2025-06-01T12:00:00Z") == NOW
    assert parse_timestamp("2025-06-01T14:00:00+02:00") == NOW
    assert parse_timestamp("yesterday") is None and parse_timestamp(None) is None
