"""Audits of what already exists (SPEC 3, "Audit"): the engine run over a view of a
cluster (a state dump or a live list) instead of one admission request.

Three parts, all read from one `ClusterView`:

* **results** — every VirtualDiskSnapshot, VirtualMachineSnapshot,
  VirtualMachineRestore, governed VirtualMachineOperation (Restore, Clone) and
  VirtualMachineSnapshotOperation that has not finished (phase empty, `Pending` or
  `InProgress`), and every VirtualDisk created from a snapshot that has not been
  provisioned yet, decided by the engine as if it were created now (a CREATE of the
  stored object);
* **findings** — facts about finished objects the platform will not fix by itself:
  `snapshot-lost`, `snapshot-failed`, `snapshot-stuck`, `restore-failed`,
  `operation-failed`;
* **preflight** (on request) — for each VirtualMachine, whether a consistent
  VirtualMachineSnapshot of it would be admitted now.

Lists of the view are iterated lazily, one object at a time; the report keeps small
records per audited object, never the objects themselves, so an audit of a 100,000-object
cluster holds the view plus a report, not a second copy of the cluster.

Pure: no I/O, no clock (the caller passes `now`), no environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from . import kinds
from .catalogue import Operation, Outcome
from .engine import Decision, Engine, EngineRequest, Violation
from .models import (
    KubeObject,
    Secret,
    VirtualDisk,
    VirtualDiskSnapshot,
    VirtualMachine,
    VirtualMachineOperation,
    VirtualMachineRestore,
    VirtualMachineSnapshot,
    VirtualMachineSnapshotOperation,
    VolumeSnapshot,
)
from .view import ClusterView

AUDIT_OPERATION = "AUDIT"

SNAPSHOT_LOST = "snapshot-lost"
SNAPSHOT_FAILED = "snapshot-failed"
SNAPSHOT_STUCK = "snapshot-stuck"
RESTORE_FAILED = "restore-failed"
OPERATION_FAILED = "operation-failed"


@dataclass(frozen=True)
class FindingRule:
    """A finding id as data, like the admission rules in the catalogue, so the CLI, the
    SARIF rules table, the PolicyReports and the docs describe it from one place."""

    id: str
    summary: str
    # PolicyReport severity (wgpolicyk8s.io: critical, high, medium, low, info).
    severity: str


FINDING_RULES: dict[str, FindingRule] = {
    rule.id: rule
    for rule in (
        FindingRule(
            SNAPSHOT_LOST,
            "a Ready snapshot whose data is gone: a VirtualDiskSnapshot whose VolumeSnapshot "
            "is missing or not ready to use, or a VirtualMachineSnapshot whose Secret or a "
            "VirtualDiskSnapshot is missing or failed",
            "high",
        ),
        FindingRule(
            SNAPSHOT_FAILED,
            "a VirtualDiskSnapshot or VirtualMachineSnapshot in phase Failed, with the reason "
            "the platform recorded",
            "medium",
        ),
        FindingRule(
            SNAPSHOT_STUCK,
            "a snapshot, restore operation or snapshot operation Pending or InProgress for "
            "longer than --stuck-after since its creation",
            "medium",
        ),
        FindingRule(
            RESTORE_FAILED,
            "a VirtualMachineRestore in phase Failed, with the reason the platform recorded",
            "medium",
        ),
        FindingRule(
            OPERATION_FAILED,
            "a VirtualMachineOperation of type Restore or Clone, or a "
            "VirtualMachineSnapshotOperation, in phase Failed, with the reason the platform "
            "recorded and each failed item of status.resources",
            "medium",
        ),
    )
}

# Phases in which a snapshot or restore has not finished (SPEC 3: empty, Pending,
# InProgress). Ready, Failed and Terminating are final for an audit.
UNFINISHED_PHASES = frozenset({"", "Pending", "InProgress"})
# Phases of a VirtualDisk that has not been provisioned yet. A disk that reached Ready
# once and is now Resizing, Migrating, Exporting or PVCLost was created long ago: its
# source snapshot may have been deleted since, as it may, so it is not re-decided.
DISK_PROVISIONING_PHASES = frozenset(
    {"", "Pending", "Provisioning", "WaitForFirstConsumer", "WaitForUserUpload"}
)

# The condition the platform records a snapshot's or restore's outcome in.
READY_CONDITION = {
    kinds.VIRTUAL_DISK_SNAPSHOT: "VirtualDiskSnapshotReady",
    kinds.VIRTUAL_MACHINE_SNAPSHOT: "VirtualMachineSnapshotReady",
    kinds.VIRTUAL_MACHINE_RESTORE: "VirtualMachineRestoreReady",
    kinds.VIRTUAL_MACHINE_OPERATION: "Completed",
    kinds.VIRTUAL_MACHINE_SNAPSHOT_OPERATION: "Completed",
}
# Reasons that mean the snapshot's data is gone (VDS: `Lost`, VMS:
# `VirtualDiskSnapshotLost`): such a Failed snapshot can never be used again.
LOST_REASONS = frozenset({"Lost", "VolumeSnapshotLost", "VirtualDiskSnapshotLost"})

# The name of the VirtualMachineSnapshot a preflight decides: never created, it only has
# to be a valid name; rules name the VM in their messages, not the snapshot.
PREFLIGHT_SNAPSHOT_SUFFIX = "-snapguard-preflight"


@dataclass(frozen=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str
    uid: str = ""

    @property
    def api_version(self) -> str:
        info = kinds.kind_info(self.kind)
        return info.api_version if info else kinds.API_VERSION


def _key(obj: KubeObject) -> ObjectKey:
    return ObjectKey(obj.KIND or obj.kind, obj.namespace, obj.name, obj.metadata.uid or "")


@dataclass(frozen=True)
class _AboutObject:
    """An entry of the report about one object."""

    object: ObjectKey

    @property
    def kind(self) -> str:
        return self.object.kind

    @property
    def namespace(self) -> str:
        return self.object.namespace

    @property
    def name(self) -> str:
        return self.object.name


@dataclass(frozen=True)
class AuditResult(_AboutObject):
    """An unfinished object decided as if it were created now."""

    decision: Decision


@dataclass(frozen=True)
class AuditFinding(_AboutObject):
    """Something wrong with an existing object, and what to do about it."""

    rule: str
    message: str
    # The reason the platform recorded, when the finding is about a Failed object.
    reason: str = ""


@dataclass(frozen=True)
class AuditCheck:
    """A finding check that ran on an object and did not fire (`pass`), or could not be
    decided for want of a kind in the view (`unknown`). Reports list them; the JSON
    output only counts findings."""

    object: ObjectKey
    rule: str
    outcome: Outcome
    message: str = ""


@dataclass(frozen=True)
class PreflightEntry(_AboutObject):
    """Whether a consistent VirtualMachineSnapshot of a VM would be admitted now."""

    decision: Decision

    @property
    def ready(self) -> bool:
        return self.decision.allowed

    @property
    def violations(self) -> tuple[Violation, ...]:
        return self.decision.violations

    @property
    def warnings(self) -> tuple[Violation, ...]:
        return self.decision.warnings


@dataclass(frozen=True)
class AuditSummary:
    results: int = 0
    denied: int = 0
    warned: int = 0
    # Unfinished objects in namespaces the policy exempts: not decided.
    skipped: int = 0
    findings: int = 0
    preflight: int = 0
    not_ready: int = 0

    @property
    def failed(self) -> bool:
        """SPEC 3: exit 1 when a result is denied, a finding exists or a preflight entry
        is not ready."""
        return bool(self.denied or self.findings or self.not_ready)


@dataclass(frozen=True)
class AuditReport:
    results: tuple[AuditResult, ...] = ()
    findings: tuple[AuditFinding, ...] = ()
    checks: tuple[AuditCheck, ...] = ()
    # None when no preflight was asked for; () when asked and there is no VM.
    preflight: tuple[PreflightEntry, ...] | None = None
    # What the audit could not look at, one sentence each (e.g. a kind the view lacks).
    notes: tuple[str, ...] = ()
    summary: AuditSummary = field(default_factory=AuditSummary)


T = TypeVar("T", bound=KubeObject)


def _objects(view: ClusterView, model: type[T], namespaces: set[str] | None) -> Iterator[T]:
    """The view's objects of a kind, lazily, in the namespaces asked for (None: all)."""
    if namespaces is None:
        yield from view.list(model)
        return
    for namespace in sorted(namespaces):
        yield from view.list(model, namespace)


