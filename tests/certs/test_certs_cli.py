"""snapguard certs create/show, driven the way snapguard/cli.py drives them."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from snapguard.commands import certs as certs_command


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snapguard")
    subparsers = parser.add_subparsers(dest="command", required=True)
    certs_command.add_parser(subparsers)
    return parser.parse_args(list(argv))


def _run(*argv: str) -> int:
    args = _parse(*argv)
    code: int = args.func(args)
    return code


def test_create_then_show_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert_dir = tmp_path / "certs"
    assert (
        _run(
            "certs",
            "create",
            "--cert-dir",
            str(cert_dir),
            "--service",
            "snapguard",
            "--namespace",
            "d8-snapguard",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ca.crt: created" in out
    assert "tls.crt: created" in out
    assert stat.S_IMODE((cert_dir / "tls.key").stat().st_mode) == 0o600

    assert _run("certs", "show", "--cert-dir", str(cert_dir), "--output", "json") == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    doc = json.loads(captured.out)
    assert doc["ca"]["is_ca"] is True
    assert doc["ca"]["key_matches"] is True
    assert doc["tls"]["key_matches"] is True
    assert doc["tls"]["signed_by_ca"] is True
    assert "snapguard.d8-snapguard.svc" in doc["tls"]["sans"]
    assert doc["tls"]["subject"] == "CN=snapguard.d8-snapguard.svc"
    assert 360 <= doc["tls"]["days_left"] <= 365
    assert doc["tls"]["not_after"].endswith("+00:00")


def test_create_is_idempotent_and_force_renews(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert_dir = str(tmp_path / "certs")
    assert _run("certs", "create", "--cert-dir", cert_dir) == 0
    capsys.readouterr()
    assert _run("certs", "create", "--cert-dir", cert_dir) == 0
    assert capsys.readouterr().out.count(": unchanged") == 2
    assert _run("certs", "create", "--cert-dir", cert_dir, "--force") == 0
    assert capsys.readouterr().out.count(": renewed (forced)") == 2


def test_show_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert_dir = str(tmp_path / "certs")
    _run("certs", "create", "--cert-dir", cert_dir)
    capsys.readouterr()
    assert _run("certs", "show", "--cert-dir", cert_dir) == 0
    out = capsys.readouterr().out
    assert "ca.crt:" in out and "tls.crt:" in out
    assert "SANs:        localhost, 127.0.0.1" in out
    assert "days left" in out
    assert out.count("key matches: yes") == 2
    assert "signed by ca.crt: yes" in out


def test_show_reports_key_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert_dir = tmp_path / "certs"
    _run("certs", "create", "--cert-dir", str(cert_dir))
    (cert_dir / "tls.key").write_bytes((cert_dir / "ca.key").read_bytes())
    capsys.readouterr()
    assert _run("certs", "show", "--cert-dir", str(cert_dir), "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["tls"]["key_matches"] is False


def test_default_dir_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cert_dir = tmp_path / "from-env"
    monkeypatch.setenv("SNAPGUARD_CERT_DIR", str(cert_dir))
    assert _run("certs", "create") == 0
    assert (cert_dir / "tls.crt").exists()


def test_default_dir_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SNAPGUARD_CERT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert _run("certs", "create") == 0
    assert (tmp_path / ".snapguard" / "certs" / "ca.key").exists()


def _assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("snapguard: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_show_bad_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert_dir = tmp_path / "certs"
    _run("certs", "create", "--cert-dir", str(cert_dir))
    (cert_dir / "tls.crt").write_bytes(b"this is not a certificate\n")
    capsys.readouterr()
    assert _run("certs", "show", "--cert-dir", str(cert_dir)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _assert_one_line_error(captured.err, f"{cert_dir / 'tls.crt'}: ", "not a PEM certificate")


def test_show_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("certs", "show", "--cert-dir", str(tmp_path / "nope")) == 2
    _assert_one_line_error(capsys.readouterr().err, "nope", "not found")


def test_show_missing_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert_dir = tmp_path / "certs"
    _run("certs", "create", "--cert-dir", str(cert_dir))
    (cert_dir / "tls.key").unlink()
    capsys.readouterr()
    assert _run("certs", "show", "--cert-dir", str(cert_dir)) == 2
    _assert_one_line_error(capsys.readouterr().err, "tls.key: private key not found")


def test_create_unwritable_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert _run("certs", "create", "--cert-dir", str(blocker / "certs")) == 2
    _assert_one_line_error(capsys.readouterr().err, str(blocker))


@pytest.mark.parametrize(
    "argv",
    [
        ("--service", "snapguard"),
        ("--namespace", "d8-snapguard"),
        ("--service", "Bad_Name", "--namespace", "d8-snapguard"),
    ],
)
def test_create_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert _run("certs", "create", "--cert-dir", str(tmp_path / "c"), *argv) == 2
    _assert_one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "c").exists()


def test_sub_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _parse("certs")
    assert info.value.code == 2
