"""The watch cache losing the API server, through the whole webhook: `snapguard serve
--kubeconfig` (real gunicorn, 2 workers each with its own watch cache) against the
in-process Kubernetes API server of tests/kubeapi.

* API server stopped, then restarted on the same port (its history gone, as after a
  real restart): the webhook keeps deciding from the last state (a decision that
  depends on seeded objects is unchanged); /readyz turns not-ready once the
  disconnection outlasts `--staleness-bound`; after the restart it is ready again
  without a restart of its own, and a change made afterwards is decided on.
* History compacted under open watches (410 Gone): the caches relist, decisions never
  change meanwhile, and a later change is seen.

tests/cluster/test_watchcache.py shows the same for one cache object in-process; this
is what the API server sees of it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubeapi.server import KubeAPIServer

from .conftest import Served, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.server, pytest.mark.kubeapi, pytest.mark.timeout(120)]

STALENESS_BOUND = "2"
GROUP = "virtualization.deckhouse.io"

# vm1 runs without a guest agent (a consistent snapshot is denied), vm2 with one
# (admitted); one Ready disk each on a Bound PVC of a class with a default
# VolumeSnapshotClass.
CLUSTER = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: replicated}
provisioner: replicated.csi.storage.deckhouse.io
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: replicated
  annotations: {snapshot.storage.kubernetes.io/is-default-class: "true"}
driver: replicated.csi.storage.deckhouse.io
deletionPolicy: Delete
"""


def vm_objects(index: int, *, agent: bool) -> list[dict[str, Any]]:
    vm, disk = f"vm{index}", f"d{index}"
    return yaml.safe_load_all(f"""
apiVersion: {GROUP}/v1alpha2
kind: VirtualMachine
metadata: {{name: {vm}, namespace: ns1, generation: 1}}
spec: {{runPolicy: AlwaysOn, blockDeviceRefs: [{{kind: VirtualDisk, name: {disk}}}]}}
status:
  phase: Running
  blockDeviceRefs: [{{kind: VirtualDisk, name: {disk}, attached: true}}]
  conditions:
  - {{type: AgentReady, status: '{agent}', observedGeneration: 1}}
  - {{type: BlockDevicesReady, status: 'True', observedGeneration: 1}}
---
apiVersion: {GROUP}/v1alpha2
kind: VirtualDisk
metadata: {{name: {disk}, namespace: ns1, generation: 1}}
spec: {{persistentVolumeClaim: {{size: 10Gi, storageClassName: replicated}}}}
status:
  phase: Ready
  capacity: 10Gi
  target: {{persistentVolumeClaimName: {disk}-pvc}}
  attachedToVirtualMachines: [{{name: {vm}, mounted: true}}]
  conditions: [{{type: Ready, status: 'True', observedGeneration: 1}}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {disk}-pvc, namespace: ns1}}
spec: {{storageClassName: replicated, accessModes: [ReadWriteMany], resources: {{requests: {{storage: 10Gi}}}}}}
status: {{phase: Bound}}
""")  # type: ignore[return-value]


def snapshot_review(uid: str, vm: str) -> bytes:
    obj = {"apiVersion": f"{GROUP}/v1alpha2", "kind": "VirtualMachineSnapshot",
           "metadata": {"name": f"snap-{vm}", "namespace": "ns1"},
           "spec": {"virtualMachineName": vm, "requiredConsistency": True, "keepIPAddress": "Always"}}
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": GROUP, "version": "v1alpha2", "kind": "VirtualMachineSnapshot"},
                    "resource": {"group": GROUP, "version": "v1alpha2", "resource": "virtualmachinesnapshots"},
                    "name": f"snap-{vm}", "namespace": "ns1", "operation": "CREATE", "object": obj},
    }).encode()


def denied_rules(served: Served, vm: str) -> list[str]:
    """The rules that deny a consistent snapshot of `vm` ([] when admitted)."""
    answer = served.validate(snapshot_review(f"snap-{vm}", vm))
    if answer["allowed"]:
        return []
    return [cause["reason"] for cause in answer["status"]["details"]["causes"]]


def consistently(served: Served, check: Callable[[], bool], times: int = 8) -> bool:
    """`check` holds on `times` consecutive new connections (so on both workers,
    whichever accepts, with overwhelming likelihood)."""
    return all(check() for _ in range(times))


def readiness(served: Served) -> int:
    try:
        return served.get("/readyz")[0]
    except OSError:
        return 0


@pytest.fixture
def cluster() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(bookmark_interval=0.2) as server:
        for document in yaml.safe_load_all(CLUSTER):
            server.put_object(document)
        for document in (*vm_objects(1, agent=False), *vm_objects(2, agent=True)):
            server.put_object(document)
        yield server


@pytest.fixture
def webhook(cluster: KubeAPIServer, serve: Callable[..., Served], tmp_path: Path) -> Served:
    served = serve("--kubeconfig", str(cluster.kubeconfig_path(tmp_path)), "--staleness-bound", STALENESS_BOUND)
    wait_for(lambda: consistently(served, lambda: readiness(served) == 200), "both workers synced")
    assert denied_rules(served, "vm1") == ["vms-consistency"]
    assert denied_rules(served, "vm2") == []
    return served


def test_api_server_restart(webhook: Served, cluster: KubeAPIServer) -> None:
    cluster.stop()
    # Still deciding from the last state, before and after readiness gives up.
    assert consistently(webhook, lambda: denied_rules(webhook, "vm1") == ["vms-consistency"])
    wait_for(lambda: consistently(webhook, lambda: readiness(webhook) == 503),
             f"/readyz to fail on both workers once disconnected for {STALENESS_BOUND} s")
    status, body = webhook.get("/readyz")
    assert status == 503 and body["view"]["ok"] is False
    assert "answering from the last state" in body["view"]["reason"], body
    assert consistently(webhook, lambda: denied_rules(webhook, "vm1") == ["vms-consistency"])
    assert consistently(webhook, lambda: denied_rules(webhook, "vm2") == [])
    assert denied_rules(webhook, "vm3") == ["vms-vm-exists"]

    cluster.start()  # same port, history gone: the caches relist
    wait_for(lambda: consistently(webhook, lambda: readiness(webhook) == 200),
             "/readyz to recover on both workers", timeout=60)
    for document in vm_objects(3, agent=True):
        cluster.put_object(document)
    wait_for(lambda: consistently(webhook, lambda: denied_rules(webhook, "vm3") == []),
             "a VM created after the restart to be decided on", timeout=30)
    assert webhook.process.poll() is None
    assert "Traceback" not in webhook.stderr()


def test_history_compacted_under_open_watches(webhook: Served, cluster: KubeAPIServer) -> None:
    cluster.expire_history()  # open watches get 410 Gone: relist
    assert consistently(webhook, lambda: denied_rules(webhook, "vm1") == ["vms-consistency"])
    assert consistently(webhook, lambda: denied_rules(webhook, "vm2") == [])
    [vm1] = [d for d in vm_objects(1, agent=True) if d["kind"] == "VirtualMachine"]
    cluster.put_object(vm1)  # the agent is up now
    wait_for(lambda: consistently(webhook, lambda: denied_rules(webhook, "vm1") == []),
             "the change after the relist to be decided on", timeout=30)
    assert consistently(webhook, lambda: readiness(webhook) == 200)
    assert "Traceback" not in webhook.stderr()