def _order(key: ObjectKey) -> tuple[str, str, str]:
    return (key.namespace, key.kind, key.name)


def _short(kind: str) -> str:
    info = kinds.kind_info(kind)
    return info.short if info and info.short else kind.lower()


def _duration(delta: timedelta) -> str:
    """A duration as people and `--stuck-after` write it: 2h5m, 45m, 1d3h, 30s."""
    seconds = max(int(delta.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    while parts and not parts[0][0]:
        parts.pop(0)
    # The two most significant units: "2d3h", not "2d3h4m5s".
    text = "".join(f"{value}{unit}" for value, unit in parts[:2] if value)
    return text or "0s"


def parse_timestamp(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it (`2025-01-02T03:04:05Z`)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _recorded(obj: KubeObject) -> tuple[str, str]:
    """(reason, message) of the condition the platform records the outcome in."""
    condition = obj.condition(READY_CONDITION.get(obj.KIND, ""))
    if condition is None:
        return "", ""
    return condition.reason or "", (condition.message or "").strip()


def _recorded_text(obj: KubeObject) -> str:
    reason, message = _recorded(obj)
    condition = READY_CONDITION.get(obj.KIND, "ready")
    if not reason and not message:
        return f"the platform recorded no reason (no {condition} condition)"
    if not message:
        return f"reason {reason}"
    return f"{reason}: {message.rstrip('.')}" if reason else message.rstrip(".")


# --- the audit ---------------------------------------------------------------------


class _Auditor:
    def __init__(
        self,
        engine: Engine,
        view: ClusterView,
        *,
        now: datetime,
        stuck_after: timedelta,
        namespaces: set[str] | None,
    ) -> None:
        self.engine = engine
        self.view = view
        self.now = now if now.tzinfo else now.replace(tzinfo=UTC)
        self.stuck_after = stuck_after
        self.namespaces = namespaces
        self.results: list[AuditResult] = []
        self.findings: list[AuditFinding] = []
        self.checks: list[AuditCheck] = []
        self.skipped = 0
        # rule id -> (kind of the object, kind the view lacked) -> objects not checked
        self.undecided: dict[tuple[str, str, str], int] = {}

    # --- recording ---------------------------------------------------------------------

    def finding(self, obj: KubeObject, rule: str, message: str, reason: str = "") -> None:
        self.findings.append(AuditFinding(_key(obj), rule, message, reason))

    def passed(self, obj: KubeObject, rule: str) -> None:
        self.checks.append(AuditCheck(_key(obj), rule, Outcome.PASS))

    def cannot_decide(self, obj: KubeObject, rule: str, missing: str) -> None:
        self.checks.append(
            AuditCheck(
                _key(obj),
                rule,
                Outcome.UNKNOWN,
                f"cannot be decided: the view holds no {missing} objects; add them to the "
                f"state (an empty {missing}List counts)",
            )
        )
        counter = (rule, obj.KIND, missing)
        self.undecided[counter] = self.undecided.get(counter, 0) + 1

    def decide(self, obj: KubeObject) -> Decision | None:
        """The stored object decided as a CREATE now; None when no rule governs it."""
        request = EngineRequest(
            Operation.CREATE,
            obj.KIND,
            obj.namespace,
            obj.name,
            obj.model_dump(mode="json", by_alias=True, exclude_none=True),
            uid=obj.metadata.uid or "",
        )
        decision = self.engine.decide(request, self.view)
        if not decision.governed:
            return None
        if decision.exempt:
            self.skipped += 1
            return None
        self.results.append(AuditResult(_key(obj), decision))
        return decision

    # --- snapshots and restores --------------------------------------------------------

    def audit_snapshot(self, obj: VirtualDiskSnapshot | VirtualMachineSnapshot) -> None:
        if obj.deleting:
            return  # Terminating: going away, nothing to decide or report
        phase = obj.phase
        if phase in UNFINISHED_PHASES:
            decision = self.decide(obj)
            self.check_stuck(obj, decision)
        elif phase == "Failed":
            self.snapshot_failed(obj)
        elif phase == "Ready":
            if isinstance(obj, VirtualDiskSnapshot):
                self.disk_snapshot_lost(obj)
            else:
                self.machine_snapshot_lost(obj)

    def check_stuck(self, obj: KubeObject, decision: Decision | None) -> None:
        created = parse_timestamp(obj.metadata.creation_timestamp)
        if created is None:
            self.checks.append(
                AuditCheck(
                    _key(obj),
                    SNAPSHOT_STUCK,
                    Outcome.UNKNOWN,
                    "cannot be decided: the object has no valid metadata.creationTimestamp",
                )
            )
            return
        age = self.now - created
        if age <= self.stuck_after:
            self.passed(obj, SNAPSHOT_STUCK)
            return
        phase = obj.phase or "without a phase"
        since = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        reason, message = _recorded(obj)
        state = ""
        if reason or message:
            state = f" (the platform says: {_recorded_text(obj)})"
        if decision is not None and not decision.allowed:
            why = (
                "it would be denied if created now ("
                + ", ".join(sorted({v.rule for v in decision.violations}))
                + "), see its result; fix that, then delete it and create it again"
            )
        else:
            why = (
                "check the platform's virtualization controller and the object's events "
                f"(kubectl describe {_short(obj.KIND)} -n {obj.namespace} {obj.name}), then "
                "delete it and create it again"
            )
        self.finding(
            obj,
            SNAPSHOT_STUCK,
            f'{obj.KIND} "{obj.name}" has been {phase} for {_duration(age)} (since {since}, '
            f"longer than {_duration(self.stuck_after)}){state}; {why}",
            reason,
        )

    def snapshot_failed(self, obj: VirtualDiskSnapshot | VirtualMachineSnapshot) -> None:
        reason, _ = _recorded(obj)
        if reason in LOST_REASONS:
            advice = (
                "its data is gone and it cannot be used again: delete it and take a new snapshot"
            )
        else:
            advice = (
                "a failed snapshot stays Failed: fix the cause, then delete it and create it again"
            )
        self.finding(
            obj,
            SNAPSHOT_FAILED,
            f'{obj.KIND} "{obj.name}" failed: {_recorded_text(obj)}; {advice}',
            reason,
        )

    def disk_snapshot_lost(self, obj: VirtualDiskSnapshot) -> None:
        if not self.view.has_kind(kinds.VOLUME_SNAPSHOT):
            self.cannot_decide(obj, SNAPSHOT_LOST, kinds.VOLUME_SNAPSHOT)
            return
        name = obj.status.volume_snapshot_name
        volume = self.view.get(VolumeSnapshot, obj.namespace, name) if name else None
        advice = (
            "restoring from it will fail; delete the snapshot and take a new one (the platform "
            "marks it Failed with reason Lost on its next reconcile)"
        )
        if not name:
            problem = "records no VolumeSnapshot (status.volumeSnapshotName is empty)"
        elif volume is None:
            problem = f'its VolumeSnapshot "{name}" no longer exists'
        elif volume.status.ready_to_use is False:
            problem = f'its VolumeSnapshot "{name}" is not ready to use (status.readyToUse is false)'
        else:
            self.passed(obj, SNAPSHOT_LOST)
            return
        self.finding(
            obj,
            SNAPSHOT_LOST,
            f'VirtualDiskSnapshot "{obj.name}" is Ready but {problem}: the disk data it held is '
            f"gone and {advice}",
        )

    def machine_snapshot_lost(self, obj: VirtualMachineSnapshot) -> None:
        problems: list[str] = []
        missing_kinds: list[str] = []
        if self.view.has_kind(kinds.SECRET):
            secret = obj.status.virtual_machine_snapshot_secret_name
            if not secret:
                problems.append(
                    "it records no snapshot Secret (status.virtualMachineSnapshotSecretName is empty)"
                )
            elif self.view.get(Secret, obj.namespace, secret) is None:
                problems.append(f'its snapshot Secret "{secret}" no longer exists')
        else:
            missing_kinds.append(kinds.SECRET)
        names = obj.status.virtual_disk_snapshot_names
        if names and not self.view.has_kind(kinds.VIRTUAL_DISK_SNAPSHOT):
            missing_kinds.append(kinds.VIRTUAL_DISK_SNAPSHOT)
        elif names:
            gone: list[str] = []
            failed: list[str] = []
            for name in names:
                child = self.view.get(VirtualDiskSnapshot, obj.namespace, name)
                if child is None:
                    gone.append(name)
                elif child.phase == "Failed":
                    reason, _ = _recorded(child)
                    failed.append(f'"{name}"' + (f" (reason {reason})" if reason else ""))
            if gone:
                quoted = ", ".join(f'"{n}"' for n in gone)
                verb = "no longer exists" if len(gone) == 1 else "no longer exist"
                noun = "snapshot" if len(gone) == 1 else "snapshots"
                problems.append(f"its virtual disk {noun} {quoted} {verb}")
            if failed:
                noun = "snapshot" if len(failed) == 1 else "snapshots"
                verb = "is" if len(failed) == 1 else "are"
                problems.append(f"its virtual disk {noun} {', '.join(failed)} {verb} Failed")
        if problems:
            self.finding(
                obj,
                SNAPSHOT_LOST,
                f'VirtualMachineSnapshot "{obj.name}" is Ready but {"; ".join(problems)}: the '
                "snapshot cannot be restored any more; delete it and take a new snapshot of "
                f'virtual machine "{obj.spec.virtual_machine_name or "?"}"',
            )
            return
        if missing_kinds:
            # Nothing found, but part of the check could not run.
            self.cannot_decide(obj, SNAPSHOT_LOST, missing_kinds[0])
            return
        self.passed(obj, SNAPSHOT_LOST)

    def audit_restore(self, obj: VirtualMachineRestore) -> None:
        if obj.deleting:
            return
        phase = obj.phase
        if phase in UNFINISHED_PHASES:
            self.decide(obj)
        elif phase == "Failed":
            reason, _ = _recorded(obj)
            self.finding(
                obj,
                RESTORE_FAILED,
                f'VirtualMachineRestore "{obj.name}" failed: {_recorded_text(obj)}; a failed '
                "restore does not resume: delete it, fix the cause and create it again (from "
                "platform v1.9 restore with a VirtualMachineOperation of type Restore)",
                reason,
            )
        elif phase == "Ready":
            self.passed(obj, RESTORE_FAILED)

    def audit_operation(self, obj: VirtualMachineOperation | VirtualMachineSnapshotOperation) -> None:
        if obj.deleting or obj.phase == "Terminating":
            return
        if isinstance(obj, VirtualMachineOperation) and obj.spec.type not in kinds.GOVERNED_OPERATION_TYPES:
            return  # Start, Stop, Migrate...: not the product's business
        phase = obj.phase
        if phase in UNFINISHED_PHASES:
            decision = self.decide(obj)
            self.check_stuck(obj, decision)
        elif phase == "Failed":
            self.operation_failed(obj)
        elif phase == "Completed":
            self.passed(obj, OPERATION_FAILED)

    def operation_failed(self, obj: VirtualMachineOperation | VirtualMachineSnapshotOperation) -> None:
        reason, _ = _recorded(obj)
        if isinstance(obj, VirtualMachineOperation):
            what = f'{obj.spec.type} of virtual machine "{obj.spec.virtual_machine_name or "?"}"'
        else:
            what = f'{obj.spec.type or "operation"} from snapshot "{obj.snapshot_name or "?"}"'
        failed = [
            f'{item.kind or "?"} "{item.name or "?"}"'
            + (f": {item.message.strip().rstrip('.')}" if item.message and item.message.strip() else "")
            for item in obj.status.resources
            if item.status == "Failed"
        ]
        items = f"; failed resources: {'; '.join(failed)}" if failed else ""
        self.finding(
            obj,
            OPERATION_FAILED,
            f'{obj.KIND} "{obj.name}" ({what}) failed: {_recorded_text(obj)}{items}; a failed '
            "operation does not resume: fix the cause, delete it and create a new one (mode "
            "DryRun reports every problem without changing anything)",
            reason,
        )

    def audit_disk(self, obj: VirtualDisk) -> None:
        if obj.snapshot_source is None or obj.deleting:
            return
        if obj.phase in DISK_PROVISIONING_PHASES:
            self.decide(obj)

    # --- preflight ---------------------------------------------------------------------

    def preflight(self, vm: VirtualMachine) -> PreflightEntry:
        name = vm.name[: 253 - len(PREFLIGHT_SNAPSHOT_SUFFIX)] + PREFLIGHT_SNAPSHOT_SUFFIX
        snapshot: dict[str, Any] = {
            "apiVersion": kinds.API_VERSION,
            "kind": kinds.VIRTUAL_MACHINE_SNAPSHOT,
            "metadata": {"name": name, "namespace": vm.namespace},
            "spec": {
                "virtualMachineName": vm.name,
                "requiredConsistency": True,
                "keepIPAddress": "Always",
            },
        }
        request = EngineRequest(
            Operation.CREATE, kinds.VIRTUAL_MACHINE_SNAPSHOT, vm.namespace, name, snapshot
        )
        return PreflightEntry(_key(vm), self.engine.decide(request, self.view))

    # --- notes -------------------------------------------------------------------------

    def notes(self) -> list[str]:
        notes: list[str] = []
        for (rule, kind, missing), count in sorted(self.undecided.items()):
            noun = kind if count == 1 else f"{kind}s"
            notes.append(
                f"{rule} was not checked for {count} Ready {noun}: the view holds no {missing} "
                f"objects (add a {missing}List to the state, even an empty one, or list them "
                "from the cluster)"
            )
        return notes


def audit(
    engine: Engine,
    view: ClusterView,
    *,
    now: datetime,
    stuck_after: timedelta,
    preflight: bool,
    namespaces: set[str] | None,
) -> AuditReport:
    """Audit the view's snapshots, restores, restore and snapshot operations and disks
    from snapshots (and with
    `preflight`, its virtual machines) in `namespaces` (None: every namespace)."""
    auditor = _Auditor(engine, view, now=now, stuck_after=stuck_after, namespaces=namespaces)
    disk_snapshots: Iterable[VirtualDiskSnapshot] = _objects(view, VirtualDiskSnapshot, namespaces)
    for disk_snapshot in disk_snapshots:
        auditor.audit_snapshot(disk_snapshot)
    for machine_snapshot in _objects(view, VirtualMachineSnapshot, namespaces):
        auditor.audit_snapshot(machine_snapshot)
    for restore in _objects(view, VirtualMachineRestore, namespaces):
        auditor.audit_restore(restore)
    for operation in _objects(view, VirtualMachineOperation, namespaces):
        auditor.audit_operation(operation)
    for snapshot_operation in _objects(view, VirtualMachineSnapshotOperation, namespaces):
        auditor.audit_operation(snapshot_operation)
    for disk in _objects(view, VirtualDisk, namespaces):
        auditor.audit_disk(disk)
    entries: list[PreflightEntry] | None = None
    if preflight:
        entries = [auditor.preflight(vm) for vm in _objects(view, VirtualMachine, namespaces)]
        entries.sort(key=lambda entry: (entry.namespace, entry.name))

    results = sorted(auditor.results, key=lambda r: _order(r.object))
    findings = sorted(auditor.findings, key=lambda f: (*_order(f.object), f.rule))
    checks = sorted(auditor.checks, key=lambda c: (*_order(c.object), c.rule))
    summary = AuditSummary(
        results=len(results),
        denied=sum(1 for r in results if not r.decision.allowed),
        warned=sum(1 for r in results if r.decision.warnings),
        skipped=auditor.skipped,
        findings=len(findings),
        preflight=len(entries) if entries is not None else 0,
        not_ready=sum(1 for e in entries if not e.ready) if entries is not None else 0,
    )
    return AuditReport(
        results=tuple(results),
        findings=tuple(findings),
        checks=tuple(checks),
        preflight=tuple(entries) if entries is not None else None,
        notes=tuple(auditor.notes()),
        summary=summary,
    )

