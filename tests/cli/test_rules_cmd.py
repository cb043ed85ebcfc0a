"""`snapguard rules` and the generated rules documentation come from the catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.catalogue import CATALOGUE
from snapguard.cli import main
from snapguard.commands.rules import render_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def test_lists_every_rule_with_kinds_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    """Each catalogue entry is one line: id, short kinds, default action, summary."""
    assert main(["rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CATALOGUE)
    by_id = {line.split()[0]: line.split() for line in lines}
    assert by_id["vds-consistency"][1:3] == ["vds", "deny"]
    assert by_id["snapshot-class-default"][1:3] == ["vds,vms", "warn"]


def test_json_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == list(CATALOGUE)
    assert all(r["summary"] for r in listed)


def test_docs_match_the_catalogue() -> None:
    """docs/rules.md is generated; regenerate with `snapguard rules -o markdown > docs/rules.md`."""
    assert DOCS.read_text() == render_markdown()
