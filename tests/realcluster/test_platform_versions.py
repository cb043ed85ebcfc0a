"""The webhook on an older platform: a control plane of its own with the DVP v0.22.0
CRDs (no VirtualMachineMACAddress, no operations yet). `snapguard serve` syncs there
too, says which kinds the server does not serve, and decides from the ones it does.
"""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes
import pytest

from cluster.api import KubeApi
from tests.realcluster.conftest import Serve, start_serve
from tests.realcluster.controlplane import ControlPlane, binaries_dir, wait_for
from tests.realcluster.objects import ApiStore
from tests.reconciler import objects as o

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def older(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("v0.22.0"), binaries_dir(), crd_sets=("v0.22.0", "extra")) as plane:
        yield plane


def test_serve_on_a_v0_22_cluster_syncs_and_decides(
    older: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Ready although VirtualMachineMACAddress is not served (logged, rules needing it
    would say unknown); a snapshot of a missing VM is denied, of a stopped one admitted."""
    directory = tmp_path_factory.mktemp("serve-v0.22.0")
    serve: Serve = start_serve(older, directory)
    client = kubernetes.config.new_client_from_config(config_file=str(older.kubeconfig(directory / "admin")))
    try:
        assert "VirtualMachineMACAddress is not served by the API server" in serve.webhook.stderr()
        namespace = older.namespace("older")
        snapshot = {"apiVersion": o.DVP, "kind": "VirtualMachineSnapshot",
                    "metadata": {"name": "s1", "namespace": namespace},
                    "spec": {"virtualMachineName": "vm1", "requiredConsistency": False}}
        response = serve.review(snapshot)
        assert not response["allowed"] and "vms-vm-exists" in response["status"]["message"]
        o.stopped_vm_with_disks(ApiStore(KubeApi(client), namespace), "d1")
        wait_for(lambda: serve.review(snapshot)["allowed"], "the VM to be seen", 30)
    finally:
        client.close()
        serve.stop()
