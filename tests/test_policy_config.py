"""The policy file (SPEC 3, "Policy configuration"): each rule's action, exempt
namespaces and what a rule error does; strict validation whose errors name the file
and the key; and how the engine applies the configured actions."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from policies import kinds
from policies.catalogue import (
    CATALOGUE,
    Action,
    Finding,
    Operation,
    Outcome,
    RuleContext,
    RuleRequest,
)
from policies.config import PolicyConfig, PolicyError, load_policy
from policies.engine import Decision, Engine, EngineRequest
from policies.view import InMemoryView

SOURCE = "deploy/policy.yaml"
VDS = kinds.VIRTUAL_DISK_SNAPSHOT


def policy(text: str) -> PolicyConfig:
    """The policy of a YAML text, read as the CLI and the server read it."""
    return load_policy(yaml.safe_load(text), SOURCE)


def snapshot_of_missing_disk() -> EngineRequest:
    obj = {
        "apiVersion": kinds.API_VERSION,
        "kind": VDS,
        "metadata": {"name": "snap1", "namespace": "ns1"},
        "spec": {"virtualDiskName": "d1"},
    }
    return EngineRequest(Operation.CREATE, VDS, "ns1", "snap1", obj)


def empty_disks_view() -> InMemoryView:
    """A view that was given VirtualDisks but holds none: vds-disk-exists fires."""
    return InMemoryView(given_kinds=[kinds.VIRTUAL_DISK])


def decide(engine: Engine, view: InMemoryView | None = None) -> Decision:
    return engine.decide(snapshot_of_missing_disk(), view if view is not None else empty_disks_view())


def rule_ids(violations: Any) -> set[str]:
    return {v.rule for v in violations}


# --- loading -------------------------------------------------------------------------


def test_actions_per_rule() -> None:
    """Each rule gets the configured action; the others keep their catalogue default."""
    config = policy(
        """
        rules:
          vds-disk-exists: warn
          vds-disk-ready: audit
          snapshot-class-default: deny
        """
    )
    assert config.action_for("vds-disk-exists") is Action.WARN
    assert config.action_for("vds-disk-ready") is Action.AUDIT
    assert config.action_for("snapshot-class-default") is Action.DENY
    assert config.action_for("vds-disk-resizing") is CATALOGUE["vds-disk-resizing"].default_action
    assert config.action_for("vd-snapshot-ready") is Action.WARN  # its default


@pytest.mark.parametrize("written", ["off", "Off", "OFF", '"off"', "'off'"])
def test_off_written_bare_means_off(written: str) -> None:
    """YAML 1.1 reads a bare `off` as false; the user means the action off."""
    config = policy(f"rules:\n  vds-disk-exists: {written}\n")
    assert config.action_for("vds-disk-exists") is Action.OFF


def test_empty_and_null_policies_are_the_defaults() -> None:
    """An empty file, and a file with `rules:` left empty, change nothing."""
    for text in ("", "rules:\n", "rules: {}\nexemptNamespaces: []\n"):
        config = policy(text)
        assert config.rules == {}
        assert config.exempt_namespaces == ()
        assert config.rule_errors is Action.DENY


def test_unknown_rule_id_names_the_file_and_key() -> None:
    """A typo in a rule id is an error naming the file and `rules.<id>`, never ignored."""
    with pytest.raises(PolicyError) as raised:
        policy("rules:\n  vds-disk-exist: deny\n")
    message = str(raised.value)
    assert SOURCE in message
    assert "rules.vds-disk-exist" in message
    assert "unknown rule id" in message


def test_unknown_action_names_the_key_and_lists_valid_actions() -> None:
    """An unknown action names the rule's key and lists every valid action."""
    with pytest.raises(PolicyError) as raised:
        policy("rules:\n  vds-disk-exists: block\n")
    message = str(raised.value)
    assert SOURCE in message
    assert "rules.vds-disk-exists" in message
    assert "'block'" in message
    for action in ("deny", "warn", "audit", "off"):
        assert action in message


@pytest.mark.parametrize("written", ["true", "yes", "on", "null", "1", "[deny]"])
def test_non_action_values_are_errors(written: str) -> None:
    """Only `off` has a YAML spelling to forgive; true, null, numbers and lists are
    errors naming the key."""
    with pytest.raises(PolicyError, match=r"rules\.vds-disk-exists"):
        policy(f"rules:\n  vds-disk-exists: {written}\n")


def test_unknown_top_level_key_is_an_error() -> None:
    """A misspelt top-level key (here `rule:`) is an error naming it and the known keys."""
    with pytest.raises(PolicyError) as raised:
        policy("rule:\n  vds-disk-exists: warn\n")
    message = str(raised.value)
    assert SOURCE in message
    assert "rule:" in message or "rule " in message
    assert "unknown key" in message
    assert "rules" in message and "exemptNamespaces" in message


@pytest.mark.parametrize(
    "data",
    [["rules"], "rules: deny", 3],
    ids=["list", "string", "number"],
)
def test_policy_must_be_a_mapping(data: Any) -> None:
    """A policy that is not a mapping is an error naming the file."""
    with pytest.raises(PolicyError, match=SOURCE):
        load_policy(data, SOURCE)


def test_rules_must_be_a_mapping() -> None:
    """`rules:` written as a list is an error naming the key."""
    with pytest.raises(PolicyError, match=r"rules: must be a mapping"):
        policy("rules:\n- vds-disk-exists\n")


