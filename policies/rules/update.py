"""`spec-immutable`: snapshots and restores are idempotent resources (SPEC 2, "UPDATE
of any snapshot or restore"). Compares old and new spec as JSON values with the
platform-filled defaults set in both, so a client that omits a defaulted field (a
`kubectl apply` of the original manifest) is not mistaken for a change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import kinds
from ..catalogue import Finding, Operation, RuleContext, RuleRequest, rule
from ..defaults import with_spec_defaults


@rule(
    "spec-immutable",
    kinds=kinds.SNAPSHOT_KINDS,
    operations=(Operation.UPDATE,),
    summary="the spec of a snapshot or restore does not change after creation",
)
def spec_immutable(req: RuleRequest[Any], ctx: RuleContext) -> Iterator[Finding]:
    if req.old_raw is None:
        return
    kind = req.obj.KIND
    new_spec = with_spec_defaults(kind, req.raw.get("spec"))
    old_spec = with_spec_defaults(kind, req.old_raw.get("spec"))
    if new_spec != old_spec:
        changed = _changed_keys(old_spec, new_spec)
        yield Finding(
            f"{kind} is an idempotent resource: specification changes are not available "
            f"(changed: {changed}); create a new {kind} instead of editing \"{req.name}\"",
            "spec",
        )


def _changed_keys(old: Any, new: Any) -> str:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "spec"
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(f"spec.{k}" for k in keys) or "spec"
