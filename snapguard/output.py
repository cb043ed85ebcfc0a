"""Output formats of `snapguard check` and `snapguard audit`: text for a terminal, JSON
as SPEC section 3 defines it, JUnit XML, SARIF 2.1.0 and (check) GitHub workflow
commands. One result per decided object, with the file and line of its document so CI
annotations point at the manifest; an object read from a live cluster has a
`cluster://<context>/<namespace>/<kind>/<name>` URI and a logical location instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from policies.audit import FINDING_RULES, AuditFinding, AuditSummary, PreflightEntry
from policies.catalogue import CATALOGUE, Action
from policies.engine import Decision, Violation
from policies.platform import DEFAULT, PlatformVersion

from . import __version__
from .errors import printable

TOOL = "dvp-snapguard"
INFORMATION_URI = "https://github.com/deckhouse/virtualization"


@dataclass(frozen=True)
class Result:
    """The decision about one object, and where the object came from."""

    source: str
    path: str
    line: int
    kind: str
    namespace: str
    name: str
    operation: str
    decision: Decision
    patch: tuple[dict[str, Any], ...] = ()
    # `<kind>/<namespace>/<name>` for an object of a live cluster (no file, line 0).
    logical: str = ""

    @property
    def display(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass
class Summary:
    # The platform release the decisions were made for (SPEC: every output says it).
    platform: PlatformVersion = DEFAULT
    checked: int = 0
    denied: int = 0
    warned: int = 0
    skipped: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {
            "checked": self.checked,
            "denied": self.denied,
            "warned": self.warned,
            "skipped": self.skipped,
            **self.extra,
        }


def summarise(results: Sequence[Result], skipped: int, platform: PlatformVersion = DEFAULT) -> Summary:
    return Summary(
        platform=platform,
        checked=len(results),
        denied=sum(1 for r in results if not r.decision.allowed),
        warned=sum(1 for r in results if r.decision.warnings),
        skipped=skipped,
    )


def result_json(result: Result) -> dict[str, Any]:
    decision = result.decision
    return {
        "source": result.source,
        "kind": result.kind,
        "namespace": result.namespace,
        "name": result.name,
        "operation": result.operation,
        "allowed": decision.allowed,
        "violations": [
            {"rule": v.rule, "action": v.action.value, "field": v.field, "message": v.message}
            for v in decision.violations
        ],
        "warnings": [{"rule": v.rule, "message": v.message} for v in decision.warnings],
        "patch": list(result.patch),
    }


def render_json(results: Sequence[Result], summary: Summary, **extra: Any) -> str:
    document: dict[str, Any] = {
        "platformVersion": str(summary.platform),
        "results": [result_json(r) for r in results],
        **extra,
    }
    document["summary"] = summary.as_dict()
    return json.dumps(document, indent=2, ensure_ascii=False)


def _finding_lines(result: Result) -> list[tuple[str, Violation]]:
    decision = result.decision
    return (
        [("DENY", v) for v in decision.violations]
        + [("WARN", v) for v in decision.warnings]
        + [("AUDIT", v) for v in decision.audits]
    )


def platform_header(platform: PlatformVersion) -> str:
    """The first line of text output: which release the decisions are for."""
    return f"Decided for DVP platform {platform.label} (change with --platform-version or platformVersion)"


def _patch_text(operation: dict[str, Any]) -> str:
    value = f" {json.dumps(operation['value'], ensure_ascii=False)}" if "value" in operation else ""
    return f"{operation.get('op', '')} {operation.get('path', '')}{value}"


def render_text(results: Sequence[Result], summary: Summary) -> str:
    lines: list[str] = [platform_header(summary.platform)]
    for result in results:
        where = f"{result.path}:{result.line}"
        findings = _finding_lines(result)
        if not findings:
            lines.append(f"{where}: ok    {result.display} ({result.operation})")
        for level, violation in findings:
            lines.append(f"{where}: {level:<5} {result.display}: {violation.rule}: {violation.message}")
        # --mutate: the defaults applied before deciding, one JSON Patch operation a line.
        lines.extend(f"{where}: PATCH {result.display}: {_patch_text(op)}" for op in result.patch)
    lines = [printable(line) for line in lines]
    lines.append(
        f"{summary.checked} checked, {summary.denied} denied, {summary.warned} warned, "
        f"{summary.skipped} skipped"
        + "".join(f", {value} {key}" for key, value in summary.extra.items())
    )
    return "\n".join(lines)


def render_junit(results: Sequence[Result], summary: Summary, suite: str = "snapguard check") -> str:
    testsuite = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(summary.denied),
        errors="0",
        skipped="0",
    )
    properties = ET.SubElement(testsuite, "properties")
    ET.SubElement(properties, "property", name="platformVersion", value=str(summary.platform))
    for result in results:
        case = ET.SubElement(
            testsuite,
            "testcase",
            classname=result.kind,
            name=f"{result.namespace}/{result.name}" if result.namespace else result.name,
            file=result.path,
            line=str(result.line),
        )
        for violation in result.decision.violations:
            failure = ET.SubElement(case, "failure", message=f"{violation.rule}: {violation.message}", type=violation.rule)
            failure.text = f"{result.source}: {violation.field}: {violation.message}"
        notes = [f"{level} {v.rule}: {v.message}" for level, v in _finding_lines(result) if level != "DENY"]
        if notes:
            ET.SubElement(case, "system-out").text = "\n".join(notes)
    suites = ET.Element("testsuites", name=suite, tests=str(len(results)), failures=str(summary.denied))
    suites.append(testsuite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


_SARIF_LEVEL = {"DENY": "error", "WARN": "warning", "AUDIT": "note"}


def sarif_rules() -> list[dict[str, Any]]:
    return [
        {
            "id": rule.id,
            "name": rule.id,
            "shortDescription": {"text": rule.summary},
            "defaultConfiguration": {
                "level": {Action.DENY: "error", Action.WARN: "warning"}.get(rule.default_action, "note")
            },
        }
        for rule in CATALOGUE.values()
    ]


def sarif_result(
    rule_id: str, level: str, message: str, path: str, line: int, logical: str = ""
) -> dict[str, Any]:
    """A SARIF result at a file and line, or (line 0, `logical` set) at an object of a
    live cluster: its URI, and `<kind>/<namespace>/<name>` as the logical location."""
    physical: dict[str, Any] = {"artifactLocation": {"uri": path}}
    if line > 0 or not logical:
        physical["region"] = {"startLine": max(line, 1)}
    location: dict[str, Any] = {"physicalLocation": physical}
    if logical:
        location["logicalLocations"] = [{"fullyQualifiedName": logical, "kind": "resource"}]
    return {
        "ruleId": rule_id,
        "level": level,
        "message": {"text": message},
        "locations": [location],
    }


def render_sarif(
    results: Sequence[Result],
    extra_results: Sequence[dict[str, Any]] = (),
    extra_rules: Sequence[dict[str, Any]] = (),
    platform: PlatformVersion = DEFAULT,
) -> str:
    sarif_results = [
        sarif_result(v.rule, _SARIF_LEVEL[level], f"{r.display}: {v.message}", r.path, r.line, r.logical)
        for r in results
        for level, v in _finding_lines(r)
    ]
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL,
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [*sarif_rules(), *extra_rules],
                    }
                },
                "results": [*sarif_results, *extra_results],
                "properties": {"platformVersion": str(platform)},
            }
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


_GITHUB_COMMAND = {"DENY": "error", "WARN": "warning", "AUDIT": "notice"}


def render_github(results: Sequence[Result], summary: Summary) -> str:
    lines = [
        f"::{_GITHUB_COMMAND[level]} file={_escape_property(r.path)},line={r.line},"
        f"title={_escape_property(v.rule)}::{_escape_data(f'{r.display}: {v.message}')}"
        for r in results
        for level, v in _finding_lines(r)
    ]
    lines.append(
        f"snapguard (DVP platform {summary.platform.label}): {summary.checked} checked, "
        f"{summary.denied} denied, {summary.warned} warned, {summary.skipped} skipped"
    )
    return "\n".join(lines)


FORMATS = ("text", "json", "junit", "sarif", "github")


def render(output: str, results: Sequence[Result], summary: Summary) -> str:
    if output == "json":
        return render_json(results, summary)
    if output == "junit":
        return render_junit(results, summary)
    if output == "sarif":
        return render_sarif(results, platform=summary.platform)
    if output == "github":
        return render_github(results, summary)
    return render_text(results, summary)


# --- audit -------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where an audited object came from: its document in a state file, or its URI in
    a live cluster (line 0, with a logical location)."""

    source: str
    path: str
    line: int = 0
    logical: str = ""


