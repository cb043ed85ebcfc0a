"""What holds for every rule of the operations table, beyond each rule's own cases:
DryRun turns every deny into a warning (but op-spec-valid's), the unfinished-operation
indexes follow phase changes, and Start/Stop operations are not governed."""

from __future__ import annotations

import copy
import shutil
from typing import Any

import pytest
import yaml

from policies import kinds
from policies.catalogue import CATALOGUE, Action, Operation, Outcome
from policies.engine import Engine, EngineRequest
from policies.models import VirtualMachineOperation, VirtualMachineSnapshotOperation, parse_object
from policies.view import InMemoryView
from tests.casefiles import Case, all_cases, decide_case

OPERATION_CASES = [
    c
    for c in all_cases()
    if c.expected["outcome"] == "fail"
    and c.expected.get("action", "deny") == "deny"
    and "platformVersion" not in c.expected
    and CATALOGUE[c.rule].dry_run_warns
    and CATALOGUE[c.rule].default_action is Action.DENY
]


def _mode_holder(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    for key in ("restore", "clone", "createVirtualMachine"):
        if isinstance(spec.get(key), dict):
            holder: dict[str, Any] = spec[key]
            return holder
    return None


@pytest.mark.parametrize("case", OPERATION_CASES, ids=[c.id for c in OPERATION_CASES])
def test_dry_run_turns_each_deny_into_a_warning(case: Case, tmp_path: Any) -> None:
    """Every case in which an operation rule denies is, in mode DryRun, the same finding
    (same id, same message) as a warning."""
    folder = tmp_path / case.rule / case.name
    shutil.copytree(case.path, folder)
    obj = yaml.safe_load((folder / "object.yaml").read_text())
    holder = _mode_holder(obj)
    if holder is None or holder.get("mode") == "DryRun":
        pytest.skip("the case's object has no mode to set (or is DryRun already)")
    strict, _ = decide_case(case)
    holder["mode"] = "DryRun"
    (folder / "object.yaml").write_text(yaml.safe_dump(obj))
    dry, _ = decide_case(Case(case.rule, case.name, folder, case.expected))
    denied = [v for v in strict.violations if v.rule == case.rule]
    warned = [v for v in dry.warnings if v.rule == case.rule]
    assert denied and [v.message for v in warned] == [v.message for v in denied]
    assert all(v.action is Action.WARN for v in warned)
    assert not [v for v in dry.violations if CATALOGUE[v.rule].dry_run_warns]


def test_dry_run_cases_cover_every_operation_rule() -> None:
    """Each rule of the table that can deny has a case the DryRun test turns into a warning."""
    table = {r.id for r in CATALOGUE.values() if r.dry_run_warns and r.default_action is Action.DENY}
    assert table <= {c.rule for c in OPERATION_CASES}


def _vmop(name: str, phase: str, vm: str = "vm1", type_: str = "Restore") -> VirtualMachineOperation:
    obj = parse_object(
        {
            "apiVersion": kinds.API_VERSION,
            "kind": kinds.VIRTUAL_MACHINE_OPERATION,
            "metadata": {"name": name, "namespace": "ns1"},
            "spec": {"type": type_, "virtualMachineName": vm},
            "status": {"phase": phase},
        }
    )
    assert isinstance(obj, VirtualMachineOperation)
    return obj


class TestUnfinishedIndexes:
    def test_an_operation_leaves_the_index_when_it_finishes(self) -> None:
        """put() of the Completed version drops it; of an InProgress one adds it back."""
        view = InMemoryView([_vmop("op1", "InProgress")])
        assert [o.name for o in view.unfinished_operations_of_vm("ns1", "vm1")] == ["op1"]
        view.put(_vmop("op1", "Completed"))
        assert view.unfinished_operations_of_vm("ns1", "vm1") == []
        view.put(_vmop("op1", "Pending"))
        assert [o.name for o in view.unfinished_operations_of_vm("ns1", "vm1")] == ["op1"]
        view.remove(kinds.VIRTUAL_MACHINE_OPERATION, "ns1", "op1")
        assert view.unfinished_operations_of_vm("ns1", "vm1") == []

    def test_keyed_by_namespace_and_vm(self) -> None:
        view = InMemoryView([_vmop("a", "Pending", vm="vm1"), _vmop("b", "Pending", vm="vm2")])
        assert [o.name for o in view.unfinished_operations_of_vm("ns1", "vm2")] == ["b"]
        assert view.unfinished_operations_of_vm("ns2", "vm1") == []

    def test_snapshot_operations_by_snapshot(self) -> None:
        obj = parse_object(
            {
                "apiVersion": kinds.API_VERSION,
                "kind": kinds.VIRTUAL_MACHINE_SNAPSHOT_OPERATION,
                "metadata": {"name": "c1", "namespace": "ns1"},
                "spec": {"type": "CreateVirtualMachine", "virtualMachineSnapshotName": "snap1"},
            }
        )
        assert isinstance(obj, VirtualMachineSnapshotOperation)
        view = InMemoryView([obj])
        assert [o.name for o in view.unfinished_operations_of_snapshot("ns1", "snap1")] == ["c1"]


@pytest.mark.parametrize("type_", ["Start", "Stop", "Restart", "Migrate", "Evict"])
def test_other_operation_types_are_not_governed(type_: str) -> None:
    """Start/Stop/Restart/Migrate/Evict are skipped: no rule decides them."""
    raw = {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.VIRTUAL_MACHINE_OPERATION,
        "metadata": {"name": "op", "namespace": "ns1"},
        "spec": {"type": type_, "virtualMachineName": "vm1"},
    }
    for operation in (Operation.CREATE, Operation.UPDATE):
        old = copy.deepcopy(raw) if operation is Operation.UPDATE else None
        request = EngineRequest(operation, raw["kind"], "ns1", "op", raw, old)
        decision = Engine().decide(request, InMemoryView())
        assert not decision.governed and decision.allowed


def test_vmop_spec_change_is_refused_with_the_platform_message() -> None:
    """UPDATE of a governed operation's spec: `.spec is immutable`."""
    old = {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.VIRTUAL_MACHINE_OPERATION,
        "metadata": {"name": "op", "namespace": "ns1"},
        "spec": {"type": "Clone", "virtualMachineName": "vm1", "clone": {"mode": "Strict",
                                                                          "customization": {"namePrefix": "a-"}}},
    }
    new = copy.deepcopy(old)
    new["spec"]["clone"]["customization"]["namePrefix"] = "b-"
    decision = Engine().decide(EngineRequest(Operation.UPDATE, old["kind"], "ns1", "op", new, old), InMemoryView())
    (violation,) = decision.violations
    assert violation.rule == "spec-immutable" and violation.message.startswith(".spec is immutable")
    same = Engine().decide(EngineRequest(Operation.UPDATE, old["kind"], "ns1", "op", old, old), InMemoryView())
    assert same.allowed and all(r.outcome is Outcome.PASS for r in same.results)
