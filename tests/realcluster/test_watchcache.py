"""`snapguard serve --kubeconfig` keeps its view of a real API server: the watch cache
syncs, follows creates, updates and deletes, and recovers when the API server restarts
and when the resourceVersion it resumes from was compacted away (410 Gone).

The webhook talks to a second kube-apiserver on the same etcd, started with
`--watch-cache=false` so that its watches are etcd's own: restarting it leaves the
session's API server (through which the test writes) untouched, and a compaction of
etcd makes every older resourceVersion answer 410. What the cache knows is read back
the way users see it, from its decisions: POST /validate of a VirtualMachineSnapshot of
the VM in question (`vms-vm-exists` denies while the cache has no such VM,
`vms-vm-ready` while its phase is neither Running nor Stopped).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cluster.api import KubeApi
from tests.realcluster.conftest import Serve
from tests.realcluster.controlplane import APIServer, ControlPlane, wait_for
from tests.realcluster.objects import ApiStore
from tests.reconciler import objects as o

pytestmark = pytest.mark.controlplane

# The cache's reconnect backoff is capped at 30 s; an API server restart takes up to a
# minute on two busy cores.
FOLLOW_TIMEOUT = 120.0
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def etcd_watches(control_plane: ControlPlane) -> Iterator[APIServer]:
    server = control_plane.add_apiserver("--watch-cache=false")
    yield server
    server.stop()
    control_plane.apiservers.remove(server)


@pytest.fixture(scope="module")
def serve(control_plane: ControlPlane, etcd_watches: APIServer, serve_factory: Callable[..., Serve],
          tmp_path_factory: pytest.TempPathFactory) -> Serve:
    kubeconfig = control_plane.kubeconfig(tmp_path_factory.mktemp("watch") / "kubeconfig", server=etcd_watches)
    return serve_factory(kubeconfig=kubeconfig)


def snapshot_of(namespace: str, vm: str) -> Obj:
    return {"apiVersion": o.DVP, "kind": "VirtualMachineSnapshot",
            "metadata": {"name": f"snap-{vm}", "namespace": namespace},
            "spec": {"virtualMachineName": vm, "requiredConsistency": False}}


def stopped_vm(api: KubeApi, namespace: str, name: str) -> None:
    """A stopped VM on one Ready disk of its own."""
    o.stopped_vm_with_disks(ApiStore(api, namespace), f"{name}-disk", vm_name=name)


def rules_denying(serve: Serve, namespace: str, vm: str) -> set[str]:
    response = serve.review(snapshot_of(namespace, vm))
    if response["allowed"]:
        return set()
    return {cause["reason"] for cause in response["status"]["details"]["causes"]}


def wait_for_rules(serve: Serve, namespace: str, vm: str, expected: set[str], what: str) -> None:
    wait_for(lambda: rules_denying(serve, namespace, vm) == expected, what, FOLLOW_TIMEOUT)


def test_the_cache_syncs_and_follows_creates_updates_and_deletes(
    serve: Serve, api: KubeApi, namespace: str
) -> None:
    """A VM created after the webhook started is seen, a status update of it is seen,
    its deletion is seen: each changes the webhook's decision."""
    assert rules_denying(serve, namespace, "vm1") == {"vms-vm-exists"}
    stopped_vm(api, namespace, "vm1")
    wait_for_rules(serve, namespace, "vm1", set(), "the created VM")
    api.patch("VirtualMachine", namespace, "vm1", {"status": {"phase": "Starting"}}, subresource="status")
    wait_for_rules(serve, namespace, "vm1", {"vms-vm-ready"}, "the VM's new phase")
    api.delete("VirtualMachine", namespace, "vm1")
    wait_for_rules(serve, namespace, "vm1", {"vms-vm-exists"}, "the VM's deletion")


def test_the_cache_catches_up_after_the_api_server_restarts(
    serve: Serve, api: KubeApi, etcd_watches: APIServer, namespace: str
) -> None:
    """What changed while the webhook's API server was down is in the view once it is
    back: a VM created and another deleted in the meantime."""
    stopped_vm(api, namespace, "gone")
    wait_for_rules(serve, namespace, "gone", set(), "the first VM")
    etcd_watches.stop()
    stopped_vm(api, namespace, "new")
    api.delete("VirtualMachine", namespace, "gone")
    etcd_watches.start()
    wait_for_rules(serve, namespace, "new", set(), "the VM created during the restart")
    wait_for_rules(serve, namespace, "gone", {"vms-vm-exists"}, "the VM deleted during the restart")


def test_the_cache_relists_after_410_gone(
    serve: Serve, api: KubeApi, control_plane: ControlPlane, etcd_watches: APIServer, namespace: str
) -> None:
    """The webhook's API server comes back after etcd compacted the history the watch
    would resume from: resuming answers 410 Gone (shown by a raw watch from the old
    resourceVersion), and the cache lists afresh, so it has the changes made meanwhile."""
    stopped_vm(api, namespace, "before")
    wait_for_rules(serve, namespace, "before", set(), "the first VM")
    old_version = api.list_page("VirtualMachine", limit=1)["metadata"]["resourceVersion"]
    etcd_watches.stop()
    stopped_vm(api, namespace, "after")
    api.delete("VirtualMachine", namespace, "before")
    control_plane.etcd.compact()
    etcd_watches.start()

    code, body = etcd_watches.get(
        f"/apis/{o.DVP}/virtualmachines?watch=1&timeoutSeconds=1&resourceVersion={old_version}")
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert code == 410 or (events and events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410), body

    wait_for_rules(serve, namespace, "after", set(), "the VM created before the compaction")
    wait_for_rules(serve, namespace, "before", {"vms-vm-exists"}, "the VM deleted before the compaction")
