"""Rule cases as data: `tests/cases/<rule-id>/<case>/` holds

* `state.yaml` (or a `state/` folder): the cluster the rule sees, as `kubectl get -o yaml`
  would print it (optional: no state means an empty view);
* `object.yaml`: the object being created (or updated, when `old.yaml` is present);
* `expected.yaml`: `description` (one sentence: what the case shows), `outcome` of the
  rule under test (pass, fail, unknown, error), optionally `allowed` for the whole
  decision, `messages`, substrings every one of which must appear in the rule's
  messages, `action` the rule's result must carry (e.g. `warn` for a DryRun), and
  `platformVersion`, the release the case is decided for (default: the newest).

The same folders work with the CLI: `snapguard check --state <case>/state.yaml <case>/object.yaml`
(with `--platform-version` when the case names one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cluster.statefiles import build_view, read_documents
from policies.catalogue import Operation
from policies.config import PolicyConfig
from policies.engine import Decision, Engine, EngineRequest, RuleResult

CASES = Path(__file__).parent / "cases"


@dataclass(frozen=True)
class Case:
    rule: str
    name: str
    path: Path
    expected: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.rule}/{self.name}"


def all_cases() -> list[Case]:
    cases = []
    for rule_dir in sorted(p for p in CASES.iterdir() if p.is_dir()):
        for case_dir in sorted(p for p in rule_dir.iterdir() if p.is_dir()):
            expected = yaml.safe_load((case_dir / "expected.yaml").read_text())
            cases.append(Case(rule_dir.name, case_dir.name, case_dir, expected))
    return cases


def state_paths(case: Case) -> list[str]:
    return [str(p) for p in (case.path / "state.yaml", case.path / "state") if p.exists()]


def decide_case(case: Case, engine: Engine | None = None) -> tuple[Decision, RuleResult | None]:
    view = build_view(read_documents(state_paths(case)))
    (document,) = read_documents([str(case.path / "object.yaml")])
    old_path = case.path / "old.yaml"
    old = read_documents([str(old_path)])[0].obj if old_path.exists() else None
    request = EngineRequest(
        operation=Operation.UPDATE if old is not None else Operation.CREATE,
        kind=document.kind,
        namespace=document.namespace,
        name=document.name,
        object=document.obj,
        old_object=old,
    )
    if engine is None:
        version = case.expected.get("platformVersion")
        engine = Engine(PolicyConfig.model_validate({"platformVersion": version} if version else {}))
    decision = engine.decide(request, view)
    result = next((r for r in decision.results if r.rule == case.rule), None)
    return decision, result
