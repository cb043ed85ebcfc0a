"""Every third-party module the package imports is a declared runtime dependency (not
only one that arrives with the test tools or through another dependency): read from
the source with `ast`, so an import inside a function counts too."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
PACKAGES = ("policies", "certs", "cluster", "webhook", "reconciler", "snapguard")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    return {_normal(re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0]) for spec in PROJECT["dependencies"]}


def _imported() -> dict[str, str]:
    """Top-level third-party module -> the first file importing it."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top in sys.stdlib_module_names or top in PACKAGES or top == "__future__":
                        continue
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_module_is_a_declared_dependency() -> None:
    distributions = packages_distributions()
    declared = _declared()
    missing = []
    for module, where in sorted(_imported().items()):
        owners = {_normal(d) for d in distributions.get(module, [])}
        assert owners, f"{module} (imported by {where}) is not installed at all"
        if not owners & declared:
            missing.append(f"{module} (imported by {where}, from {', '.join(sorted(owners))})")
    assert not missing, "imported but not in [project] dependencies: " + "; ".join(missing)


def test_constraints_pin_every_runtime_dependency() -> None:
    pins = {
        _normal(line.split("==")[0])
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert _declared() <= pins, f"not pinned in constraints.txt: {sorted(_declared() - pins)}"
