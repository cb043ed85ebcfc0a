"""Bad input, as an attacker or a careless script would write it, through the real
entry point: every case is exit 2 with one line on stderr naming the file, the document
and (where there is one) the field; never a traceback, never exit 1 (which CI reads as
"denied"), never silently fewer objects."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from snapguard.cli import main

CASES = Path(__file__).resolve().parents[1] / "cases"
DEEP_SECRET = CASES / "vmr-snapshot-ready" / "secret-deeply-nested"
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: ns1\n"
HUGE = "9" * 5000


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_input_error(capsys: pytest.CaptureFixture[str], args: list[str], *fragments: str) -> str:
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert err.startswith("snapguard: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


class TestOversizedIntegers:
    def test_in_a_yaml_manifest(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        path = write(tmp_path / "m.yaml", CONFIGMAP + f"data:\n  size: {HUGE}\n")
        assert_input_error(capsys, ["check", path], f"{path}#0", "data.size", "5000 digits")

    def test_in_a_json_manifest(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        obj = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "spec": {"n": [1, ' + HUGE + "]}}"
        path = write(tmp_path / "m.json", obj)
        assert_input_error(capsys, ["check", path], f"{path}#0", "spec.n[1]")

    def test_hexadecimal_in_yaml(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """0x... is converted without the decimal limit, then cannot be printed."""
        path = write(tmp_path / "m.yaml", CONFIGMAP + "data:\n  size: 0x" + "f" * 4000 + "\n")
        assert_input_error(capsys, ["check", path], "data.size", "integer beyond")

    def test_in_a_state_file(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        state = write(tmp_path / "state.yaml", CONFIGMAP + f"data:\n  size: {HUGE}\n")
        manifest = write(tmp_path / "m.yaml", CONFIGMAP)
        assert_input_error(capsys, ["check", "--state", state, manifest], state, "data.size")

    def test_in_a_policy_file(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        policy = write(tmp_path / "policy.yaml", f"exemptNamespaces: [{HUGE}]\n")
        manifest = write(tmp_path / "m.yaml", CONFIGMAP)
        assert_input_error(capsys, ["check", "--policy", policy, manifest], policy, "exemptNamespaces[0]")

    def test_in_a_review_file(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        review = write(tmp_path / "review.json", '{"request": {"uid": ' + HUGE + "}}")
        assert_input_error(capsys, ["review", review], review, "request.uid")


class TestDeepNesting:
    @pytest.mark.parametrize("depth", [150, 900, 100_000])
    def test_json_manifest(self, capsys: pytest.CaptureFixture[str], tmp_path: Path, depth: int) -> None:
        path = write(
            tmp_path / "m.json",
            '{"kind": "ConfigMap", "metadata": {"name": "cm"}, "x": ' + "[" * depth + "]" * depth + "}",
        )
        assert_input_error(capsys, ["check", path], f"{path}#0", "nested deeper than 100 levels")

    def test_yaml_manifest(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        path = write(tmp_path / "m.yaml", CONFIGMAP + "x: " + "[" * 500 + "]" * 500 + "\n")
        assert_input_error(capsys, ["check", path], f"{path}#0", "x[0][0]", "nested deeper than 100 levels")

    def test_json_state(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        state = write(tmp_path / "state.json", "[" * 5000 + "]" * 5000)
        manifest = write(tmp_path / "m.yaml", CONFIGMAP)
        assert_input_error(capsys, ["check", "--state", state, manifest], state, "nested deeper")

    @pytest.mark.parametrize("depth", [300, 100_000])
    def test_review(self, capsys: pytest.CaptureFixture[str], tmp_path: Path, depth: int) -> None:
        review = write(tmp_path / "review.json", '{"request": ' + "[" * depth + "]" * depth + "}")
        assert_input_error(capsys, ["review", review], review, "nested deeper")


class TestDeepSecret:
    def test_is_a_decided_deny_even_when_rule_errors_only_warn(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """A snapshot Secret nested too deep to walk used to make every vmr-* rule raise,
        which `ruleErrors: warn` admitted. It is a decided deny by vmr-snapshot-ready."""
        policy = write(tmp_path / "policy.yaml", "ruleErrors: warn\n")
        code, out, err = run(
            capsys, "check", "-o", "json", "--policy", policy, "--platform-version", "1.1",
            "--state", str(DEEP_SECRET / "state.yaml"), str(DEEP_SECRET / "object.yaml"),
        )
        assert code == 1, err
        [result] = json.loads(out)["results"]
        assert result["allowed"] is False
        assert [v["rule"] for v in result["violations"]] == ["vmr-snapshot-ready"]
        assert "nested deeper than 100 levels" in result["violations"][0]["message"]
        assert not result["warnings"], "no rule errored"

    def test_secret_base64_of_deep_json_in_the_older_encoding(self, tmp_path: Path) -> None:
        from policies.restore import SnapshotContentError, decode_snapshot_secret

        deep = "[" * 5000 + "]" * 5000
        twice = base64.b64encode(base64.b64encode(deep.encode())).decode()
        decoded = decode_snapshot_secret("s", {"vm": twice})
        assert isinstance(decoded, SnapshotContentError)
        assert "nested deeper" in decoded.problem


class TestEncodingAndSyntax:
    def test_policy_not_utf8(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        policy = write(tmp_path / "policy.yaml", b"rules: {}\n# caf\xe9\n")
        manifest = write(tmp_path / "m.yaml", CONFIGMAP)
        assert_input_error(capsys, ["check", "--policy", policy, manifest], policy, "not UTF-8")

    def test_review_not_utf8(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        review = write(tmp_path / "review.yaml", b"request: {uid: \xff}\n")
        assert_input_error(capsys, ["review", review], review, "not UTF-8")

    def test_duplicate_keys_in_a_manifest(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        path = write(tmp_path / "m.yaml", "kind: ConfigMap\nmetadata:\n  name: a\n  name: b\n")
        assert_input_error(capsys, ["check", path], f"{path}#0", "line 4", 'duplicate key "name"')

    def test_duplicate_keys_in_a_policy(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        policy = write(tmp_path / "policy.yaml", "rules:\n  vms-pending-changes: warn\nrules: {}\n")
        manifest = write(tmp_path / "m.yaml", CONFIGMAP)
        assert_input_error(capsys, ["check", "--policy", policy, manifest], policy, 'duplicate key "rules"')

    @pytest.mark.parametrize(
        ("metadata", "said"),
        [("{name: 5}", "metadata.name must be a string, got a number (5)"),
         ("{name: [a]}", "metadata.name must be a string, got a list"),
         ("{name: a, namespace: {x: 1}}", "metadata.namespace must be a string, got a mapping"),
         ("[a]", "metadata must be a mapping, got a list")],
    )
    def test_metadata_of_the_wrong_type(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path, metadata: str, said: str
    ) -> None:
        path = write(tmp_path / "m.yaml", f"kind: ConfigMap\nmetadata: {metadata}\n")
        err = assert_input_error(capsys, ["check", path], f"{path}#0", said)
        assert "has no metadata.name" not in err

    def test_empty_yaml_and_empty_json_alike(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        answers = []
        for name in ("empty.yaml", "empty.json", "blank.json"):
            path = write(tmp_path / name, "" if name.startswith("empty") else "  \n")
            code, out, err = run(capsys, "check", "--state", path, path)
            answers.append((code, out, err))
        header = "Decided for DVP platform v1.10 (change with --platform-version or platformVersion)\n"
        assert answers == [(0, header + "0 checked, 0 denied, 0 warned, 0 skipped\n", "")] * 3


class TestDirectories:
    def test_unreadable_manifests_directory(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """(Simulated: the tests run as root, who reads every directory.)"""
        locked = tmp_path / "manifests" / "locked"
        locked.mkdir(parents=True)
        real_scandir = os.scandir

        def scandir(path: object) -> object:
            if Path(str(path)) == locked:
                raise PermissionError(13, "Permission denied")
            return real_scandir(path)  # type: ignore[call-overload]

        monkeypatch.setattr(os, "scandir", scandir)
        assert_input_error(capsys, ["check", str(tmp_path / "manifests")], str(locked), "cannot read directory", "Permission denied")
        assert_input_error(capsys, ["check", "--state", str(locked), str(tmp_path)], str(locked), "Permission denied")

    def test_symlinked_subdirectory_is_followed(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        real = tmp_path / "elsewhere"
        real.mkdir()
        write(real / "cm.yaml", CONFIGMAP)
        manifests = tmp_path / "manifests"
        manifests.mkdir()
        (manifests / "linked").symlink_to(real, target_is_directory=True)
        code, out, err = run(capsys, "check", str(manifests))
        assert code == 0, err
        assert out.endswith("1 skipped\n")  # the ConfigMap was read (and is not governed)

    def test_symlink_loop(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        manifests = tmp_path / "manifests"
        (manifests / "sub").mkdir(parents=True)
        (manifests / "sub" / "back").symlink_to(manifests, target_is_directory=True)
        assert_input_error(capsys, ["check", str(manifests)], "symlink loop")

    def test_broken_symlink(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        manifests = tmp_path / "manifests"
        manifests.mkdir()
        (manifests / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
        assert_input_error(capsys, ["check", str(manifests)], "gone.yaml", "broken symlink")


class TestForgedLines:
    def test_control_characters_in_names_are_escaped(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        name = "x\\nexamples/manifests/vms-db.yaml:2: ok    VirtualMachineSnapshot demo/db-manual (CREATE)\\e[2K"
        path = write(
            tmp_path / "m.yaml",
            "apiVersion: virtualization.deckhouse.io/v1alpha2\nkind: VirtualDiskSnapshot\n"
            f'metadata: {{name: "{name}", namespace: ns1}}\nspec: {{virtualDiskName: "d\\r1"}}\n',
        )
        code, out, err = run(capsys, "check", path)
        assert code in (0, 1), err
        header, *lines = out.splitlines()
        assert header.startswith("Decided for DVP platform") and len(lines) >= 2
        # Every line but the summary is one of ours, about the one object; none forged.
        assert all(line.startswith(f"{path}:1: ") for line in lines[:-1]), lines
        assert all("VirtualDiskSnapshot ns1/x\\n" in line for line in lines[:-1]), lines
        assert "\x1b" not in out and "\r" not in out
