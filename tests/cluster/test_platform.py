"""Platform version detection (`cluster.platform`) against the in-process API server,
one test per path: the virtualization Module's version, then what the API serves
(discovery of virtualization.deckhouse.io/v1alpha2 and two CRDs), then the default; and
the precedence of --platform-version and the policy file over what is detected."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from cluster.api import KubeApi
from cluster.config import ClusterTarget
from cluster.platform import detect_platform, detect_platform_of
from policies.platform import PlatformVersion
from snapguard.errors import UsageError
from snapguard.policyfile import policy_for_cluster
from tests.kubeapi.server import KubeAPIServer

pytestmark = pytest.mark.kubeapi

DVP = "virtualization.deckhouse.io"


def module(version: str | None) -> dict[str, Any]:
    properties = {"weight": 900, "source": "deckhouse", **({"version": version} if version else {})}
    return {"apiVersion": "deckhouse.io/v1alpha1", "kind": "Module", "metadata": {"name": "virtualization"},
            "properties": properties, "status": {"phase": "Ready"}}


def crd(plural: str, kind: str, spec_properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": spec_properties}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{DVP}"},
            "spec": {"group": DVP, "scope": "Namespaced",
                     "names": {"plural": plural, "kind": kind},
                     "versions": [{"name": "v1alpha2", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": schema}}]}}


def vmop_crd(*types: str) -> dict[str, Any]:
    return crd("virtualmachineoperations", "VirtualMachineOperation",
               {"type": {"type": "string", "enum": list(types)}, "virtualMachineName": {"type": "string"}})


def vds_crd(*, class_field: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"virtualDiskName": {"type": "string"}, "requiredConsistency": {"type": "boolean"}}
    if class_field:
        fields["volumeSnapshotClassName"] = {"type": "string"}
    return crd("virtualdisksnapshots", "VirtualDiskSnapshot", fields)


OLD_TYPES = ("Start", "Stop", "Restart", "Migrate", "Evict")


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[KubeAPIServer, KubeApi]]:
    """A server omitting the plurals the test's `omit` marker names."""
    marker = request.node.get_closest_marker("omit")
    omit = set(marker.args) if marker else set()
    with KubeAPIServer(omit=omit) as server:
        client = kubernetes.config.new_client_from_config(config_file=str(server.kubeconfig_path(tmp_path)))
        yield server, KubeApi(client)
        client.close()


def detected(cluster: tuple[KubeAPIServer, KubeApi], *objects: dict[str, Any]) -> tuple[str, str, str]:
    server, api = cluster
    for obj in objects:
        server.put_object(obj)
    found = detect_platform(api)
    return str(found.version), found.source, found.describe()


