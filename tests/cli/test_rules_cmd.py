"""`snapguard rules` and the generated rules documentation come from the catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.catalogue import CATALOGUE
from policies.platform import PlatformVersion
from snapguard.cli import main
from snapguard.commands.rules import render_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def test_lists_every_rule_with_kinds_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    """After a header naming the release, each rule of that release is one line: id,
    short kinds, default action on that release, summary."""
    assert main(["rules", "--platform-version", "0.23"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.startswith("Rules of DVP platform v0.23")
    on_023 = [r for r in CATALOGUE.values() if PlatformVersion(0, 23) in r.versions]
    assert len(lines) == len(on_023)
    by_id = {line.split()[0]: line.split() for line in lines}
    assert by_id["vds-consistency"][1:3] == ["vds", "deny"]
    assert by_id["snapshot-class-default"][1:3] == ["vds,vms", "warn"]
    assert "vds-snapshot-class" in by_id and "op-vm-exists" not in by_id


def test_listing_follows_the_platform_version(capsys: pytest.CaptureFixture[str]) -> None:
    """On the default (newest) release the class rules are gone and the default class deny."""
    assert main(["rules"]) == 0
    by_id = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert by_id["snapshot-class-default"][2] == "deny"
    assert "vds-snapshot-class" not in by_id and by_id["op-vm-exists"][1:3] == ["vmop,vmsop", "deny"]


def test_json_listing(capsys: pytest.CaptureFixture[str]) -> None:
    """Every rule of the release, in catalogue order, each saying for which release."""
    assert main(["rules", "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [r.id for r in CATALOGUE.values() if PlatformVersion(1, 10) in r.versions]
    assert all(r["summary"] and r["platformVersion"] == "1.10" for r in listed)


def test_docs_match_the_catalogue() -> None:
    """docs/rules.md is generated; regenerate with `snapguard rules -o markdown > docs/rules.md`."""
    assert DOCS.read_text() == render_markdown()
