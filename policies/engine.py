"""The engine: decides one request (CREATE/UPDATE of a governed object) against a view.

Every front-end calls `Engine.decide`; nothing else decides. Every outcome is a value:
a rule that raises becomes an `error` result under the configured `ruleErrors` action,
never an exception to the caller (controller-runtime's lesson: turn outcomes into
responses). A rule that lacks a kind of object in the view is `unknown`, reported as a
warning naming the kind, never a silent pass.

Pure: no I/O here (no clock either; durations are measured by the front-ends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from . import kinds
from .catalogue import (
    CATALOGUE,
    IMPLIED_REQUESTS,
    Action,
    Finding,
    ImpliedRequest,
    Operation,
    Outcome,
    Rule,
    RuleContext,
    RuleRequest,
    rules_for,
)
from .config import PolicyConfig
from .defaults import default_patch
from .models import MODELS, KubeObject
from .platform import PlatformVersion, unfinished_outcome
from .view import ClusterView

# Pseudo rule id for a request object that does not have the shape of its kind. The API
# server's schema validation rejects such objects too; we deny with the field named.
OBJECT_INVALID = "object-invalid"


@dataclass(frozen=True)
class EngineRequest:
    """The engine's input, whatever front-end it came from."""

    operation: Operation
    kind: str
    namespace: str
    name: str
    object: Any
    old_object: Any = None
    uid: str = ""
    dry_run: bool = False
    user: str = ""


@dataclass(frozen=True)
class Violation:
    """A reported finding: which rule, under which action, about which field."""

    rule: str
    action: Action
    message: str
    field: str = ""


