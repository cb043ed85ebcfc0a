"""The admission chain of a real kube-apiserver calling `snapguard serve`.

The configurations are accepted as generated (`snapguard webhook-config` and the Helm
chart, server-side dry run), then registered (routed to the serve process by URL, see
conftest) and exercised with the built kubectl: denials carry the product's message,
allowed objects are stored with their defaults, `--dry-run=server` is decided without a
trace in the cluster, and with the webhook down users get the API server's
`failed calling webhook` error everywhere but in the release's own namespace.

Differences from the double that these tests pin down: the real server defaults the
CRD fields (`requiredConsistency`, `keepIPAddress`) while decoding the request, before
any admission webhook sees it, so the mutating webhook finds nothing left to fill; and
it answers a denial as `kubectl` prints it, with the webhook's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from cluster.api import KubeApi
from tests.chart.test_chart import CHART, CI_VALUES, CRD_KINDS, load_values, render
from tests.realcluster.conftest import (
    NAMESPACE,
    Serve,
    registered_resources,
    route_to,
    webhook_config,
)
from tests.realcluster.controlplane import ControlPlane, wait_for
from tests.realcluster.objects import ApiStore, seed
from tests.reconciler import objects as o

pytestmark = pytest.mark.controlplane

VALIDATE = "validate.snapguard.snapguard-system.svc"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def serve(serve_factory: Callable[..., Serve]) -> Serve:
    return serve_factory()


@pytest.fixture(scope="module")
def configurations(serve: Serve) -> list[Obj]:
    return webhook_config(serve.webhook.cert_dir)


@pytest.fixture(scope="module")
def registered(control_plane: ControlPlane, serve: Serve, configurations: list[Obj]) -> Iterator[list[Obj]]:
    """The configurations, routed to `serve`, applied for real; deleted afterwards so
    the other modules' writes do not go through a stopped webhook."""
    routed = route_to(configurations, serve.url)
    control_plane.apply(routed)
    yield routed
    for configuration in routed:
        control_plane.kubectl("delete", configuration["kind"], configuration["metadata"]["name"],
                              "--ignore-not-found")