@pytest.mark.parametrize("written", ["audit", "block"])
def test_rule_errors_accepts_only_deny_or_warn(written: str) -> None:
    """ruleErrors is deny or warn: a crashed check must not be merely audited."""
    with pytest.raises(PolicyError, match="ruleErrors"):
        policy(f"ruleErrors: {written}\n")


def test_rule_errors_warn_loads() -> None:
    assert policy("ruleErrors: warn\n").rule_errors is Action.WARN


def test_api_version_and_kind_are_accepted() -> None:
    """A policy file may carry apiVersion and kind like any manifest."""
    config = policy("apiVersion: snapguard.deckhouse.io/v1\nkind: Policy\nrules: {}\n")
    assert config.rules == {}


# --- the engine applies the actions -------------------------------------------------


def test_default_action_denies() -> None:
    """With no policy the missing disk is a violation and the request is denied."""
    decision = decide(Engine())
    assert not decision.allowed
    assert "vds-disk-exists" in rule_ids(decision.violations)


def test_warn_moves_findings_to_warnings() -> None:
    """A rule set to warn reports the same findings as warnings and allows the request."""
    denied = decide(Engine())
    warned = decide(Engine(policy("rules:\n  vds-disk-exists: warn\n")))
    assert warned.allowed is True
    assert "vds-disk-exists" not in rule_ids(warned.violations)
    assert [v.message for v in warned.warnings if v.rule == "vds-disk-exists"] == [
        v.message for v in denied.violations if v.rule == "vds-disk-exists"
    ]
    assert all(v.action is Action.WARN for v in warned.warnings if v.rule == "vds-disk-exists")


def test_audit_moves_findings_to_audits() -> None:
    """A rule set to audit reports its findings as audits and allows the request."""
    decision = decide(Engine(policy("rules:\n  vds-disk-exists: audit\n")))
    assert decision.allowed is True
    assert "vds-disk-exists" in rule_ids(decision.audits)
    assert "vds-disk-exists" not in rule_ids((*decision.violations, *decision.warnings))


def test_off_skips_the_rule() -> None:
    """A rule set to off does not run: its result is skip and it reports nothing."""
    decision = decide(Engine(policy("rules:\n  vds-disk-exists: off\n")))
    assert decision.allowed is True
    result = next(r for r in decision.results if r.rule == "vds-disk-exists")
    assert result.outcome is Outcome.SKIP
    assert "vds-disk-exists" not in decision.rule_ids


def test_unknown_is_a_warning_or_an_audit() -> None:
    """An unknown outcome never denies: it is a warning, or an audit under audit."""
    no_disks = InMemoryView()
    default = decide(Engine(), no_disks)
    assert default.allowed is True
    assert "vds-disk-exists" in rule_ids(default.warnings)
    audited = decide(Engine(policy("rules:\n  vds-disk-exists: audit\n")), no_disks)
    assert "vds-disk-exists" in rule_ids(audited.audits)
    assert "vds-disk-exists" not in rule_ids(audited.warnings)


def test_exempt_namespace_is_not_decided() -> None:
    """A request in an exempt namespace is governed but exempt: allowed, no findings,
    no rule run; other namespaces are still decided."""
    engine = Engine(policy("exemptNamespaces:\n- ns1\n- kube-system\n"))
    decision = decide(engine)
    assert decision.exempt is True
    assert decision.allowed is True
    assert decision.results == ()
    assert decision.violations == decision.warnings == decision.audits == ()
    other = dataclasses.replace(snapshot_of_missing_disk(), namespace="ns2")
    assert engine.decide(other, empty_disks_view()).exempt is False


def _raise(req: RuleRequest[Any], ctx: RuleContext) -> Iterator[Finding]:
    raise RuntimeError("boom")
    yield  # a generator, like every rule


@pytest.fixture
def crashing_rule(monkeypatch: pytest.MonkeyPatch) -> str:
    """vds-disk-exists replaced by a check that raises; restored after the test."""
    rule_id = "vds-disk-exists"
    monkeypatch.setitem(CATALOGUE, rule_id, dataclasses.replace(CATALOGUE[rule_id], check=_raise))
    return rule_id


def test_rule_error_denies_by_default(crashing_rule: str) -> None:
    """A rule that raises is an error outcome under ruleErrors: deny (the default),
    reported with the exception, never raised to the caller."""
    decision = decide(Engine())
    result = next(r for r in decision.results if r.rule == crashing_rule)
    assert result.outcome is Outcome.ERROR
    assert decision.allowed is False
    messages = [v.message for v in decision.violations if v.rule == crashing_rule]
    assert messages and "RuntimeError: boom" in messages[0]


def test_rule_error_warns_under_rule_errors_warn(crashing_rule: str) -> None:
    """Under ruleErrors: warn the crash is a warning and the request is allowed."""
    decision = decide(Engine(policy("ruleErrors: warn\n")), InMemoryView(given_kinds=list(kinds.KINDS)))
    assert decision.allowed is True
    assert crashing_rule in rule_ids(decision.warnings)
    assert crashing_rule not in rule_ids(decision.violations)


def test_rule_error_ignores_the_rules_own_action(crashing_rule: str) -> None:
    """ruleErrors, not the rule's action, decides what a crash does: a rule set to warn
    that crashes still denies under ruleErrors: deny."""
    decision = decide(Engine(policy(f"rules:\n  {crashing_rule}: warn\n")))
    assert decision.allowed is False
    assert crashing_rule in rule_ids(decision.violations)


def test_crashing_rule_is_restored() -> None:
    """The fixture put the real check back (guards the tests that follow)."""
    assert CATALOGUE["vds-disk-exists"].check is not _raise
