"""`snapguard audit` against a live cluster: the in-process Kubernetes API server of
`tests/kubeapi`, driven by the real `kubernetes` client. Paged lists, Secrets read by
type or by name only, kinds the server does not serve, unreachable servers, and
PolicyReports applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from snapguard.cli import main
from tests.kubeapi.server import KubeAPIServer, RequestInfo

from . import objects as o

pytestmark = pytest.mark.kubeapi

LONG_AGO = "2020-01-01T00:00:00Z"
VMS_LIST = "/apis/virtualization.deckhouse.io/v1alpha2/virtualmachines?"


def seed(server: KubeAPIServer, items: list[dict[str, Any]]) -> None:
    for item in items:
        server.put_object(item)


def cluster_items() -> list[dict[str, Any]]:
    """ns1: a denied, stuck Pending snapshot and a lost one; five more VMs (more than two
    pages of VMs at page size 2), two of them with a provisioning Secret that is missing;
    ns2: a failed snapshot."""
    items = [
        o.storage_class(),
        o.snapshot_class(),
        o.disk("d1", "ns1", vm="vm1"),
        o.pvc("pvc-d1", "ns1"),
        o.vm("vm1", "ns1", agent=False, disks=("d1",)),
        o.disk_snapshot("pending", "ns1", phase="Pending", created=LONG_AGO),
        o.disk_snapshot("lost", "ns1", volume_snapshot="vs-gone"),
        o.disk_snapshot("failed", "ns2", phase="Failed", conditions=[
            o.condition("VirtualDiskSnapshotReady", "False", "VirtualDiskSnapshotFailed", "boom")]),
        o.volume_snapshot("vs-other", "ns1"),
        o.secret("cloud-ok", "ns1"),
        o.secret("snapshot-secret", "ns1", type_=o.SNAPSHOT_SECRET_TYPE),
    ]
    for index in range(5):
        secret = ("cloud-ok", "cloud-missing")[index % 2] if index < 2 else None
        items.append(o.vm(f"vm-extra-{index}", "ns1", phase="Stopped", provisioning_secret=secret))
    return items


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def kubeconfig(kubeapi: KubeAPIServer, tmp_path: Path) -> str:
    seed(kubeapi, cluster_items())
    return str(kubeapi.kubeconfig_path(tmp_path))


def listed_paths(server: KubeAPIServer, prefix: str) -> list[str]:
    return [path for method, path in server.request_log if method == "GET" and path.startswith(prefix)]


def test_json_from_a_paged_cluster(kubeapi: KubeAPIServer, kubeconfig: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Every kind is listed in pages of two (continue tokens followed to the end); the
    report is the same as from files, with cluster URIs as sources."""
    code, out, err = run(capsys, "--kubeconfig", kubeconfig, "-A", "-o", "json", "--preflight",
                         "--page-size", "2")
    assert code == 1, err
    document = json.loads(out)
    vm_pages = listed_paths(kubeapi, VMS_LIST)
    assert len(vm_pages) == 3  # six VMs, two a page
    assert all("limit=2" in path for path in vm_pages)
    assert sum("continue=" in path for path in vm_pages) == 2
    (result,) = document["results"]
    assert result["source"] == "cluster://kubeapi/ns1/VirtualDiskSnapshot/pending"
    assert result["operation"] == "AUDIT" and result["allowed"] is False
    assert [(f["namespace"], f["name"], f["rule"]) for f in document["findings"]] == [
        ("ns1", "lost", "snapshot-lost"), ("ns1", "pending", "snapshot-stuck"),
        ("ns2", "failed", "snapshot-failed")]
    assert document["summary"]["preflight"] == 6


