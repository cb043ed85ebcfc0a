"""The engine stays pure (DESIGN, "Layout and the one-direction rule"): `policies/`
imports only the standard library and pydantic, and does no I/O: no files, no
environment, no clock. Three independent checks:

* importing every module of `policies` in a fresh interpreter pulls in none of the
  libraries that talk to the network or the cluster;
* no source file of `policies` calls open() or reads os.environ, time.time,
  datetime.now and their kin (an AST scan, so a comment or a string does not count);
* the import-linter contracts in pyproject.toml hold (`lint-imports`).
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"

# Libraries that open sockets or talk to the cluster, and the stdlib modules that do
# (`socket` itself is not listed: pydantic imports importlib.metadata for its plugin
# loader, which imports email.utils, which imports socket, without ever using it).
DENIED_MODULES = (
    "yaml",
    "flask",
    "werkzeug",
    "gunicorn",
    "kubernetes",
    "cryptography",
    "urllib3",
    "requests",
    "prometheus_client",
    "jsonpatch",
    "http.client",
    "http.server",
    "ssl",
    "certs",
    "cluster",
    "webhook",
    "reconciler",
    "snapguard",
)

IMPORT_EVERYTHING = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    sys.path.insert(0, sys.argv[1])
    before = set(sys.modules)
    import policies
    imported = ["policies"]
    for module in pkgutil.walk_packages(policies.__path__, "policies."):
        importlib.import_module(module.name)
        imported.append(module.name)
    print(json.dumps({
        "imported": imported,
        "before": sorted(before),
        "after": sorted(sys.modules),
    }))
    """
)


def _denied(name: str) -> bool:
    return any(name == d or name.startswith(d + ".") for d in DENIED_MODULES)


def test_importing_policies_pulls_in_no_io_library() -> None:
    """Every module of `policies`, imported in a fresh interpreter, leaves no module of
    the deny-list in sys.modules."""
    completed = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, str(ROOT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    # The check means something only if the interpreter did not start with them.
    assert not [m for m in report["before"] if _denied(m)], report["before"]
    assert {"policies.engine", "policies.models", "policies.rules.vd"} <= set(report["imported"])
    denied = sorted(m for m in report["after"] if _denied(m))
    assert denied == [], f"importing policies pulled in {denied}"


# --- the AST scan ----------------------------------------------------------------------

# module name -> attributes that read the environment or the clock, or do I/O.
FORBIDDEN_ATTRIBUTES: dict[str, frozenset[str]] = {
    "os": frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "open", "system", "popen"}),
    "time": frozenset({"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "sleep"}),
    "datetime": frozenset({"now", "utcnow", "today"}),
    "date": frozenset({"today"}),
    "io": frozenset({"open"}),
    "builtins": frozenset({"open"}),
    "sys": frozenset({"stdin", "stdout", "stderr"}),
}
FORBIDDEN_CALLS = frozenset({"open", "input", "print", "exec", "eval", "breakpoint"})


def _dotted(node: ast.expr) -> str:
    """`a.b.c` of a Name/Attribute chain, "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def impurities(source: str, filename: str = "<source>") -> list[str]:
    """Every call of open() and kin, and every use of an environment, clock or I/O
    attribute, in `source`, as "file:line: what"."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    # `import time as clock`, `from datetime import datetime as dt`: the alias is
    # resolved to the name it stands for.
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name.rsplit(".", 1)[-1]
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{where}: calls {func.id}()")
            elif isinstance(func, ast.Attribute) and func.attr in {"open", "read_text", "read_bytes", "write_text", "write_bytes"}:
                found.append(f"{where}: calls .{func.attr}()")
        elif isinstance(node, ast.Attribute):
            owner = _dotted(node.value)
            last = owner.rsplit(".", 1)[-1]
            last = aliases.get(last, last)
            if node.attr in FORBIDDEN_ATTRIBUTES.get(last, ()):
                found.append(f"{where}: uses {owner}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            last = node.module.rsplit(".", 1)[-1]
            for alias in node.names:
                if alias.name in FORBIDDEN_ATTRIBUTES.get(last, ()) or (
                    node.module == "builtins" and alias.name in FORBIDDEN_CALLS
                ):
                    found.append(f"{where}: imports {alias.name} from {node.module}")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    """The scanner itself works (so the next test cannot pass by finding nothing)."""
    source = textwrap.dedent(
        """
        import os, time, datetime
        from os import environ
        from datetime import datetime as dt
        # open(x) in a comment does not count, nor does "os.environ" in a string
        a = open("f")
        b = os.environ["HOME"]
        c = os.getenv("HOME")
        d = time.time()
        e = time.monotonic()
        f = datetime.datetime.now()
        g = dt.utcnow()
        h = pathlib.Path("x").read_text()
        """
    )
    found = impurities(source)
    assert len(found) == 9, found
    for fragment in ("open()", "os.environ", "os.getenv", "time.time", "time.monotonic",
                     "datetime.datetime.now", "dt.utcnow", "imports environ", ".read_text()"):
        assert any(fragment in f for f in found), fragment
    assert impurities("x = {'open': 1}\nname.opening = 2\n") == []


def test_no_policies_source_does_io_or_reads_env_or_clock() -> None:
    """No file under policies/ calls open() or reads os.environ, os.getenv, time.time,
    time.monotonic, datetime.now or datetime.utcnow."""
    files = sorted(POLICIES.rglob("*.py"))
    assert len(files) > 5
    found = [
        problem
        for path in files
        for problem in impurities(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert found == []


# --- import-linter ---------------------------------------------------------------------


def _lint_imports() -> str | None:
    beside = Path(sys.executable).parent / "lint-imports"
    return str(beside) if beside.exists() else shutil.which("lint-imports")


def test_import_contracts_hold() -> None:
    """The import-linter contracts of pyproject.toml are kept: the layers, the pure
    engine, the only importer of the kubernetes client, the certs package."""
    executable = _lint_imports()
    if executable is None:
        pytest.skip("lint-imports (import-linter) is not installed")
    completed = subprocess.run(
        [executable, "--no-cache"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
