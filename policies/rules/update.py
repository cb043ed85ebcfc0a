"""`spec-immutable`: snapshots and restores are idempotent resources (SPEC 2, "UPDATE
of any snapshot or restore"). Compares old and new spec as JSON values with the
platform-filled defaults set in both, so a client that omits a defaulted field (a
`kubectl replace` of the original manifest) is not mistaken for a change.

"As JSON values" is meant strictly: `true` and `1` differ (Python's `True == 1` must not
hide a change), `1` and `1.0` are the same number, and a member whose value is null
counts as absent (the API server prunes nulls of these CRDs' non-nullable fields before
anything compares them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import kinds
from ..catalogue import Finding, Operation, RuleContext, RuleRequest, rule
from ..defaults import with_spec_defaults
from ..models import KubeObject, VirtualMachineOperation


def _governed(obj: KubeObject) -> bool:
    """Snapshots, restores, vmsops, and vmops of type Restore or Clone."""
    if isinstance(obj, VirtualMachineOperation):
        return obj.spec.type in kinds.GOVERNED_OPERATION_TYPES
    return True


@rule(
    "spec-immutable",
    kinds=(*kinds.SNAPSHOT_KINDS, *kinds.OPERATION_KINDS),
    operations=(Operation.UPDATE,),
    applies=_governed,
    summary="the spec of a snapshot, restore or restore operation does not change after creation",
)
def spec_immutable(req: RuleRequest[Any], ctx: RuleContext) -> Iterator[Finding]:
    if req.old_raw is None:
        return
    kind = req.obj.KIND
    new_spec = _filled_spec(kind, req.raw.get("spec"))
    old_spec = _filled_spec(kind, req.old_raw.get("spec"))
    if same_json(new_spec, old_spec):
        return
    changed = _changed_keys(old_spec, new_spec)
    if kind in kinds.OPERATION_KINDS:
        # The CRD's CEL rule `self == oldSelf` and its message (OP-A1).
        yield Finding(
            f".spec is immutable (changed: {changed}); create a new {kind} instead of editing "
            f'"{req.name}"',
            "spec",
        )
        return
    yield Finding(
        f"{kind} is an idempotent resource: specification changes are not available "
        f"(changed: {changed}); create a new {kind} instead of editing \"{req.name}\"",
        "spec",
    )


def _filled_spec(kind: str, spec: Any) -> Any:
    # An absent or null spec is an empty one: the defaults fill it like any other.
    return with_spec_defaults(kind, {} if spec is None else spec)


def same_json(a: Any, b: Any) -> bool:
    """Equality of two JSON values: bool is not a number, a null member is absent."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        keys = {k for k, v in a.items() if v is not None} | {k for k, v in b.items() if v is not None}
        return all(same_json(a.get(k), b.get(k)) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _changed_keys(old: Any, new: Any) -> str:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "spec"
    keys = sorted(
        str(k) for k in old.keys() | new.keys() if not same_json(old.get(k), new.get(k))
    )
    return ", ".join(f"spec.{k}" for k in keys) or "spec"
