"""`snapguard serve` refuses to start on bad input: one line on stderr, exit code 2,
no traceback, nothing listening. (Starting for real is in test_server.py.)"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from snapguard.cli import main

from .conftest import STATE, free_port


def serve(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["serve", *args])
    _, err = capsys.readouterr()
    return code, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert err.startswith("snapguard: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_unknown_rule_in_policy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  vds-no-such-rule: deny\n")
    code, err = serve(capsys, "--policy", str(policy), "--cert-dir", str(tmp_path / "certs"))
    assert_one_line_error(code, err, str(policy), "vds-no-such-rule")
    assert not (tmp_path / "certs").exists()  # refused before touching anything


def test_unknown_action_in_policy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  vds-disk-exists: maybe\n")
    code, err = serve(capsys, "--policy", str(policy), "--cert-dir", str(tmp_path / "certs"))
    assert_one_line_error(code, err, "maybe")


def test_bad_state_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    state = tmp_path / "state.yaml"
    state.write_text("kind: VirtualDisk\nmetadata: {namespace: ns1}\n")
    code, err = serve(capsys, "--state", str(state), "--cert-dir", str(tmp_path / "certs"))
    assert_one_line_error(code, err, str(state), "metadata.name")


def test_missing_state_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = serve(capsys, "--state", str(tmp_path / "nope"), "--cert-dir", str(tmp_path / "certs"))
    assert_one_line_error(code, err, "nope")


def test_broken_mounted_certificate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A directory without ca.key is used as it is (a mounted Secret): a broken tls.crt
    stops the start, it is not silently replaced."""
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "tls.crt").write_text("not a certificate\n")
    (certs / "tls.key").write_text("not a key\n")
    code, err = serve(capsys, "--cert-dir", str(certs), "--state", str(STATE))
    assert_one_line_error(code, err, "tls.crt")
    assert (certs / "tls.crt").read_text() == "not a certificate\n"


def test_missing_client_ca(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = serve(capsys, "--state", str(STATE), "--cert-dir", str(tmp_path / "certs"), "--client-ca", str(tmp_path / "clients.crt"))
    assert_one_line_error(code, err, "clients.crt")


def test_garbage_client_ca(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "clients.crt"
    bad.write_text("garbage\n")
    code, err = serve(capsys, "--state", str(STATE), "--cert-dir", str(tmp_path / "certs"), "--client-ca", str(bad))
    assert_one_line_error(code, err, "clients.crt")


def test_port_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = serve(capsys, "--state", str(STATE), "--port", str(port), "--cert-dir", str(tmp_path / "certs"))
    assert_one_line_error(code, err, f"127.0.0.1:{port}")


@pytest.mark.parametrize(("flag", "value"), [("--port", "0"), ("--port", "70000"), ("--workers", "0"), ("--threads", "-1")])
def test_bad_numbers(capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, value: str) -> None:
    args = ["--cert-dir", str(tmp_path / "certs"), flag, value]
    if flag != "--port":
        args += ["--port", str(free_port())]
    code, err = serve(capsys, *args)
    assert_one_line_error(code, err, flag)


def test_no_view_is_refused_fail_closed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Neither --state nor a cluster: an empty view would admit almost everything, so the
    server does not start unless that is asked for."""
    code, err = serve(capsys, "--cert-dir", str(tmp_path / "certs"), "--port", str(free_port()))
    assert_one_line_error(code, err, "no view of the cluster", "--allow-empty-view")


def test_allow_empty_view_gets_past_the_view(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = serve(capsys, "--allow-empty-view", "--cert-dir", str(tmp_path / "certs"), "--port", str(port))
    assert_one_line_error(code, err)
    assert "no view" not in err and str(port) in err
