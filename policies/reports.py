"""PolicyReports (`wgpolicyk8s.io/v1alpha2`, the Kubernetes Policy WG's report format
that Kyverno, Policy Reporter and other dashboards read) from an audit report.

One `PolicyReport` per namespace, named `dvp-snapguard`, with one result per
(object, rule):

* the rules of each unfinished object decided now (policy `dvp-snapguard`);
* the finding checks (`snapshot-lost`, `snapshot-failed`, `snapshot-stuck`,
  `restore-failed`, `operation-failed`, policy `dvp-snapguard`): a finding is a `fail`;
* with a preflight, the rules of the consistent VirtualMachineSnapshot each VM would get
  (policy `dvp-snapguard-preflight`, the resource is the VirtualMachine).

Outcomes map to report results as follows: `pass` -> pass; `fail` of a `deny` or `audit`
rule -> fail (as Kyverno reports audit-mode violations); `fail` of a `warn` rule -> warn;
`error` -> error; `unknown` -> skip with property `outcome: unknown`: the rule was not
evaluated for want of a kind, which is not a pass. Rules switched `off` are left out.

A report object lives in etcd, whose default request limit is 1.5 MiB: a report keeps at
most `MAX_RESULTS` results and `MAX_RESULTS_BYTES` of them, fails, errors and warnings
first; `summary` still counts every result, and the annotation
`dvp-snapguard/dropped-results` says how many were left out.

Pure: no I/O; the caller passes `now` and writes the reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .audit import FINDING_RULES, AuditReport, ObjectKey
from .catalogue import CATALOGUE, Action, Outcome
from .engine import Decision

REPORT_API_VERSION = "wgpolicyk8s.io/v1alpha2"
REPORT_KIND = "PolicyReport"
REPORT_GROUP = "wgpolicyk8s.io"
REPORT_VERSION = "v1alpha2"
REPORT_PLURAL = "policyreports"
REPORT_NAME = "dvp-snapguard"
SOURCE = "dvp-snapguard"
POLICY = "dvp-snapguard"
PREFLIGHT_POLICY = "dvp-snapguard-preflight"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "dvp-snapguard"
DROPPED_ANNOTATION = "dvp-snapguard/dropped-results"

# Kyverno caps its reports at 1,000 results for the same reason.
MAX_RESULTS = 1000
# Results' share of a report object: etcd refuses requests over 1.5 MiB by default
# (--max-request-bytes), and metadata, managedFields and the summary need room too.
MAX_RESULTS_BYTES = 1_000_000
# A rule message is a sentence or two; a longer one (a list of many disks) is cut here.
MAX_MESSAGE_CHARS = 2048

CATEGORY_ADMISSION = "Snapshot admission"
CATEGORY_HEALTH = "Snapshot health"
CATEGORY_PREFLIGHT = "Snapshot preflight"

PASS, FAIL, WARN, ERROR, SKIP = "pass", "fail", "warn", "error", "skip"
SUMMARY_KEYS = (PASS, FAIL, WARN, ERROR, SKIP)
# Which results a capped report keeps first.
PRIORITY = {FAIL: 0, ERROR: 1, WARN: 2, SKIP: 3, PASS: 4}


def result_value(outcome: Outcome, action: Action) -> str | None:
    """The report result of a rule outcome under its action; None: not reported."""
    if outcome is Outcome.PASS:
        return PASS
    if outcome is Outcome.FAIL:
        return WARN if action is Action.WARN else FAIL
    if outcome is Outcome.ERROR:
        return ERROR
    if outcome is Outcome.UNKNOWN:
        return SKIP
    return None  # Outcome.SKIP: the rule is off


def action_severity(action: Action) -> str:
    """Severity of an admission rule by its configured action."""
    return {Action.DENY: "high", Action.WARN: "medium"}.get(action, "low")


def timestamp(now: datetime) -> dict[str, int]:
    """A protobuf Timestamp as the report schema wants it."""
    return {"seconds": int(now.timestamp()), "nanos": now.microsecond * 1000}


def _message(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 1] + "\u2026"


def _resource(key: ObjectKey) -> dict[str, str]:
    resource = {
        "apiVersion": key.api_version,
        "kind": key.kind,
        "name": key.name,
        "namespace": key.namespace,
    }
    if key.uid:
        resource["uid"] = key.uid
    return resource


@dataclass
class _Namespace:
    """One namespace's report under construction: every result counted, only as many
    kept per priority as could end up in the capped report."""

    summary: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUMMARY_KEYS, 0))
    buckets: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {key: [] for key in SUMMARY_KEYS}
    )

    def add(self, result: dict[str, Any], limit: int) -> None:
        value = result["result"]
        self.summary[value] += 1
        priority = PRIORITY[value]
        ahead = sum(len(self.buckets[k]) for k in SUMMARY_KEYS if PRIORITY[k] <= priority)
        if ahead < limit:
            self.buckets[value].append(result)

    def kept(self, limit: int, max_bytes: int) -> list[dict[str, Any]]:
        ordered = sorted(SUMMARY_KEYS, key=PRIORITY.__getitem__)
        results: list[dict[str, Any]] = []
        size = 0
        for key in ordered:
            for result in self.buckets[key]:
                if len(results) >= limit:
                    return results
                # The result as JSON, plus the separator between list items.
                size += len(json.dumps(result, ensure_ascii=False).encode()) + 2
                if size > max_bytes:
                    return results
                results.append(result)
        return results


def _decision_results(
    decision: Decision, key: ObjectKey, policy: str, category: str, stamp: dict[str, int]
) -> Iterator[dict[str, Any]]:
    for rule_result in decision.results:
        value = result_value(rule_result.outcome, rule_result.action)
        if value is None:
            continue
        if rule_result.outcome is Outcome.FAIL:
            message = "; ".join(f.message for f in rule_result.findings)
        elif rule_result.outcome is Outcome.PASS:
            rule = CATALOGUE.get(rule_result.rule)
            message = f"passed: {rule.summary}" if rule else "passed"
        else:
            message = rule_result.message
        properties = {"action": rule_result.action.value}
        if rule_result.outcome is Outcome.UNKNOWN:
            properties["outcome"] = Outcome.UNKNOWN.value
        yield {
            "source": SOURCE,
            "policy": policy,
            "rule": rule_result.rule,
            "result": value,
            "message": _message(message),
            "resources": [_resource(key)],
            "severity": action_severity(rule_result.action),
            "category": category,
            "timestamp": dict(stamp),
            "properties": properties,
        }


def _finding_result(
    key: ObjectKey, rule: str, value: str, message: str, stamp: dict[str, int], reason: str = ""
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "source": SOURCE,
        "policy": POLICY,
        "rule": rule,
        "result": value,
        "message": _message(message),
        "resources": [_resource(key)],
        "severity": FINDING_RULES[rule].severity,
        "category": CATEGORY_HEALTH,
        "timestamp": dict(stamp),
    }
    properties: dict[str, str] = {}
    if reason:
        properties["reason"] = reason
    if value == SKIP:
        properties["outcome"] = Outcome.UNKNOWN.value
    if properties:
        result["properties"] = properties
    return result


def _all_results(report: AuditReport, stamp: dict[str, int]) -> Iterator[dict[str, Any]]:
    for audited in report.results:
        yield from _decision_results(audited.decision, audited.object, POLICY, CATEGORY_ADMISSION, stamp)
    for finding in report.findings:
        yield _finding_result(finding.object, finding.rule, FAIL, finding.message, stamp, finding.reason)
    for check in report.checks:
        if check.outcome is Outcome.PASS:
            message = f"passed: no {FINDING_RULES[check.rule].summary}"
            yield _finding_result(check.object, check.rule, PASS, message, stamp)
        else:
            yield _finding_result(check.object, check.rule, SKIP, check.message, stamp)
    for entry in report.preflight or ():
        yield from _decision_results(
            entry.decision, entry.object, PREFLIGHT_POLICY, CATEGORY_PREFLIGHT, stamp
        )


def policy_reports(
    report: AuditReport,
    *,
    now: datetime,
    max_results: int = MAX_RESULTS,
    max_bytes: int = MAX_RESULTS_BYTES,
) -> list[dict[str, Any]]:
    """One PolicyReport per namespace holding an audited object, sorted by namespace."""
    stamp = timestamp(now)
    namespaces: dict[str, _Namespace] = {}
    for result in _all_results(report, stamp):
        namespace = result["resources"][0]["namespace"]
        namespaces.setdefault(namespace, _Namespace()).add(result, max_results)
    reports: list[dict[str, Any]] = []
    for namespace in sorted(namespaces):
        state = namespaces[namespace]
        kept = state.kept(max_results, max_bytes)
        dropped = sum(state.summary.values()) - len(kept)
        metadata: dict[str, Any] = {
            "name": REPORT_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        }
        if dropped:
            metadata["annotations"] = {DROPPED_ANNOTATION: str(dropped)}
        reports.append(
            {
                "apiVersion": REPORT_API_VERSION,
                "kind": REPORT_KIND,
                "metadata": metadata,
                "summary": dict(state.summary),
                "results": kept,
            }
        )
    return reports
