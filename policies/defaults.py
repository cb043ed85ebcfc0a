"""Defaults as explicit "add this path if it is absent" intents, turned into RFC 6902
operations against the raw request object.

Never diff a re-serialised model against the request: that invents removals of fields
the model does not know (controller-runtime needed a whole function to undo exactly
that). A present value is never changed; an object with every default gets no patch.

Pure: no I/O here.
"""

from __future__ import annotations

from typing import Any

from . import kinds

# kind -> (spec key, default value); SPEC section 2, Defaults.
DEFAULTS: dict[str, tuple[tuple[str, Any], ...]] = {
    kinds.VIRTUAL_DISK_SNAPSHOT: (("requiredConsistency", True),),
    kinds.VIRTUAL_MACHINE_SNAPSHOT: (("requiredConsistency", True), ("keepIPAddress", "Always")),
}

# Defaults the platform's CRDs fill; spec-immutable compares specs with them filled.
SPEC_DEFAULTS: dict[str, dict[str, Any]] = {
    kinds.VIRTUAL_DISK_SNAPSHOT: {"requiredConsistency": True},
    kinds.VIRTUAL_MACHINE_SNAPSHOT: {"requiredConsistency": True, "keepIPAddress": "Always"},
    kinds.VIRTUAL_MACHINE_RESTORE: {"restoreMode": "Safe"},
}


def _absent(spec: dict[str, Any], key: str) -> bool:
    # An explicit null is pruned and defaulted by the API server for these CRDs, so it
    # counts as absent; RFC 6902 `add` replaces an existing member.
    return spec.get(key) is None


def default_patch(kind: str, raw: Any) -> list[dict[str, Any]]:
    """RFC 6902 `add` operations for every absent defaulted field of `raw`."""
    defaults = DEFAULTS.get(kind)
    if not defaults or not isinstance(raw, dict):
        return []
    spec = raw.get("spec")
    if spec is None:
        return [{"op": "add", "path": "/spec", "value": dict(defaults)}]
    if not isinstance(spec, dict):
        return []  # not ours to repair: the API server rejects a non-object spec
    return [
        {"op": "add", "path": f"/spec/{key}", "value": value}
        for key, value in defaults
        if _absent(spec, key)
    ]


def with_spec_defaults(kind: str, spec: Any) -> Any:
    """`spec` with the platform-filled defaults of `kind` set where absent."""
    defaults = SPEC_DEFAULTS.get(kind)
    if not defaults or not isinstance(spec, dict):
        return spec
    filled = dict(spec)
    for key, value in defaults.items():
        if filled.get(key) is None:
            filled[key] = value
    return filled
