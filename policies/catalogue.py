"""The rule catalogue: every rule's id, kinds, operations, default action and summary,
kept as data next to the function that decides it.

A rule is a small generator function of (request, context) that yields `Finding`s: one
per thing that is wrong. The catalogue is what `snapguard rules` lists, what the policy
file configures and what the docs are generated from, so they cannot drift.

Pure: no I/O here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .models import KubeObject
from .platform import ALL_VERSIONS, DEFAULT, PlatformVersion, VersionRange
from .view import ClusterView


class Action(enum.StrEnum):
    DENY = "deny"
    WARN = "warn"
    AUDIT = "audit"
    OFF = "off"


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"
    ERROR = "error"
    SKIP = "skip"


class Operation(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    CONNECT = "CONNECT"


@dataclass(frozen=True)
class Finding:
    """One thing a rule found wrong: a message that names the object, says what is
    wrong and how to fix it, and the field of the request object it is about."""

    message: str
    field: str = ""


ObjT = TypeVar("ObjT", bound=KubeObject)


@dataclass(frozen=True)
class RuleRequest(Generic[ObjT]):
    """What a rule decides about: the parsed object (and the old one on UPDATE)."""

    operation: Operation
    namespace: str
    name: str
    obj: ObjT
    old: ObjT | None
    raw: dict[str, Any]
    old_raw: dict[str, Any] | None = None
    # The platform release the decision is made for (wording of outcomes, gates).
    platform: PlatformVersion = DEFAULT


class RuleContext:
    """A rule's access to the view, recording which kinds it needed and lacked.

    `needs(kind)` answers whether the view was given the kind; when it was not, the kind
    is recorded, and if the rule finds nothing else its outcome is `unknown` naming it.
    `shared(key, compute)` memoises work several rules of one decision need (the
    restored-object plan of a VirtualMachineRestore) together with the kinds it lacked.
    """

    __slots__ = ("_memo", "missing", "view")

    def __init__(self, view: ClusterView, memo: dict[str, tuple[Any, frozenset[str]]]) -> None:
        self.view = view
        self._memo = memo
        self.missing: set[str] = set()

    def needs(self, kind: str) -> bool:
        if self.view.has_kind(kind):
            return True
        self.missing.add(kind)
        return False

    def shared(self, key: str, compute: Callable[[RuleContext], Any]) -> Any:
        if key not in self._memo:
            inner = RuleContext(self.view, self._memo)
            self._memo[key] = (compute(inner), frozenset(inner.missing))
        value, missing = self._memo[key]
        self.missing.update(missing)
        return value


RuleFunction = Callable[[RuleRequest[Any], RuleContext], Iterator[Finding]]


@dataclass(frozen=True)
class Rule:
    id: str
    kinds: tuple[str, ...]
    operations: tuple[Operation, ...]
    default_action: Action
    summary: str
    check: RuleFunction = field(compare=False, repr=False)
    # Decides only objects this predicate accepts (e.g. VirtualDisks from a snapshot).
    applies: Callable[[KubeObject], bool] | None = field(default=None, compare=False, repr=False)
    # The platform releases the rule applies to (SPEC, "Platform versions").
    versions: VersionRange = ALL_VERSIONS
    # A default action that changes with the release: (from version, action), ascending;
    # before the first entry `default_action` holds.
    default_changes: tuple[tuple[PlatformVersion, Action], ...] = ()
    # A rule of the operations table: DryRun reports what it finds as a warning.
    dry_run_warns: bool = False
    # The object whose platform outcome a finding names ("snapshot": Failed from v1.3,
    # Pending forever before); empty when the rule's messages say it themselves.
    outcome_of: str = ""

    def default_for(self, version: PlatformVersion) -> Action:
        action = self.default_action
        for since, changed in self.default_changes:
            if version >= since:
                action = changed
        return action


CATALOGUE: dict[str, Rule] = {}


def rule(
    id: str,
    *,
    kinds: tuple[str, ...],
    operations: tuple[Operation, ...] = (Operation.CREATE,),
    default: Action = Action.DENY,
    summary: str,
    applies: Callable[[KubeObject], bool] | None = None,
    versions: VersionRange = ALL_VERSIONS,
    default_changes: tuple[tuple[PlatformVersion, Action], ...] = (),
    dry_run_warns: bool = False,
    outcome_of: str = "",
) -> Callable[[RuleFunction], RuleFunction]:
    """Register a rule function in the catalogue under a stable id."""

    def register(function: RuleFunction) -> RuleFunction:
        if id in CATALOGUE:
            raise ValueError(f"duplicate rule id {id}")
        CATALOGUE[id] = Rule(
            id,
            kinds,
            operations,
            default,
            summary,
            function,
            applies,
            versions,
            default_changes,
            dry_run_warns,
            outcome_of,
        )
        return function

    return register


@dataclass(frozen=True)
class ImpliedRequest:
    """An object a request makes the platform create, decided by that kind's rules: a
    vmop Clone first takes a VirtualMachineSnapshot of its VM. Only the rules in `rules`
    run; each message starts with `describe`, and points at `field` of the request."""

    kind: str
    namespace: str
    object: dict[str, Any]
    rules: frozenset[str]
    describe: str
    field: str = ""


# (the request object, its namespace, the platform version) -> what it implies
ImpliedFunction = Callable[[Any, str, PlatformVersion], list[ImpliedRequest]]

# kind -> the objects a CREATE of that kind implies (registered next to its rules).
IMPLIED_REQUESTS: dict[str, ImpliedFunction] = {}


def implies(kind: str) -> Callable[[ImpliedFunction], ImpliedFunction]:
    """Register what a CREATE of `kind` implies (see ImpliedRequest)."""

    def register(function: ImpliedFunction) -> ImpliedFunction:
        IMPLIED_REQUESTS[kind] = function
        return function

    return register


def rules_for(kind: str, operation: Operation, version: PlatformVersion | None = None) -> list[Rule]:
    """The rules deciding (kind, operation), on `version` when one is given."""
    return [
        r
        for r in CATALOGUE.values()
        if kind in r.kinds and operation in r.operations and (version is None or version in r.versions)
    ]
