"""The version gates of SPEC "Platform versions", each decided on both sides of its
boundary: the same case folder, decided for the last release before a change and the
first one with it."""

from __future__ import annotations

import pytest

from policies.catalogue import CATALOGUE, Action, Outcome
from policies.config import PolicyConfig, PolicyError, load_policy
from policies.engine import Decision, Engine, RuleResult
from policies.platform import (
    DEFAULT,
    NEWEST,
    PlatformVersion,
    PlatformVersionError,
    parse_platform_version,
)
from tests.casefiles import all_cases, decide_case

CASES = {c.id: c for c in all_cases()}


def decide(case_id: str, version: str) -> tuple[Decision, dict[str, RuleResult]]:
    engine = Engine(PolicyConfig.model_validate({"platformVersion": version}))
    decision, _ = decide_case(CASES[case_id], engine)
    return decision, {r.rule: r for r in decision.results}


# (case folder, rule, version before, result before, version from, result from), where a
# result is "absent" (the rule does not run), "pass", or the action of a firing rule.
GATES = [
    ("vms-pending-changes/restart-awaiting-changes", "vms-pending-changes", "1.0", "deny", "1.1", "absent"),
    ("vds-snapshot-class/missing-class", "vds-snapshot-class", "0.23", "deny", "0.24", "absent"),
    ("vms-snapshot-classes/missing-class", "vms-snapshot-classes", "0.23", "deny", "0.24", "absent"),
    ("snapshot-class-default/no-default", "snapshot-class-default", "0.23", "warn", "0.24", "deny"),
    ("snapshot-class-field-ignored/vds-class-name", "snapshot-class-field-ignored", "0.23", "absent", "0.24", "warn"),
    ("op-not-served/served-on-current", "op-not-served", "1.0", "deny", "1.1", "pass"),
    ("op-not-served/vmsop-on-v1.1", "op-not-served", "1.1", "deny", "1.2", "pass"),
    ("op-vm-phase/migrating-restore", "op-vm-phase", "1.0", "absent", "1.1", "deny"),
    ("vmr-deprecated/restore-on-v1.8", "vmr-deprecated", "1.1", "pass", "1.2", "warn"),
    ("vmr-deprecated/restore-on-v1.8", "vmr-deprecated", "1.8", "warn", "1.9", "deny"),
    ("vmr-name-conflict/vm-exists", "vmr-name-conflict", "1.8", "deny", "1.9", "absent"),
]


def _state(results: dict[str, RuleResult], rule: str) -> str:
    result = results.get(rule)
    if result is None:
        return "absent"
    if result.outcome is Outcome.PASS:
        return "pass"
    assert result.outcome is Outcome.FAIL, result
    return result.action.value


@pytest.mark.parametrize(
    ("case_id", "rule", "before", "expected_before", "since", "expected_since"),
    GATES,
    ids=[f"{g[1]}@{g[4]}" for g in GATES],
)
def test_gate_on_both_sides(
    case_id: str, rule: str, before: str, expected_before: str, since: str, expected_since: str
) -> None:
    """The rule behaves as the older release on one side and as the newer on the other."""
    _, results_before = decide(case_id, before)
    _, results_since = decide(case_id, since)
    assert _state(results_before, rule) == expected_before
    assert _state(results_since, rule) == expected_since


def test_every_gated_rule_is_covered() -> None:
    """A rule with a version range or a version-dependent default has a gate test."""
    gated = {r.id for r in CATALOGUE.values() if r.default_changes or r.versions.since or r.versions.until}
    covered = {g[1] for g in GATES}
    # Rules sharing one range have one representative: the operation rules (from v1.1)
    # op-vm-phase, the VirtualMachineRestore rules (until v1.9) vmr-name-conflict.
    shared = {
        r.id
        for r in CATALOGUE.values()
        if (r.versions.since and r.id.startswith(("op-", "restore-", "clone-")))
        or (r.versions.until and r.id.startswith("vmr-"))
    }
    assert gated - covered - shared == set()


def test_outcome_wording_follows_the_release() -> None:
    """Before v1.3 an impossible snapshot waited in Pending forever; from v1.3 it fails."""
    old, _ = decide("vds-disk-resizing/phase-resizing", "1.2")
    new, _ = decide("vds-disk-resizing/phase-resizing", "1.3")
    assert "would leave the snapshot Pending forever" in old.violations[0].message
    assert "would fail the snapshot" in new.violations[0].message


def test_old_platforms_keep_the_v0_22_contract() -> None:
    """On v0.22 a VirtualMachineRestore is decided by the vmr-* rules alone, as before."""
    decision, results = decide("vmr-name-conflict/vm-exists", "0.22")
    assert "vmr-deprecated" in results and results["vmr-deprecated"].outcome is Outcome.PASS
    assert {v.rule for v in decision.violations} == {"vmr-name-conflict"}


class TestParsing:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [("1.10", (1, 10)), ("v1.10", (1, 10)), ("1.10.3", (1, 10)), ("v1.10.3-rc.5", (1, 10)), ("0.22", (0, 22))],
    )
    def test_accepted_spellings(self, text: str, expected: tuple[int, int]) -> None:
        """Versions as users and the module write them."""
        assert parse_platform_version(text) == PlatformVersion(*expected)

    @pytest.mark.parametrize("text", ["", "1", "one.two", "1.10.x.y", "0.13"])
    def test_refused(self, text: str) -> None:
        """Not a version, or one before snapshots existed."""
        with pytest.raises(PlatformVersionError):
            parse_platform_version(text)

    def test_yaml_float_is_refused_with_a_hint(self) -> None:
        """`platformVersion: 1.10` unquoted is the float 1.1: refused, saying to quote it."""
        with pytest.raises(PolicyError, match="quote it"):
            load_policy({"platformVersion": 1.10}, "policy.yaml")

    def test_ordering_is_numeric(self) -> None:
        """1.10 is newer than 1.9 (not a string comparison)."""
        assert parse_platform_version("1.10") > parse_platform_version("1.9")

    def test_default_is_the_newest(self) -> None:
        assert DEFAULT == NEWEST == PlatformVersion(1, 10)
        assert PolicyConfig().platform_version == NEWEST

    def test_policy_file_sets_it(self) -> None:
        policy = load_policy({"platformVersion": "0.22"}, "p.yaml")
        assert policy.platform_version == PlatformVersion(0, 22)
        assert policy.action_for("snapshot-class-default") is Action.WARN
        assert policy.for_platform(PlatformVersion(1, 10)).action_for("snapshot-class-default") is Action.DENY