def vm_scenario(api: KubeApi, namespace: str, *, agent: bool) -> None:
    """A running VM `vm1` on one Ready disk `d1` (Bound PVC) of a class with a default
    VolumeSnapshotClass; its guest agent ready or not."""
    seed(api, None, o.storage_class(),
         {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
          "metadata": {"name": "fast-vsc", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
          "driver": "fast.csi", "deletionPolicy": "Delete"})
    seed(api, namespace, o.pvc("pvc-d1"), o.disk("d1", vm="vm1"),
         o.vm("vm1", phase="Running", agent=agent, disks=("d1",)))


def snapshot(namespace: str, name: str, vm: str = "vm1", **spec: Any) -> str:
    return yaml.safe_dump({"apiVersion": o.DVP, "kind": "VirtualMachineSnapshot",
                           "metadata": {"name": name, "namespace": namespace},
                           "spec": {"virtualMachineName": vm, **spec}})


def subset_kept(sent: Obj, stored: Obj) -> None:
    """Every field of every webhook we sent is in the server's answer unchanged: the
    server added defaults at most."""
    assert [w["name"] for w in stored["webhooks"]] == [w["name"] for w in sent["webhooks"]]
    for ours, theirs in zip(sent["webhooks"], stored["webhooks"], strict=True):
        for key, value in ours.items():
            assert theirs[key] == value, (ours["name"], key)


def dry_run_apply(control_plane: ControlPlane, objects: list[Obj]) -> list[Obj]:
    proc = control_plane.apply(objects, "--dry-run=server", "-o", "json")
    answer = yaml.safe_load(proc.stdout)
    return list(answer["items"]) if answer.get("kind") == "List" else [answer]


# --- the configurations are accepted ------------------------------------------------------


def test_the_configurations_snapguard_prints_are_accepted_unchanged(
    control_plane: ControlPlane, configurations: list[Obj]
) -> None:
    """`snapguard webhook-config | kubectl apply -f -` passes the real validation of
    admissionregistration/v1, and the server keeps every field as we set it."""
    stored = dry_run_apply(control_plane, configurations)
    assert [s["kind"] for s in stored] == ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"]
    for sent, answer in zip(configurations, stored, strict=True):
        subset_kept(sent, answer)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_the_rendered_chart_is_accepted(control_plane: ControlPlane, values_file: Path) -> None:
    """Every built-in object the chart renders (for each ci values file) passes a real
    API server's validation in the release's namespace; its webhook configurations are
    kept as rendered."""
    with helm.Chart.load(CHART) as chart:
        rendered = render(chart, load_values(values_file), namespace=NAMESPACE)
    builtin = [obj for obj in rendered.objects if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS]
    stored = dry_run_apply(control_plane, builtin)
    assert len(stored) == len(builtin)
    for sent, answer in zip(builtin, stored, strict=True):
        assert (answer["kind"], answer["metadata"]["name"]) == (sent["kind"], sent["metadata"]["name"])
        if sent["kind"].endswith("WebhookConfiguration"):
            subset_kept(sent, answer)


# --- kubectl apply through the registered webhook -------------------------------------------


def test_an_impossible_snapshot_is_denied_with_the_rule_and_the_fix(
    control_plane: ControlPlane, api: KubeApi, registered: list[Obj], serve: Serve, namespace: str
) -> None:
    """A consistent snapshot of a running VM without a guest agent: kubectl fails with
    the webhook's message, naming the rule and the ways out; nothing is stored."""
    vm_scenario(api, namespace, agent=False)
    proc = control_plane.kubectl("apply", "-f", "-", input=snapshot(namespace, "snap1"), check=False)
    assert proc.returncode != 0
    assert f'admission webhook "{VALIDATE}" denied the request' in proc.stderr
    assert 'vms-consistency: Cannot take a consistent snapshot of virtual machine "vm1"' in proc.stderr
    assert "qemu-guest-agent" in proc.stderr and "spec.requiredConsistency: false" in proc.stderr
    assert api.get("VirtualMachineSnapshot", namespace, "snap1") is None
    assert [d["decision"] for d in serve.decisions("snap1") if d["webhook"] == "validate"] == ["denied"]


def test_a_restore_of_a_missing_snapshot_is_denied(
    control_plane: ControlPlane, api: KubeApi, registered: list[Obj], namespace: str
) -> None:
    """A VirtualMachineRestore of a snapshot that does not exist never gets stored."""
    restore = o.restore("restore1", "no-such-snapshot")
    restore["metadata"]["namespace"] = namespace
    proc = control_plane.apply([restore], check=False)
    assert proc.returncode != 0
    assert f'admission webhook "{VALIDATE}" denied the request' in proc.stderr
    assert "vmr-snapshot-exists" in proc.stderr and "no-such-snapshot" in proc.stderr
    assert api.get("VirtualMachineRestore", namespace, "restore1") is None


def operations_registered(configurations: list[Obj]) -> None:
    if "virtualmachineoperations" not in registered_resources(configurations):
        pytest.skip("snapguard webhook-config does not register virtualmachineoperations yet (issue 10)")


def operation(namespace: str, name: str, type_: str, **spec: Any) -> Obj:
    return {"apiVersion": o.DVP, "kind": "VirtualMachineOperation",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": type_, "virtualMachineName": "vm1", **spec}}


def test_a_restore_operation_of_a_missing_snapshot_is_denied(
    control_plane: ControlPlane, api: KubeApi, configurations: list[Obj], registered: list[Obj], namespace: str
) -> None:
    """A VirtualMachineOperation Restore from a snapshot that does not exist is denied."""
    operations_registered(configurations)
    vm_scenario(api, namespace, agent=True)
    op = operation(namespace, "op1", "Restore", restore={"mode": "Strict", "virtualMachineSnapshotName": "nope"})
    proc = control_plane.apply([op], check=False)
    assert proc.returncode != 0
    assert f'admission webhook "{VALIDATE}" denied the request' in proc.stderr
    assert "op-snapshot-exists" in proc.stderr
    assert api.get("VirtualMachineOperation", namespace, "op1") is None


def test_a_possible_snapshot_is_created_with_its_defaults(
    control_plane: ControlPlane, api: KubeApi, registered: list[Obj], serve: Serve, namespace: str
) -> None:
    """A snapshot of a VM with a ready agent is admitted and stored with
    requiredConsistency and keepIPAddress filled. The real server fills them from the
    CRD's defaults while decoding, so the mutating webhook is called and has nothing
    to patch."""
    vm_scenario(api, namespace, agent=True)
    proc = control_plane.kubectl("apply", "-f", "-", input=snapshot(namespace, "snap2"))
    assert "created" in proc.stdout
    stored = api.get("VirtualMachineSnapshot", namespace, "snap2")
    assert stored is not None
    assert stored["spec"] == {"virtualMachineName": "vm1", "requiredConsistency": True, "keepIPAddress": "Always"}
    decisions = {d["webhook"]: d["decision"] for d in serve.decisions("snap2")}
    assert decisions == {"mutate": "allowed", "validate": "allowed"}


def test_server_side_dry_run_is_decided_and_leaves_nothing(
    control_plane: ControlPlane, api: KubeApi, registered: list[Obj], serve: Serve, namespace: str
) -> None:
    """`kubectl apply --dry-run=server`: the impossible snapshot gets the same denial,
    the possible one is answered as created with its defaults; neither is stored, and
    the webhook saw both as dry runs."""
    vm_scenario(api, namespace, agent=False)
    denied = control_plane.kubectl("apply", "--dry-run=server", "-f", "-",
                                   input=snapshot(namespace, "dry1"), check=False)
    assert denied.returncode != 0 and "vms-consistency" in denied.stderr
    allowed = control_plane.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                                    input=snapshot(namespace, "dry2", requiredConsistency=False))
    assert yaml.safe_load(allowed.stdout)["spec"]["keepIPAddress"] == "Always"
    for name in ("dry1", "dry2"):
        assert api.get("VirtualMachineSnapshot", namespace, name) is None
        decisions = serve.decisions(name)
        assert decisions and all(d["dry_run"] is True for d in decisions), decisions


def test_the_webhook_follows_objects_created_with_kubectl(
    control_plane: ControlPlane, api: KubeApi, registered: list[Obj], namespace: str
) -> None:
    """The webhook decides from its watch cache of the real server: a snapshot of a VM
    that does not exist is denied; once the VM is there, the same snapshot is admitted."""
    manifest = snapshot(namespace, "snap3", "vm3", requiredConsistency=False)
    denied = control_plane.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert denied.returncode != 0 and "vms-vm-exists" in denied.stderr
    o.stopped_vm_with_disks(ApiStore(api, namespace), "d3", vm_name="vm3")
    wait_for(lambda: control_plane.kubectl("apply", "-f", "-", input=manifest, check=False).returncode == 0,
               "the snapshot of vm3 to be admitted", 20)


# --- with the webhook down (last: stops the module's webhook) ---------------------------------


def test_with_the_webhook_down_users_see_the_api_servers_error_except_in_the_release_namespace(
    control_plane: ControlPlane, api: KubeApi, registered: list[Obj], serve: Serve, namespace: str,
    configurations: list[Obj]
) -> None:
    """failurePolicy Fail: with the webhook stopped, a snapshot in a user namespace is
    refused with `failed calling webhook` and not stored; the release's namespace is
    exempt, so a snapshot there (say, of the webhook's own volumes) is still created."""
    vm_scenario(api, namespace, agent=True)
    assert serve.stop() == 0
    refused = control_plane.kubectl("apply", "-f", "-", input=snapshot(namespace, "down1"), check=False)
    assert refused.returncode != 0
    assert f'failed calling webhook "{VALIDATE}"' in refused.stderr
    assert api.get("VirtualMachineSnapshot", namespace, "down1") is None
    control_plane.kubectl("apply", "-f", "-", input=snapshot(NAMESPACE, "release-ns-snapshot"))
    assert api.get("VirtualMachineSnapshot", NAMESPACE, "release-ns-snapshot") is not None


def test_start_and_stop_operations_never_reach_the_webhook(
    control_plane: ControlPlane, api: KubeApi, registered: list[Obj], serve: Serve, namespace: str,
    configurations: list[Obj]
) -> None:
    """The matchConditions entry sends only Restore and Clone operations to the
    webhook: with the webhook down, Start and Stop are still created, a Restore is
    refused with the API server's `failed calling webhook`."""
    operations_registered(configurations)
    # Nothing to seed: a Start/Stop needs no VM to be stored, and the webhook may already be
    # down (the test before stops the module's webhook); stopping it again is a no-op.
    serve.stop()
    control_plane.apply([operation(namespace, "start1", "Start"), operation(namespace, "stop1", "Stop")])
    assert api.get("VirtualMachineOperation", namespace, "start1") is not None
    restore = operation(namespace, "restore1", "Restore",
                        restore={"mode": "Strict", "virtualMachineSnapshotName": "snap"})
    refused = control_plane.apply([restore], check=False)
    assert refused.returncode != 0 and f'failed calling webhook "{VALIDATE}"' in refused.stderr
