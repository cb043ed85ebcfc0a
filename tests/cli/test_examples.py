"""The worked examples of README and docs/platform-versions.md decide as they say, so
the documentation cannot drift from the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snapguard.cli import main

ROOT = Path(__file__).resolve().parents[2]
STATE = str(ROOT / "examples" / "state" / "demo.yaml")
MANIFESTS = ROOT / "examples" / "manifests"


def check(capsys: pytest.CaptureFixture[str], *paths: Path, version: str | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    args = ["check", "--state", STATE, "-o", "json", *(str(p) for p in paths)]
    if version:
        args += ["--platform-version", version]
    code = main(args)
    return code, json.loads(capsys.readouterr().out)


def rules(result: dict, key: str) -> set[str]:  # type: ignore[type-arg]
    return {v["rule"] for v in result[key]}


def test_restore_alone_is_allowed_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """vmop Restore of the running VM web: allowed, warned that web is stopped and started."""
    code, out = check(capsys, MANIFESTS / "restore-web.yaml")
    (result,) = out["results"]
    assert code == 0 and result["allowed"] and rules(result, "warnings") == {"restore-running-vm"}


def test_clone_is_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    """vmop Clone with a prefix: nothing collides and web can be frozen for its snapshot."""
    code, out = check(capsys, MANIFESTS / "clone-web.yaml")
    assert code == 0 and out["results"][0]["allowed"] and out["results"][0]["warnings"] == []


def test_create_from_snapshot_is_denied_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    """The vmsop that renames only the VM collides with the existing disks, and says how to avoid it."""
    code, out = check(capsys, MANIFESTS / "create-from-snapshot.yaml")
    (result,) = out["results"]
    assert code == 1 and rules(result, "violations") == {"clone-name-conflict"}
    assert all("nameReplacement entry" in v["message"] for v in result["violations"])


def test_the_whole_folder_as_kubectl_apply_would(capsys: pytest.CaptureFixture[str]) -> None:
    """Applied in order, the clone is unfinished when the restore comes: op-in-progress."""
    code, out = check(capsys, MANIFESTS)
    by_name = {r["name"]: r for r in out["results"]}
    assert code == 1 and out["platformVersion"] == "1.10"
    assert rules(by_name["web-back"], "violations") == {"op-in-progress"}
    assert by_name["web-manual"]["allowed"] and not by_name["db-manual"]["allowed"]


def test_legacy_restores_on_their_release(capsys: pytest.CaptureFixture[str]) -> None:
    """The VirtualMachineRestore examples: decided by the vmr-* rules on v1.8 (with the
    deprecation warning), refused as not served on v1.10."""
    legacy = ROOT / "examples" / "legacy"
    _, old = check(capsys, legacy, version="1.8")
    assert all("vmr-deprecated" in rules(r, "warnings") for r in old["results"])
    assert any("vmr-name-conflict" in rules(r, "violations") for r in old["results"])
    _, new = check(capsys, legacy)
    assert all(rules(r, "violations") == {"vmr-deprecated"} for r in new["results"])