@dataclass(frozen=True)
class AuditOutput:
    """An audit report with every object placed, ready to render."""

    results: Sequence[Result]
    findings: Sequence[tuple[AuditFinding, Location]]
    preflight: Sequence[tuple[PreflightEntry, Location]] | None
    summary: AuditSummary
    notes: Sequence[str] = ()
    platform: PlatformVersion = DEFAULT


AUDIT_FORMATS = ("text", "json", "junit", "sarif")


def audit_summary_json(summary: AuditSummary) -> dict[str, int]:
    return {
        "checked": summary.results,
        "denied": summary.denied,
        "warned": summary.warned,
        "skipped": summary.skipped,
        "findings": summary.findings,
        "preflight": summary.preflight,
        "notReady": summary.not_ready,
    }


def _rule_messages(violations: Sequence[Violation]) -> list[dict[str, str]]:
    return [{"rule": v.rule, "message": v.message} for v in violations]


def render_audit_json(report: AuditOutput) -> str:
    document: dict[str, Any] = {
        "platformVersion": str(report.platform),
        "results": [result_json(r) for r in report.results],
        "findings": [
            {
                "kind": finding.kind,
                "namespace": finding.namespace,
                "name": finding.name,
                "rule": finding.rule,
                "message": finding.message,
            }
            for finding, _ in report.findings
        ],
    }
    if report.preflight is not None:
        document["preflight"] = [
            {
                "namespace": entry.namespace,
                "name": entry.name,
                "ready": entry.ready,
                "violations": _rule_messages(entry.violations),
                "warnings": _rule_messages(entry.warnings),
            }
            for entry, _ in report.preflight
        ]
    document["notes"] = list(report.notes)
    document["summary"] = audit_summary_json(report.summary)
    return json.dumps(document, indent=2, ensure_ascii=False)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows with every column but the last (a free-text message) padded to align."""
    widths = [
        max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers) - 1)
    ]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return lines


def render_audit_text(report: AuditOutput) -> str:
    lines: list[str] = [platform_header(report.platform), ""]
    rows: list[list[str]] = []
    for result in report.results:
        findings = _finding_lines(result)
        base = [result.kind, result.namespace, result.name]
        if not findings:
            rows.append([*base, "ok", "", ""])
        for level, violation in findings:
            rows.append([*base, level, violation.rule, violation.message])
    lines.append(
        f"Unfinished snapshots and restores, decided as if created now ({len(report.results)}):"
    )
    lines.extend(_table(["KIND", "NAMESPACE", "NAME", "VERDICT", "RULE", "MESSAGE"], rows) if rows else ["  none"])
    lines.append("")
    lines.append(f"Findings ({len(report.findings)}):")
    finding_rows = [
        [f.kind, f.namespace, f.name, f.rule, f.message] for f, _ in report.findings
    ]
    lines.extend(
        _table(["KIND", "NAMESPACE", "NAME", "RULE", "MESSAGE"], finding_rows)
        if finding_rows
        else ["  none"]
    )
    if report.preflight is not None:
        lines.append("")
        lines.append(
            "Preflight: can each virtual machine get a consistent snapshot now "
            f"({len(report.preflight)}):"
        )
        preflight_rows: list[list[str]] = []
        for entry, _ in report.preflight:
            base = [entry.namespace, entry.name, "yes" if entry.ready else "no"]
            notes = [("DENY", v) for v in entry.violations] + [("WARN", v) for v in entry.warnings]
            if not notes:
                preflight_rows.append([*base, "", ""])
            for level, violation in notes:
                preflight_rows.append([*base, f"{level} {violation.rule}", violation.message])
        lines.extend(
            _table(["NAMESPACE", "NAME", "READY", "RULE", "MESSAGE"], preflight_rows)
            if preflight_rows
            else ["  none"]
        )
    if report.notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"  - {note}" for note in report.notes)
    lines.append("")
    summary = report.summary
    text = (
        f"{summary.results} checked, {summary.denied} denied, {summary.warned} warned, "
        f"{summary.skipped} skipped, {summary.findings} findings"
    )
    if report.preflight is not None:
        text += f", {summary.preflight} preflight, {summary.not_ready} not ready"
    lines.append(text)
    return "\n".join(printable(line) for line in lines)


def _testcase(parent: ET.Element, classname: str, name: str, location: Location) -> ET.Element:
    attributes = {"classname": classname, "name": name}
    if location.line > 0:
        attributes.update(file=location.path, line=str(location.line))
    else:
        attributes["file"] = location.path
    return ET.SubElement(parent, "testcase", attributes)


def render_audit_junit(report: AuditOutput) -> str:
    suites = ET.Element("testsuites", name="snapguard audit")
    total = failures = 0

    def suite(name: str, tests: int, failed: int) -> ET.Element:
        nonlocal total, failures
        total += tests
        failures += failed
        return ET.SubElement(
            suites, "testsuite", name=name, tests=str(tests), failures=str(failed), errors="0", skipped="0"
        )

    results = suite("snapguard audit: results", len(report.results), report.summary.denied)
    for result in report.results:
        name = f"{result.namespace}/{result.name}"
        case = _testcase(results, result.kind, name, Location(result.source, result.path, result.line, result.logical))
        for violation in result.decision.violations:
            failure = ET.SubElement(case, "failure", message=f"{violation.rule}: {violation.message}", type=violation.rule)
            failure.text = f"{result.source}: {violation.field}: {violation.message}"
        notes = [f"{level} {v.rule}: {v.message}" for level, v in _finding_lines(result) if level != "DENY"]
        if notes:
            ET.SubElement(case, "system-out").text = "\n".join(notes)

    # One testcase per object with findings, one failure per finding.
    by_object: dict[tuple[str, str, str], list[tuple[AuditFinding, Location]]] = {}
    for finding, location in report.findings:
        by_object.setdefault((finding.kind, finding.namespace, finding.name), []).append((finding, location))
    findings = suite("snapguard audit: findings", len(by_object), len(by_object))
    for (kind, namespace, name), entries in by_object.items():
        case = _testcase(findings, kind, f"{namespace}/{name}", entries[0][1])
        for finding, location in entries:
            failure = ET.SubElement(case, "failure", message=f"{finding.rule}: {finding.message}", type=finding.rule)
            failure.text = f"{location.source}: {finding.message}"

    if report.preflight is not None:
        preflight = suite("snapguard audit: preflight", len(report.preflight), report.summary.not_ready)
        for entry, location in report.preflight:
            case = _testcase(preflight, "VirtualMachine", f"{entry.namespace}/{entry.name}", location)
            for violation in entry.violations:
                failure = ET.SubElement(case, "failure", message=f"{violation.rule}: {violation.message}", type=violation.rule)
                failure.text = f"{location.source}: {violation.message}"
            if entry.warnings:
                ET.SubElement(case, "system-out").text = "\n".join(
                    f"WARN {v.rule}: {v.message}" for v in entry.warnings
                )
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def audit_sarif_rules() -> list[dict[str, Any]]:
    return [
        {
            "id": rule.id,
            "name": rule.id,
            "shortDescription": {"text": rule.summary},
            "defaultConfiguration": {"level": "error"},
        }
        for rule in FINDING_RULES.values()
    ]


def render_audit_sarif(report: AuditOutput) -> str:
    extra: list[dict[str, Any]] = []
    for finding, location in report.findings:
        extra.append(
            sarif_result(
                finding.rule,
                "error",
                f"{finding.kind} {finding.namespace}/{finding.name}: {finding.message}",
                location.path,
                location.line,
                location.logical,
            )
        )
    for entry, location in report.preflight or ():
        for violation in entry.violations:
            extra.append(
                sarif_result(
                    violation.rule,
                    "error",
                    f"VirtualMachine {entry.namespace}/{entry.name} cannot get a consistent "
                    f"snapshot now: {violation.message}",
                    location.path,
                    location.line,
                    location.logical,
                )
            )
    return render_sarif(report.results, extra, audit_sarif_rules(), report.platform)


def render_audit(output: str, report: AuditOutput) -> str:
    if output == "json":
        return render_audit_json(report)
    if output == "junit":
        return render_audit_junit(report)
    if output == "sarif":
        return render_audit_sarif(report)
    return render_audit_text(report)