def test_secrets_are_read_by_type_or_by_name(kubeapi: KubeAPIServer, kubeconfig: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Secrets are listed only with the snapshot type's field selector; a VM's
    provisioning Secret is fetched by name, and one that is missing denies the
    preflight with vms-dependencies, one that exists does not."""
    code, out, _ = run(capsys, "--kubeconfig", kubeconfig, "-A", "-o", "json", "--preflight")
    secret_lists = listed_paths(kubeapi, "/api/v1/secrets")
    assert secret_lists and all(
        "fieldSelector=type%3Dvirtualmachine.virtualization.deckhouse.io%2Fsnapshot" in p
        or "fieldSelector=type%3Dvirtualmachine.virtualization.deckhouse.io/snapshot" in p
        for p in secret_lists)
    fetched = sorted(listed_paths(kubeapi, "/api/v1/namespaces/ns1/secrets/"))
    assert fetched == ["/api/v1/namespaces/ns1/secrets/cloud-missing",
                       "/api/v1/namespaces/ns1/secrets/cloud-ok"]
    preflight = {e["name"]: e for e in json.loads(out)["preflight"]}
    assert [v["rule"] for v in preflight["vm-extra-1"]["violations"]] == ["vms-dependencies"]
    assert "vms-dependencies" not in [v["rule"] for v in preflight["vm-extra-0"]["violations"]]
    assert code == 1


def test_default_scope_is_the_contexts_namespace(kubeapi: KubeAPIServer, kubeconfig: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Like kubectl, without -n or -A the context's namespace (here `default`, which is
    empty) is audited; -n lists namespaced kinds in that namespace only."""
    code, out, _ = run(capsys, "--kubeconfig", kubeconfig, "-o", "json")
    assert code == 0 and json.loads(out)["findings"] == []
    kubeapi.request_log.clear()
    code, out, _ = run(capsys, "--kubeconfig", kubeconfig, "-o", "json", "-n", "ns2")
    assert code == 1
    assert [f["name"] for f in json.loads(out)["findings"]] == ["failed"]
    namespaced = [p for m, p in kubeapi.request_log if "virtualdisksnapshots" in p]
    assert namespaced and all("/namespaces/ns2/" in p for p in namespaced)


def test_sarif_has_cluster_locations(kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A finding in a live cluster points at a cluster:// URI and a logical location."""
    _, out, _ = run(capsys, "--kubeconfig", kubeconfig, "-A", "-o", "sarif")
    results = json.loads(out)["runs"][0]["results"]
    lost = next(r for r in results if r["ruleId"] == "snapshot-lost")
    (location,) = lost["locations"]
    assert location["physicalLocation"]["artifactLocation"]["uri"] == (
        "cluster://kubeapi/ns1/VirtualDiskSnapshot/lost")
    assert "region" not in location["physicalLocation"]
    assert location["logicalLocations"] == [
        {"fullyQualifiedName": "VirtualDiskSnapshot/ns1/lost", "kind": "resource"}]


def test_policy_reports_are_applied(kubeapi: KubeAPIServer, kubeconfig: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """--policy-report apply creates one report per namespace, updates them on the next
    run, and deletes a report whose namespace has nothing left to report."""
    code, out, err = run(capsys, "--kubeconfig", kubeconfig, "-A", "--policy-report", "apply")
    assert code == 1 and "1 checked" in out
    assert "PolicyReport ns1/dvp-snapguard created" in err
    assert "PolicyReport ns2/dvp-snapguard created" in err
    reports = {r["metadata"]["namespace"]: r for r in kubeapi.objects("policyreports")}
    assert set(reports) == {"ns1", "ns2"}
    ns2 = reports["ns2"]
    assert ns2["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "dvp-snapguard"}
    assert ns2["summary"]["fail"] == 1
    assert ns2["results"][0]["rule"] == "snapshot-failed"
    assert ns2["results"][0]["resources"][0]["uid"]  # the live object's uid
    first_version = reports["ns1"]["metadata"]["resourceVersion"]

    # ns2's failed snapshot is deleted: its report goes; ns1's is replaced.
    api_client = kubernetes.config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    kubernetes.client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "virtualization.deckhouse.io", "v1alpha2", "ns2", "virtualdisksnapshots", "failed")
    api_client.close()
    code, _, err = run(capsys, "--kubeconfig", kubeconfig, "-A", "--policy-report", "apply")
    assert "PolicyReport ns1/dvp-snapguard updated" in err
    assert "PolicyReport ns2/dvp-snapguard deleted" in err
    reports = {r["metadata"]["namespace"]: r for r in kubeapi.objects("policyreports")}
    assert set(reports) == {"ns1"}
    assert reports["ns1"]["metadata"]["resourceVersion"] != first_version


def test_policy_report_print_from_a_cluster(kubeapi: KubeAPIServer, kubeconfig: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """print writes YAML and nothing to the cluster."""
    import yaml

    code, out, _ = run(capsys, "--kubeconfig", kubeconfig, "-A", "--policy-report", "print")
    assert code == 1
    assert [r["metadata"]["namespace"] for r in yaml.safe_load_all(out)] == ["ns1", "ns2"]
    assert kubeapi.objects("policyreports") == []


@pytest.mark.parametrize(("status", "why"), [(404, "the cluster does not serve it"),
                                            (403, "listing it is forbidden")])
def test_kind_not_read_is_a_note(kubeapi: KubeAPIServer, kubeconfig: str, status: int, why: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A 404 on a list (VirtualMachineRestore on platform v1.9+) or a 403 is said once on
    stderr, the kind is not given (rules needing it say unknown) and the audit goes on."""
    kubeapi.fail_next("list", "virtualmachinerestores", code=status)
    code, out, err = run(capsys, "--kubeconfig", kubeconfig, "-A", "-o", "json")
    assert code == 1 and json.loads(out)["findings"]
    notes = [line for line in err.splitlines()
             if "VirtualMachineRestore" in line and not line.startswith("snapguard: platform: ")]
    assert len(notes) == 1
    assert notes[0].startswith("snapguard: note: ") and why in notes[0]


def test_volume_snapshots_not_served_means_no_lost_finding(
        kubeapi: KubeAPIServer, kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without the snapshot CRDs "gone" cannot be decided: no snapshot-lost finding, a
    note in the report instead."""
    kubeapi.fail_next("list", "volumesnapshots", code=404)
    _, out, _ = run(capsys, "--kubeconfig", kubeconfig, "-A", "-o", "json")
    document = json.loads(out)
    assert "snapshot-lost" not in [f["rule"] for f in document["findings"]]
    assert any("snapshot-lost was not checked" in note for note in document["notes"])


def test_secret_that_cannot_be_read_fails_the_audit(
        kubeapi: KubeAPIServer, kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A provisioning Secret the user may not read (403) is not taken as missing: exit 2
    with one line naming it."""
    kubeapi.fail_next("get", "secrets", code=403)
    code, out, err = run(capsys, "--kubeconfig", kubeconfig, "-A", "--preflight")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cannot read Secret ns1/cloud-" in err and "403" in err


def test_expired_continue_token_lists_again(kubeapi: KubeAPIServer, kubeconfig: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A 410 on a continue page restarts that kind's list; nothing is lost or doubled."""
    calls = {"n": 0}

    def second_vm_page(info: RequestInfo) -> bool:
        if info.verb == "list" and info.resource == "virtualmachines":
            calls["n"] += 1
            return calls["n"] == 2
        return False

    kubeapi.fail_next(second_vm_page, code=410, message="The provided continue parameter is too old")
    code, out, err = run(capsys, "--kubeconfig", kubeconfig, "-A", "-o", "json", "--preflight",
                         "--page-size", "2")
    assert code == 1, err
    names = [e["name"] for e in json.loads(out)["preflight"]]
    assert names == sorted(set(names)) and len(names) == 6
    assert len(listed_paths(kubeapi, VMS_LIST)) == 5  # 2 pages, then 3 again


def test_server_error_is_one_line(kubeapi: KubeAPIServer, kubeconfig: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A 500 on a list is exit 2 with one line naming the server and the kind."""
    kubeapi.fail_next("list", "virtualdisks", code=500)
    code, out, err = run(capsys, "--kubeconfig", kubeconfig, "-A")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert kubeapi.url in err and "virtualdisks.virtualization.deckhouse.io" in err and "500" in err


def test_unreachable_server_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cluster that cannot be reached is exit 2, one line naming the server."""
    server = KubeAPIServer().start()
    kubeconfig = str(server.kubeconfig_path(tmp_path))
    url = server.url
    server.stop()
    code, out, err = run(capsys, "--kubeconfig", kubeconfig, "-A")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert f"cannot reach the Kubernetes API server at {url}" in err
    assert "Traceback" not in err


def test_bad_kubeconfig_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    code, _, err = run(capsys, "--kubeconfig", str(kubeconfig))
    assert code == 2 and err.count("\n") == 1 and str(kubeconfig) in err


def test_no_cluster_and_no_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Neither --state nor any kubeconfig: one line suggesting --state."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = run(capsys)
    assert code == 2 and err.count("\n") == 1 and "--state" in err


def test_the_platform_version_is_read_from_the_cluster(
        kubeapi: KubeAPIServer, kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> None:
    """No flag, no policy file: the virtualization Module's version decides, said on
    stderr and in the report."""
    kubeapi.put_object({"apiVersion": "deckhouse.io/v1alpha1", "kind": "Module",
                        "metadata": {"name": "virtualization"}, "properties": {"version": "v1.8.2"}})
    _, out, err = run(capsys, "--kubeconfig", kubeconfig, "-A", "-o", "json")
    assert json.loads(out)["platformVersion"] == "1.8"
    assert "snapguard: platform: v1.8 (from the virtualization module's version v1.8.2)\n" in err


def test_the_platform_version_flag_wins_without_asking_the_cluster(
        kubeapi: KubeAPIServer, kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, err = run(capsys, "--kubeconfig", kubeconfig, "-A", "-o", "json", "--platform-version", "0.22")
    assert json.loads(out)["platformVersion"] == "0.22"
    assert "snapguard: platform: v0.22 (from --platform-version)\n" in err
    assert not listed_paths(kubeapi, "/apis/deckhouse.io/")
