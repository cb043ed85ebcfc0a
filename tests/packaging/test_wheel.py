"""The package as a user gets it: the wheel built from this checkout, installed into a
fresh virtual environment without extras (with constraints.txt, as the image is), and
every registered command run from there, outside the checkout: `--help` of each, then
real `check`, `check --mutate`, `review`, `rules` and `audit` runs on the examples.

A module the package imports but does not declare fails here as it would for a user
(`ModuleNotFoundError` on the first command), even when the test tools bring it in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from .commands import registered

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.wheel


class Install:
    def __init__(self, prefix: Path, cwd: Path) -> None:
        self.prefix = prefix
        self.cwd = cwd
        self.bin = prefix / "bin"

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return subprocess.run(
            [str(self.bin / "snapguard"), *args],
            cwd=self.cwd,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(ROOT)],
        check=True,
        cwd=work,
    )
    (wheel,) = dist.glob("dvp_snapguard-*.whl")
    prefix = work / "venv"
    venv.create(prefix, with_pip=True)
    subprocess.run(
        [str(prefix / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(ROOT / "constraints.txt"), str(wheel)],
        check=True,
        cwd=work,
    )
    cwd = work / "elsewhere"
    cwd.mkdir()
    yield Install(prefix, cwd)


def test_installs_exactly_the_declared_closure(installed: Install) -> None:
    """Nothing from the test extra came along (so the commands below prove the runtime
    dependencies suffice), and every installed distribution is pinned."""
    freeze = subprocess.run(
        [str(installed.bin / "python"), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True, text=True, check=True,
    ).stdout.lower().splitlines()
    names = {line.split("==")[0].split(" @ ")[0] for line in freeze}
    assert not names & {"pytest", "hypothesis", "mypy", "ruff"}, "the test extra was installed"
    pins = {line.lower() for line in (ROOT / "constraints.txt").read_text().splitlines()}
    unpinned = [line for line in freeze if "==" in line and line not in pins]
    assert not unpinned, f"installed but not in constraints.txt: {unpinned}"


def test_registers_the_same_commands_as_the_checkout(installed: Install) -> None:
    lines = subprocess.run(
        [str(installed.bin / "python"), str(Path(__file__).with_name("commands.py"))],
        cwd=installed.cwd, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert lines and lines == registered()


def test_every_module_imports(installed: Install) -> None:
    """Modules no `--help` reaches (the gunicorn worker, the watch cache) import too."""
    script = (
        "import importlib, pkgutil\n"
        "for top in ('policies', 'certs', 'cluster', 'webhook', 'reconciler', 'snapguard'):\n"
        "    package = importlib.import_module(top)\n"
        "    for info in pkgutil.walk_packages(package.__path__, top + '.'):\n"
        "        importlib.import_module(info.name)\n"
    )
    result = subprocess.run(
        [str(installed.bin / "python"), "-c", script], cwd=installed.cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", registered())
def test_help(installed: Install, command: str) -> None:
    result = installed.run(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: snapguard {command}")
    assert not result.stderr


def test_top_level_help_and_version(installed: Install) -> None:
    assert installed.run("--help").returncode == 0
    version = installed.run("--version")
    assert version.returncode == 0 and version.stdout.startswith("snapguard ")
    kubectl = subprocess.run(
        [str(installed.bin / "kubectl-snapguard"), "--version"], capture_output=True, text=True, cwd=installed.cwd
    )
    assert kubectl.returncode == 0 and kubectl.stdout == version.stdout


def test_check_denies_and_admits(installed: Install) -> None:
    state = str(EXAMPLES / "state")
    denied = installed.run("check", "--state", state, str(EXAMPLES / "manifests" / "vms-db.yaml"))
    assert denied.returncode == 1, denied.stderr
    assert "DENY" in denied.stdout and "vms-consistency" in denied.stdout
    admitted = installed.run("check", "--state", state, "-o", "json", str(EXAMPLES / "manifests" / "vms-web.yaml"))
    assert admitted.returncode == 0, admitted.stderr
    assert json.loads(admitted.stdout)["summary"]["denied"] == 0


def test_check_mutate_shows_the_patch(installed: Install) -> None:
    result = installed.run(
        "check", "--mutate", "--state", str(EXAMPLES / "state"), str(EXAMPLES / "manifests" / "vms-web.yaml")
    )
    assert result.returncode == 0, result.stderr
    assert "/spec/requiredConsistency" in result.stdout or "/spec/keepIPAddress" in result.stdout


def test_review(installed: Install) -> None:
    result = installed.run("review", "--state", str(EXAMPLES / "state"), str(EXAMPLES / "reviews" / "vms-db.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["response"]["allowed"] is False


def test_rules(installed: Install) -> None:
    result = installed.run("rules")
    assert result.returncode == 0, result.stderr
    assert "vms-consistency" in result.stdout


def test_audit(installed: Install) -> None:
    result = installed.run("audit", "--state", str(EXAMPLES / "state"), "-o", "json")
    assert result.returncode in (0, 1), result.stderr
    json.loads(result.stdout)


def test_bad_input_is_one_line(installed: Install, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[" * 5000 + "]" * 5000)
    result = installed.run("check", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