class TestModule:
    def test_the_modules_version_wins(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        """properties.version of the virtualization Module, even where the served kinds
        would say otherwise (both VirtualMachineRestore and vmsop are served: v1.8)."""
        assert detected(cluster, module("v1.10.3")) == (
            "1.10", "module", "platform: v1.10 (from the virtualization module's version v1.10.3)")

    def test_a_release_newer_than_known_says_whose_rules_decide(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        version, source, line = detected(cluster, module("v1.12.0"))
        assert (version, source) == ("1.12", "module")
        assert "decided by the rules of v1.10, the newest this dvp-snapguard knows" in line

    @pytest.mark.parametrize(("value", "note"), [
        (None, "the virtualization Module has no properties.version"),
        ("main", "the virtualization Module's version 'main' is not a release"),
    ])
    def test_no_usable_version_falls_back_to_the_served_kinds(
        self, cluster: tuple[KubeAPIServer, KubeApi], value: str | None, note: str
    ) -> None:
        version, source, line = detected(cluster, module(value))
        assert (version, source) == ("1.8", "inferred") and note in line

    def test_a_forbidden_module_falls_back_to_the_served_kinds(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        server, _ = cluster
        server.fail_next("get", "modules", code=403)
        version, source, line = detected(cluster, module("v1.10.3"))
        assert (version, source) == ("1.8", "inferred")
        assert "the virtualization Module cannot be read (403 Forbidden)" in line

    @pytest.mark.omit("modules")
    def test_no_deckhouse_module_api(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        """Not a Deckhouse cluster, or an old one: the Module kind is not served."""
        assert detected(cluster)[:2] == ("1.8", "inferred")


class TestServedKinds:
    @pytest.mark.omit("virtualmachinerestores")
    def test_vmsop_without_restores_is_v1_9_on(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        assert detected(cluster) == (
            "1.10", "inferred",
            "platform: v1.10 (inferred: the API serves VirtualMachineSnapshotOperation and no "
            "VirtualMachineRestore, as from v1.9; no virtualization Module)")

    def test_vmsop_and_restores_is_v1_2_to_v1_8(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        version, source, line = detected(cluster)
        assert (version, source) == ("1.8", "inferred")
        assert line.startswith("platform: v1.8 (inferred: the API serves VirtualMachineRestore and "
                               "VirtualMachineSnapshotOperation, as v1.2 - v1.8")

    @pytest.mark.omit("virtualmachinesnapshotoperations")
    def test_vmop_restore_without_vmsop_is_v1_1(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        """The CRD's spec.type enum has Restore (v1.1 added it), no vmsop yet (v1.2)."""
        version, _, line = detected(cluster, vmop_crd(*OLD_TYPES, "Restore", "Clone"), vds_crd(class_field=False))
        assert version == "1.1" and "VirtualMachineOperation with type Restore" in line

    @pytest.mark.omit("virtualmachinesnapshotoperations")
    def test_no_class_fields_and_vmmacs_is_v0_25(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        version, _, line = detected(cluster, vmop_crd(*OLD_TYPES), vds_crd(class_field=False))
        assert version == "0.25" and "VirtualMachineMACAddress is served" in line

    @pytest.mark.omit("virtualmachinesnapshotoperations", "virtualmachinemacaddresses")
    def test_no_class_fields_without_vmmacs_is_v0_24(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        version, _, line = detected(cluster, vmop_crd(*OLD_TYPES), vds_crd(class_field=False))
        assert version == "0.24" and "removed in v0.24" in line

    @pytest.mark.omit("virtualmachinesnapshotoperations")
    def test_class_fields_are_the_oldest_shape(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        version, _, line = detected(cluster, vmop_crd(*OLD_TYPES), vds_crd(class_field=True))
        assert version == "0.22" and "VirtualDiskSnapshot still has volumeSnapshotClassName" in line

    @pytest.mark.omit("virtualmachinesnapshotoperations")
    def test_unreadable_crds_are_the_oldest_shape(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        server, _ = cluster
        server.put_object(vmop_crd(*OLD_TYPES, "Restore"))
        server.fail_next("get", "customresourcedefinitions", code=403, count=2)
        version, _, line = detected(cluster)
        assert version == "0.22" and "the CRDs cannot be read" in line


class TestDefault:
    @pytest.mark.omit(
        "virtualdisks", "virtualmachines", "virtualmachineipaddresses", "virtualmachinemacaddresses",
        "virtualmachineblockdeviceattachments", "virtualdisksnapshots", "virtualmachinesnapshots",
        "virtualmachinerestores", "virtualmachineoperations", "virtualmachinesnapshotoperations",
        "virtualimages", "clustervirtualimages",
    )
    def test_no_virtualization_api_is_the_default(self, cluster: tuple[KubeAPIServer, KubeApi]) -> None:
        assert detected(cluster) == (
            "1.10", "default",
            "platform: v1.10 (the default: the API server does not serve virtualization.deckhouse.io/v1alpha2; "
            "set --platform-version or platformVersion)")

    def test_an_unreachable_server_is_the_default_not_an_error(self, tmp_path: Path) -> None:
        server = KubeAPIServer().start()
        kubeconfig = server.kubeconfig_path(tmp_path)
        server.stop()
        found = detect_platform_of(ClusterTarget(str(kubeconfig), None))
        assert (found.version, found.source) == (PlatformVersion(1, 10), "default")
        assert "cannot detect it from the API server" in found.how and server.url in found.how


class TestPrecedence:
    """--platform-version > the policy file's platformVersion > detected > default; the
    cluster is asked only when nothing is stated."""

    @staticmethod
    def args(tmp_path: Path, *, flag: str | None = None, policy: str | None = None) -> argparse.Namespace:
        path = None
        if policy is not None:
            (tmp_path / "policy.yaml").write_text(policy)
            path = str(tmp_path / "policy.yaml")
        return argparse.Namespace(policy=path, platform_version=flag)

    @pytest.mark.parametrize(
        ("flag", "policy", "expected"),
        [
            pytest.param("0.22", 'platformVersion: "1.8"\n', ("0.22", "platform: v0.22 (from --platform-version)", 0),
                         id="flag-over-file"),
            pytest.param(None, 'platformVersion: "1.8"\n',
                         ("1.8", "platform: v1.8 (from the policy file's platformVersion)", 0), id="file-over-cluster"),
            pytest.param(None, "rules: {}\n", ("1.1", "platform: v1.1 (detected)", 1), id="cluster-over-default"),
            pytest.param(None, None, ("1.1", "platform: v1.1 (detected)", 1), id="no-policy-file"),
        ],
    )
    def test_precedence(self, tmp_path: Path, flag: str | None, policy: str | None,
                        expected: tuple[str, str, int]) -> None:
        calls: list[int] = []

        def detect() -> tuple[PlatformVersion, str]:
            calls.append(1)
            return PlatformVersion(1, 1), "platform: v1.1 (detected)"

        decided, line = policy_for_cluster(self.args(tmp_path, flag=flag, policy=policy), detect)
        assert (str(decided.platform_version), line, len(calls)) == expected

    def test_without_a_cluster_the_default(self, tmp_path: Path) -> None:
        decided, line = policy_for_cluster(self.args(tmp_path), None)
        assert str(decided.platform_version) == "1.10"
        assert line == "platform: v1.10 (the default; no cluster to detect it from)"

    def test_a_bad_flag_is_a_usage_error(self, tmp_path: Path) -> None:
        with pytest.raises(UsageError, match="--platform-version"):
            policy_for_cluster(self.args(tmp_path, flag="one.ten"), None)