@dataclass(frozen=True)
class RuleResult:
    rule: str
    outcome: Outcome
    action: Action
    findings: tuple[Finding, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool = True
    # False when no rule governs the request (other kinds, DELETE, CONNECT, a disk not
    # created from a snapshot): front-ends count it as skipped.
    governed: bool = False
    exempt: bool = False
    results: tuple[RuleResult, ...] = ()
    violations: tuple[Violation, ...] = ()
    warnings: tuple[Violation, ...] = ()
    audits: tuple[Violation, ...] = ()
    patch: tuple[dict[str, Any], ...] = field(default=())

    @property
    def rule_ids(self) -> list[str]:
        return sorted({v.rule for v in (*self.violations, *self.warnings, *self.audits)})


def _describe_missing(missing: set[str]) -> str:
    names = ", ".join(sorted(missing))
    return (
        f"cannot be decided: the view holds no {names} objects; add them to the state "
        f"(an empty {sorted(missing)[0]}List counts) so this rule can check them"
    )


def _validation_message(kind: str, name: str, error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return (
        f'{kind} "{name}" does not have the shape of a {kind}: {location}: {first["msg"]}; '
        f"fix the manifest (kubectl explain {kind.lower()}.{location.split('.')[0]})",
        location,
    )


class Engine:
    def __init__(self, policy: PolicyConfig | None = None) -> None:
        self.policy = policy or PolicyConfig()
        self._exempt = frozenset(self.policy.exempt_namespaces)
        self.platform: PlatformVersion = self.policy.platform_version
        # The rules of each (kind, operation) on the platform version, with their
        # configured actions, resolved once: decide() runs on the admission hot path.
        self._plan: dict[tuple[str, Operation], list[tuple[Rule, Action]]] = {}
        for kind in kinds.GOVERNED_KINDS:
            for operation in Operation:
                self._plan[(kind, operation)] = [
                    (rule, self.action_for(rule.id))
                    for rule in rules_for(kind, operation, self.platform)
                ]
        # Results are immutable values: the common ones are built once, not per request.
        self._settled: dict[str, RuleResult] = {}
        for rule in CATALOGUE.values():
            action = self.action_for(rule.id)
            outcome = Outcome.SKIP if action is Action.OFF else Outcome.PASS
            self._settled[rule.id] = RuleResult(rule.id, outcome, action)

    def action_for(self, rule_id: str) -> Action:
        return self.policy.action_for(rule_id)

    def governs(self, kind: str, operation: Operation) -> bool:
        return bool(self._plan.get((kind, operation)))

    def defaults(self, request: EngineRequest) -> list[dict[str, Any]]:
        """RFC 6902 operations filling the absent defaults of a CREATE."""
        if request.operation is not Operation.CREATE or request.namespace in self._exempt:
            return []
        return default_patch(request.kind, request.object)

    def decide(self, request: EngineRequest, view: ClusterView) -> Decision:
        rules = self._plan.get((request.kind, request.operation))
        if not rules:
            return Decision()
        if request.namespace in self._exempt:
            return Decision(governed=True, exempt=True)
        model = MODELS[request.kind]
        try:
            obj = model.model_validate(request.object)
            old = (
                model.model_validate(request.old_object)
                if request.old_object is not None
                else None
            )
        except ValidationError as error:
            message, location = _validation_message(request.kind, request.name, error)
            violation = Violation(OBJECT_INVALID, Action.DENY, message, location)
            return Decision(
                allowed=False,
                governed=True,
                results=(RuleResult(OBJECT_INVALID, Outcome.FAIL, Action.DENY, message=message),),
                violations=(violation,),
            )
        rules = [(r, a) for r, a in rules if r.applies is None or r.applies(obj)]
        if not rules:
            return Decision()
        namespace = request.namespace or (
            "default" if kinds.is_namespaced(request.kind) else ""
        )
        raw = request.object if isinstance(request.object, dict) else {}
        old_raw = request.old_object if isinstance(request.old_object, dict) else None
        rule_request: RuleRequest[KubeObject] = RuleRequest(
            request.operation, namespace, request.name or obj.name, obj, old, raw, old_raw, self.platform
        )
        memo: dict[str, tuple[Any, frozenset[str]]] = {}
        results = [self._run(rule, action, rule_request, view, memo) for rule, action in rules]
        implied = IMPLIED_REQUESTS.get(request.kind)
        implied_results: list[RuleResult] = []
        if implied is not None and request.operation is Operation.CREATE:
            for extra in implied(obj, namespace, self.platform):
                implied_results.extend(self._implied(extra, view, memo))
        if _dry_run(obj):
            results = [_as_warning(result) for result in results]
            implied_results = [_as_warning(result, implied=True) for result in implied_results]
        results.extend(implied_results)
        return self._decision(results)

    def _implied(
        self, extra: ImpliedRequest, view: ClusterView, memo: dict[str, tuple[Any, frozenset[str]]]
    ) -> list[RuleResult]:
        """The rules of an object a request implies (a vmop Clone's VirtualMachineSnapshot),
        under their own ids, each message saying what the object is for."""
        obj = MODELS[extra.kind].model_validate(extra.object)
        request: RuleRequest[KubeObject] = RuleRequest(
            Operation.CREATE, extra.namespace, obj.name, obj, None, extra.object, None, self.platform
        )
        results = []
        for rule, action in self._plan.get((extra.kind, Operation.CREATE), []):
            if rule.id not in extra.rules:
                continue
            result = self._run(rule, action, request, view, memo)
            if result.findings:
                findings = tuple(
                    Finding(f"{extra.describe}: {f.message}", extra.field) for f in result.findings
                )
                result = RuleResult(result.rule, result.outcome, result.action, findings, result.message)
            elif result.message:
                result = RuleResult(
                    result.rule, result.outcome, result.action, message=f"{extra.describe}: {result.message}"
                )
            results.append(result)
        return results

    def _run(
        self,
        rule: Rule,
        action: Action,
        request: RuleRequest[KubeObject],
        view: ClusterView,
        memo: dict[str, tuple[Any, frozenset[str]]],
    ) -> RuleResult:
        if action is Action.OFF:
            return self._settled[rule.id]
        context = RuleContext(view, memo)
        try:
            findings = tuple(rule.check(request, context))
        except Exception as error:  # a rule bug is reported, never a crash
            return RuleResult(
                rule.id,
                Outcome.ERROR,
                self.policy.rule_errors,
                message=(
                    f"the rule failed with {type(error).__name__}: {error}; "
                    "this is a bug in dvp-snapguard, please report it with the object"
                ),
            )
        if findings:
            if rule.outcome_of:
                outcome = unfinished_outcome(request.platform, rule.outcome_of)
                findings = tuple(Finding(f"{f.message} ({outcome})", f.field) for f in findings)
            return RuleResult(rule.id, Outcome.FAIL, action, findings)
        if context.missing:
            return RuleResult(rule.id, Outcome.UNKNOWN, action, message=_describe_missing(context.missing))
        return self._settled[rule.id]

    @staticmethod
    def _decision(results: list[RuleResult]) -> Decision:
        """Results sorted into the decision: violations, warnings and audits."""
        violations: list[Violation] = []
        warnings: list[Violation] = []
        audits: list[Violation] = []
        for result in results:
            if result.outcome is Outcome.FAIL:
                target = {Action.DENY: violations, Action.WARN: warnings, Action.AUDIT: audits}[
                    result.action
                ]
                target.extend(
                    Violation(result.rule, result.action, f.message, f.field) for f in result.findings
                )
            elif result.outcome is Outcome.ERROR:
                target = violations if result.action is Action.DENY else warnings
                target.append(Violation(result.rule, result.action, result.message))
            elif result.outcome is Outcome.UNKNOWN:
                target = audits if result.action is Action.AUDIT else warnings
                target.append(Violation(result.rule, result.action, result.message))
        return Decision(
            allowed=not violations,
            governed=True,
            results=tuple(results),
            violations=tuple(violations),
            warnings=tuple(warnings),
            audits=tuple(audits),
        )


def _dry_run(obj: KubeObject) -> bool:
    """A VirtualMachineOperation or VirtualMachineSnapshotOperation in mode DryRun."""
    return getattr(obj, "mode", "") == "DryRun" and obj.KIND in kinds.OPERATION_KINDS


def _as_warning(result: RuleResult, *, implied: bool = False) -> RuleResult:
    """SPEC: mode DryRun changes nothing on the platform, so what a rule of the operations
    table (and of the snapshot a clone implies) finds is reported as a warning, same id
    and message, and the operation is allowed; `op-spec-valid` (and `op-not-served`: the
    kind does not exist) still deny."""
    if result.outcome is not Outcome.FAIL or result.action is not Action.DENY:
        return result
    if not implied and not CATALOGUE[result.rule].dry_run_warns:
        return result
    return RuleResult(result.rule, result.outcome, Action.WARN, result.findings, result.message)
