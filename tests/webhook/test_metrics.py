"""The metrics' arithmetic: tallies flushed into Prometheus families add up exactly."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from policies.catalogue import Action, Outcome
from policies.engine import RuleResult
from webhook.metrics import DURATION_BUCKETS, WebhookMetrics, _add_to_histogram, rule_result_label


def sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    assert match, f"{name}{{{labels}}} not in exposition"
    return float(match.group(1))


def test_histogram_buckets_count_and_sum() -> None:
    metrics = WebhookMetrics()
    for seconds in (0.0005, 0.001, 0.003, 20.0):
        metrics.observe_request("validate", "VirtualDiskSnapshot", "CREATE", "allowed", False, seconds)
    text = metrics.render()[0].decode()
    name = "snapguard_admission_duration_seconds"
    assert sample(text, f"{name}_bucket", 'le="0.001",webhook="validate"') == 2  # le is inclusive
    assert sample(text, f"{name}_bucket", 'le="0.005",webhook="validate"') == 3
    assert sample(text, f"{name}_bucket", 'le="10.0",webhook="validate"') == 3
    assert sample(text, f"{name}_bucket", 'le="+Inf",webhook="validate"') == 4
    assert sample(text, f"{name}_count", 'webhook="validate"') == 4
    assert sample(text, f"{name}_sum", 'webhook="validate"') == pytest.approx(20.0045)


def test_counters_accumulate_across_flushes() -> None:
    metrics = WebhookMetrics()
    results = [RuleResult("vds-disk-exists", Outcome.PASS, Action.DENY)]
    for _ in range(3):
        metrics.observe_request("validate", "VirtualDiskSnapshot", "CREATE", "denied", True, 0.01, results)
        metrics.flush()
    text = metrics.render()[0].decode()
    assert sample(
        text, "snapguard_admission_requests_total",
        'decision="denied",dry_run="true",kind="VirtualDiskSnapshot",operation="CREATE"',
    ) == 3
    assert sample(text, "snapguard_rule_results_total", 'result="pass",rule="vds-disk-exists"') == 3


@pytest.mark.parametrize(
    ("outcome", "action", "label"),
    [
        (Outcome.PASS, Action.DENY, "pass"),
        (Outcome.FAIL, Action.DENY, "deny"),
        (Outcome.FAIL, Action.WARN, "warn"),
        (Outcome.FAIL, Action.AUDIT, "audit"),
        (Outcome.UNKNOWN, Action.DENY, "unknown"),
        (Outcome.ERROR, Action.DENY, "error"),
        (Outcome.SKIP, Action.OFF, "off"),
    ],
)
def test_rule_result_labels(outcome: Outcome, action: Action, label: str) -> None:
    assert rule_result_label(RuleResult("r", outcome, action)) == label


def test_histogram_fallback_without_private_values() -> None:
    """Should prometheus-client ever rename its internals, counts stay exact."""
    histogram = Histogram("h", "h", buckets=DURATION_BUCKETS, registry=CollectorRegistry())

    class Public:
        def observe(self, amount: float) -> None:
            histogram.observe(amount)

    tally: list[Any] = [0.0] * (len(DURATION_BUCKETS) + 2)
    tally[0], tally[3], tally[len(DURATION_BUCKETS)] = 2, 1, 1
    _add_to_histogram(Public(), tally)
    counts = {s.labels.get("le"): s.value for s in histogram.collect()[0].samples if s.name == "h_bucket"}
    assert counts["0.001"] == 2 and counts["0.01"] == 3 and counts["10.0"] == 3 and counts["+Inf"] == 4
