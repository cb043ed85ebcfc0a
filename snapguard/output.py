"""Output formats of `snapguard check` (and the admission results of `audit`):
text for a terminal, JSON as SPEC section 3 defines it, JUnit XML, SARIF 2.1.0 and
GitHub workflow commands. One result per decided object, with the file and line of its
document so CI annotations point at the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from policies.catalogue import CATALOGUE, Action
from policies.engine import Decision, Violation

from . import __version__

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

    @property
    def display(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass
class Summary:
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


def summarise(results: Sequence[Result], skipped: int) -> Summary:
    return Summary(
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
    document: dict[str, Any] = {"results": [result_json(r) for r in results], **extra}
    document["summary"] = summary.as_dict()
    return json.dumps(document, indent=2, ensure_ascii=False)


def _finding_lines(result: Result) -> list[tuple[str, Violation]]:
    decision = result.decision
    return (
        [("DENY", v) for v in decision.violations]
        + [("WARN", v) for v in decision.warnings]
        + [("AUDIT", v) for v in decision.audits]
    )


def render_text(results: Sequence[Result], summary: Summary) -> str:
    lines: list[str] = []
    for result in results:
        where = f"{result.path}:{result.line}"
        findings = _finding_lines(result)
        if not findings:
            lines.append(f"{where}: ok    {result.display} ({result.operation})")
        for level, violation in findings:
            lines.append(f"{where}: {level:<5} {result.display}: {violation.rule}: {violation.message}")
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


def sarif_result(rule_id: str, level: str, message: str, path: str, line: int) -> dict[str, Any]:
    return {
        "ruleId": rule_id,
        "level": level,
        "message": {"text": message},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": path},
                    "region": {"startLine": max(line, 1)},
                }
            }
        ],
    }


def render_sarif(results: Sequence[Result], extra_results: Sequence[dict[str, Any]] = (), extra_rules: Sequence[dict[str, Any]] = ()) -> str:
    sarif_results = [
        sarif_result(v.rule, _SARIF_LEVEL[level], f"{r.display}: {v.message}", r.path, r.line)
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
        f"snapguard: {summary.checked} checked, {summary.denied} denied, "
        f"{summary.warned} warned, {summary.skipped} skipped"
    )
    return "\n".join(lines)


FORMATS = ("text", "json", "junit", "sarif", "github")


def render(output: str, results: Sequence[Result], summary: Summary) -> str:
    if output == "json":
        return render_json(results, summary)
    if output == "junit":
        return render_junit(results, summary)
    if output == "sarif":
        return render_sarif(results)
    if output == "github":
        return render_github(results, summary)
    return render_text(results, summary)
