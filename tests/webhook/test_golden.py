"""Golden AdmissionReview answers: each `golden/<name>.request.json` is posted to the app
(`/mutate` for names starting with `mutate-`, else `/validate`) with the test state as
the view, and the answer must equal `golden/<name>.response.json` exactly.

Regenerate after an intended change (then read the diff before committing):

    SNAPGUARD_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/webhook/test_golden.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import GOLDEN, WebhookUnderTest

CASES = sorted(p.name.removesuffix(".request.json") for p in GOLDEN.glob("*.request.json"))
REGENERATE = os.environ.get("SNAPGUARD_REGENERATE_GOLDEN") == "1"


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 4


@pytest.mark.parametrize("name", CASES)
def test_golden_response(make_webhook: Callable[..., WebhookUnderTest], name: str) -> None:
    """The whole answer, byte for byte in meaning: nothing added, nothing lost. A case
    with a `<name>.policy.json` is decided under that policy (e.g. an older platform)."""
    policy_path = GOLDEN / f"{name}.policy.json"
    webhook = make_webhook(json.loads(policy_path.read_text()) if policy_path.exists() else None)
    request = json.loads((GOLDEN / f"{name}.request.json").read_text())
    path = "/mutate" if name.startswith("mutate-") else "/validate"
    result = webhook.post(path, request)
    assert result.status_code == 200
    answer = result.get_json()
    expected_path: Path = GOLDEN / f"{name}.response.json"
    if REGENERATE:
        expected_path.write_text(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
    assert answer == json.loads(expected_path.read_text())
