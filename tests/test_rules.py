"""One test class per rule, each a table of cases read from `tests/cases/<rule>/`.

Every case says in its `expected.yaml` what it shows; the class for a rule fails if the
rule has no case that fires and none that passes.
"""

from __future__ import annotations

import re

import pytest

from policies.catalogue import CATALOGUE, Outcome
from tests.casefiles import Case, all_cases, decide_case

CASES = all_cases()


def _check_case(case: Case) -> None:
    decision, result = decide_case(case)
    assert result is not None, f"rule {case.rule} did not run for {case.id}"
    expected = case.expected
    messages = [f.message for f in result.findings] + ([result.message] if result.message else [])
    assert result.outcome.value == expected["outcome"], (case.id, messages)
    if "action" in expected:
        assert result.action.value == expected["action"], (case.id, result.action)
    if "allowed" in expected:
        assert decision.allowed is expected["allowed"], (case.id, decision.violations)
    for fragment in expected.get("messages", []):
        assert any(fragment in m for m in messages), (case.id, fragment, messages)
    if result.outcome is Outcome.FAIL:
        # Every finding names the field it is about and says how to fix it.
        assert all(f.field for f in result.findings), case.id


def _class_name(rule_id: str) -> str:
    return "Test" + "".join(part.capitalize() for part in re.split(r"[-_]", rule_id))


def _make_class(rule_id: str, cases: list[Case]) -> type:
    @pytest.mark.parametrize("case", cases, ids=[c.name for c in cases])
    def test_case(self: object, case: Case) -> None:
        """The rule decides the case as its expected.yaml says."""
        _check_case(case)

    def test_has_failing_and_passing_cases(self: object) -> None:
        """The rule's table shows it both firing and passing."""
        outcomes = {c.expected["outcome"] for c in cases}
        assert {"fail", "pass"} <= outcomes, f"{rule_id} needs a fail and a pass case"

    return type(
        _class_name(rule_id),
        (),
        {"test_case": test_case, "test_has_failing_and_passing_cases": test_has_failing_and_passing_cases},
    )


for _rule_id in CATALOGUE:
    globals()[_class_name(_rule_id)] = _make_class(_rule_id, [c for c in CASES if c.rule == _rule_id])


def test_every_case_folder_names_a_rule() -> None:
    """A typo in a case folder's name would silently skip its cases."""
    assert {c.rule for c in CASES} <= set(CATALOGUE)
