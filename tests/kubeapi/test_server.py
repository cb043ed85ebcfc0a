"""The in-process API server, driven by the real `kubernetes` client and by `kubectl`."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, dynamic, watch
from kubernetes.client.exceptions import ApiException

from tests.kubeapi.server import KubeAPIServer
from tests.kubeapi.webhook import FakeWebhook, allow, deny, json_patch

pytestmark = pytest.mark.kubeapi

G, V = "virtualization.deckhouse.io", "v1alpha2"
VDS, VD, VM = "virtualdisksnapshots", "virtualdisks", "virtualmachines"
Obj = dict[str, Any]


def cr(kind: str, name: str, ns: str = "default", spec: Obj | None = None, **metadata: Any) -> Obj:
    return {"apiVersion": f"{G}/{V}", "kind": kind,
            "metadata": {"name": name, "namespace": ns, **metadata}, "spec": spec or {}}


def vds(name: str, ns: str = "default", disk: str = "disk-1", **metadata: Any) -> Obj:
    return cr("VirtualDiskSnapshot", name, ns, {"virtualDiskName": disk}, **metadata)


def status_of(exc: ApiException) -> Obj:
    return json.loads(exc.body)


def wait_until(predicate: Callable[[], Any], timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def crd(kube_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_client)


@pytest.fixture
def core(kube_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_client)


# ---- discovery ------------------------------------------------------------------------------

def test_discovery_with_the_real_client(kube_client: client.ApiClient, crd: client.CustomObjectsApi) -> None:
    assert client.CoreApi(kube_client).get_api_versions().versions == ["v1"]
    assert client.VersionApi(kube_client).get_code().git_version.startswith("v1.")
    groups = {g.name: g for g in client.ApisApi(kube_client).get_api_versions().groups}
    assert groups[G].preferred_version.group_version == f"{G}/{V}"
    assert {"snapshot.storage.k8s.io", "storage.k8s.io", "coordination.k8s.io",
            "admissionregistration.k8s.io", "wgpolicyk8s.io"} <= set(groups)

    resources = {r.name: r for r in crd.get_api_resources(G, V).resources}
    assert resources[VDS].kind == "VirtualDiskSnapshot" and resources[VDS].namespaced
    assert {"vds", "vdsnapshot"} <= set(resources[VDS].short_names)
    assert {"create", "get", "list", "watch", "patch", "update", "delete"} <= set(resources[VDS].verbs)
    assert resources[f"{VDS}/status"].verbs == ["get", "patch", "update"]
    storage = {r.name: r for r in client.StorageV1Api(kube_client).get_api_resources().resources}
    assert storage["storageclasses"].namespaced is False

    dyn = dynamic.DynamicClient(kube_client)
    restores = dyn.resources.get(api_version=f"{G}/{V}", kind="VirtualMachineRestore")
    assert restores.namespaced and "status" in restores.subresources
    snapclass = dyn.resources.get(api_version="snapshot.storage.k8s.io/v1", kind="VolumeSnapshotClass")
    assert snapclass.namespaced is False


# ---- CRUD, concurrency, subresources, patches -----------------------------------------------

def test_custom_object_create_get_delete_and_errors(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer) -> None:
    created, code, _ = crd.create_namespaced_custom_object_with_http_info(G, V, "ns1", VDS, vds("snap-1", "ns1"))
    assert code == 201
    md = created["metadata"]
    assert md["namespace"] == "ns1" and md["generation"] == 1 and md["uid"] and md["creationTimestamp"]
    assert int(md["resourceVersion"]) > 1
    assert kubeapi.get_object(VDS, "snap-1", "ns1")["metadata"]["uid"] == md["uid"]
    assert [n["metadata"]["name"] for n in kubeapi.objects("namespaces")] == ["ns1"]

    with pytest.raises(ApiException) as dup:
        crd.create_namespaced_custom_object(G, V, "ns1", VDS, vds("snap-1", "ns1"))
    assert dup.value.status == 409
    assert status_of(dup.value) | {"metadata": {}} == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 409,
        "reason": "AlreadyExists", "message": f'{VDS}.{G} "snap-1" already exists',
        "details": {"name": "snap-1", "group": G, "kind": VDS}}

    generated = crd.create_namespaced_custom_object(G, V, "ns1", VDS, {
        **vds("", "ns1"), "metadata": {"generateName": "snap-"}})
    assert generated["metadata"]["name"].startswith("snap-") and len(generated["metadata"]["name"]) == 10

    with pytest.raises(ApiException) as bad:
        crd.create_namespaced_custom_object(G, V, "ns1", VDS, vds("Not_Valid", "ns1"))
    assert bad.value.status == 422 and status_of(bad.value)["reason"] == "Invalid"

    assert crd.get_namespaced_custom_object(G, V, "ns1", VDS, "snap-1")["spec"] == {"virtualDiskName": "disk-1"}
    deleted = crd.delete_namespaced_custom_object(G, V, "ns1", VDS, "snap-1")
    assert deleted["metadata"]["name"] == "snap-1"  # custom resources return the deleted object
    with pytest.raises(ApiException) as missing:
        crd.get_namespaced_custom_object(G, V, "ns1", VDS, "snap-1")
    assert missing.value.status == 404
    assert status_of(missing.value)["reason"] == "NotFound"
    assert status_of(missing.value)["details"] == {"name": "snap-1", "group": G, "kind": VDS}
    with pytest.raises(ApiException) as gone:
        crd.delete_namespaced_custom_object(G, V, "ns1", VDS, "snap-1")
    assert gone.value.status == 404


def test_core_objects_and_typed_client(core: client.CoreV1Api) -> None:
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="s", labels={"a": "b"}),
                             type="Opaque", string_data={"k": "v"})
    core.create_namespaced_secret("ns1", secret)
    got = core.read_namespaced_secret("s", "ns1")
    assert got.metadata.labels == {"a": "b"} and got.type == "Opaque"
    assert core.read_namespace("ns1").metadata.labels["kubernetes.io/metadata.name"] == "ns1"
    got.metadata.labels["c"] = "d"
    assert core.replace_namespaced_secret("s", "ns1", got).metadata.labels == {"a": "b", "c": "d"}
    status = core.delete_namespaced_secret("s", "ns1")  # typed kinds answer with a Status
    assert status["kind"] == "Status" and status["status"] == "Success" and status["details"]["name"] == "s"
    assert core.list_namespaced_secret("ns1").items == []


def test_stale_update_conflicts(crd: client.CustomObjectsApi) -> None:
    first = crd.create_namespaced_custom_object(G, V, "default", VD, cr("VirtualDisk", "d1", spec={"size": "1Gi"}))
    second = dict(first, spec={"size": "2Gi"})
    crd.replace_namespaced_custom_object(G, V, "default", VD, "d1", second)
    with pytest.raises(ApiException) as stale:
        crd.replace_namespaced_custom_object(G, V, "default", VD, "d1", dict(first, spec={"size": "3Gi"}))
    assert stale.value.status == 409
    body = status_of(stale.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (f'Operation cannot be fulfilled on {VD}.{G} "d1": the object has been modified; '
                               "please apply your changes to the latest version and try again")
    no_rv = {**first, "metadata": {k: v for k, v in first["metadata"].items() if k != "resourceVersion"}}
    with pytest.raises(ApiException) as unconditional:  # custom resources demand a resourceVersion
        crd.replace_namespaced_custom_object(G, V, "default", VD, "d1", no_rv)
    assert unconditional.value.status == 422
    with pytest.raises(ApiException) as patch_conflict:
        crd.patch_namespaced_custom_object(G, V, "default", VD, "d1", {
            "metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "spec": {"size": "4Gi"}})
    assert patch_conflict.value.status == 409
    with pytest.raises(ApiException) as missing:
        crd.replace_namespaced_custom_object(G, V, "default", VD, "nope", dict(second, metadata={"name": "nope"}))
    assert missing.value.status == 404


def test_status_subresource_isolation_and_generation(crd: client.CustomObjectsApi) -> None:
    body = cr("VirtualDisk", "d1", spec={"size": "1Gi"})
    body["status"] = {"phase": "Ready"}
    obj = crd.create_namespaced_custom_object(G, V, "default", VD, body)
    assert "status" not in obj and obj["metadata"]["generation"] == 1  # status is dropped on create

    obj["status"] = {"phase": "Pending"}
    obj["spec"] = {"size": "9Gi"}
    after_status = crd.replace_namespaced_custom_object_status(G, V, "default", VD, "d1", obj)
    assert after_status["status"] == {"phase": "Pending"}
    assert after_status["spec"] == {"size": "1Gi"}  # spec changes are ignored on /status
    assert after_status["metadata"]["generation"] == 1

    after_status["status"] = {"phase": "Failed"}
    after_status["metadata"]["labels"] = {"x": "y"}
    relabelled = crd.replace_namespaced_custom_object(G, V, "default", VD, "d1", after_status)
    assert relabelled["status"] == {"phase": "Pending"}  # status changes are ignored on the main resource
    assert relabelled["metadata"]["labels"] == {"x": "y"} and relabelled["metadata"]["generation"] == 1

    respec = crd.patch_namespaced_custom_object(G, V, "default", VD, "d1", {"spec": {"size": "2Gi"}})
    assert respec["metadata"]["generation"] == 2
    patched = crd.patch_namespaced_custom_object_status(G, V, "default", VD, "d1", {
        "status": {"phase": "Ready"}, "spec": {"size": "5Gi"}})
    assert patched["status"] == {"phase": "Ready"} and patched["spec"] == {"size": "2Gi"}
    assert patched["metadata"]["generation"] == 2
    unchanged = crd.patch_namespaced_custom_object(G, V, "default", VD, "d1", {"spec": {"size": "2Gi"}})
    assert unchanged["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]  # no-op


def test_merge_json_and_strategic_patches(crd: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    crd.create_namespaced_custom_object(G, V, "default", VM, cr(
        "VirtualMachine", "vm1", spec={"runPolicy": "Manual", "cpu": {"cores": 1}}, labels={"a": "1", "b": "2"}))
    merged = crd.patch_namespaced_custom_object(G, V, "default", VM, "vm1", {
        "metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"cpu": {"coreFraction": "10%"}}})
    assert merged["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert merged["spec"] == {"runPolicy": "Manual", "cpu": {"cores": 1, "coreFraction": "10%"}}

    ops = [{"op": "replace", "path": "/spec/runPolicy", "value": "AlwaysOn"},
           {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}]
    jp = crd.patch_namespaced_custom_object(G, V, "default", VM, "vm1", ops,
                                            _content_type="application/json-patch+json")
    assert jp["spec"]["runPolicy"] == "AlwaysOn" and jp["metadata"]["annotations"] == {"note": "x"}
    with pytest.raises(ApiException) as failed_test:
        crd.patch_namespaced_custom_object(G, V, "default", VM, "vm1", [
            {"op": "test", "path": "/spec/runPolicy", "value": "Manual"}],
            _content_type="application/json-patch+json")
    assert failed_test.value.status == 422
    with pytest.raises(ApiException) as smp:
        crd.patch_namespaced_custom_object(G, V, "default", VM, "vm1", {"spec": {}},
                                           _content_type="application/strategic-merge-patch+json")
    assert smp.value.status == 415  # as for any custom resource

    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cm"), data={"a": "1"}))
    cm = core.patch_namespaced_config_map("cm", "default", {"data": {"b": "2"}})  # strategic merge
    assert cm.data == {"a": "1", "b": "2"}


def test_finalizers_keep_the_object_until_removed(crd: client.CustomObjectsApi) -> None:
    crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1", finalizers=["snapguard.deckhouse.io/protect"]))
    deleting = crd.delete_namespaced_custom_object(G, V, "default", VDS, "s1")
    assert deleting["metadata"]["deletionTimestamp"] and deleting["metadata"]["generation"] == 2
    current = crd.get_namespaced_custom_object(G, V, "default", VDS, "s1")
    assert current["metadata"]["deletionTimestamp"] == deleting["metadata"]["deletionTimestamp"]
    again = crd.delete_namespaced_custom_object(G, V, "default", VDS, "s1")
    assert again["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as new_finalizer:
        crd.patch_namespaced_custom_object(G, V, "default", VDS, "s1", {"metadata": {"finalizers": ["a", "b"]}})
    assert new_finalizer.value.status == 422
    crd.patch_namespaced_custom_object(G, V, "default", VDS, "s1", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        crd.get_namespaced_custom_object(G, V, "default", VDS, "s1")
    assert gone.value.status == 404


def test_owner_references_are_garbage_collected(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer) -> None:
    vm = crd.create_namespaced_custom_object(G, V, "default", VM, cr("VirtualMachine", "vm1"))
    other = crd.create_namespaced_custom_object(G, V, "default", VM, cr("VirtualMachine", "vm2"))

    def ref(owner: Obj) -> Obj:
        return {"apiVersion": f"{G}/{V}", "kind": "VirtualMachine", "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": True}
    crd.create_namespaced_custom_object(G, V, "default", VD, cr("VirtualDisk", "only-vm1", ownerReferences=[ref(vm)]))
    crd.create_namespaced_custom_object(G, V, "default", VD, cr("VirtualDisk", "both", ownerReferences=[ref(vm), ref(other)]))
    crd.create_namespaced_custom_object(G, V, "default", VD, cr("VirtualDisk", "foreign", ownerReferences=[
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "123"}]))
    crd.create_namespaced_custom_object(G, V, "default", VD, cr("VirtualDisk", "guarded", finalizers=["keep"],
                                                                ownerReferences=[ref(vm)]))
    crd.delete_namespaced_custom_object(G, V, "default", VM, "vm1")
    wait_until(lambda: kubeapi.get_object(VD, "only-vm1", "default") is None)
    guarded = wait_until(lambda: kubeapi.get_object(VD, "guarded", "default")["metadata"].get("deletionTimestamp"))
    assert guarded
    assert {d["metadata"]["name"] for d in kubeapi.objects(VD)} == {"both", "foreign", "guarded"}


def test_namespace_deletion_removes_its_content(core: client.CoreV1Api, crd: client.CustomObjectsApi,
                                                kubeapi: KubeAPIServer) -> None:
    crd.create_namespaced_custom_object(G, V, "doomed", VDS, vds("s1", "doomed", finalizers=["hold"]))
    crd.create_namespaced_custom_object(G, V, "doomed", VDS, vds("s2", "doomed"))
    core.delete_namespace("doomed")
    assert core.read_namespace("doomed").status.phase == "Terminating"
    with pytest.raises(ApiException) as forbidden:
        crd.create_namespaced_custom_object(G, V, "doomed", VDS, vds("s3", "doomed"))
    assert forbidden.value.status == 403
    wait_until(lambda: [o["metadata"]["name"] for o in kubeapi.objects(VDS)] == ["s1"])
    assert kubeapi.get_object(VDS, "s1", "doomed")["metadata"]["deletionTimestamp"]
    crd.patch_namespaced_custom_object(G, V, "doomed", VDS, "s1", {"metadata": {"finalizers": []}})
    wait_until(lambda: not kubeapi.objects("namespaces"))
    assert kubeapi.objects(VDS) == []


# ---- list: paging and selectors -------------------------------------------------------------

def test_list_paging_with_limit_and_continue(core: client.CoreV1Api, kubeapi: KubeAPIServer) -> None:
    for i in range(5):
        core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm-{i}")))
    first = core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"]
    assert first.metadata.remaining_item_count == 3 and first.metadata._continue
    names = [c.metadata.name for c in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_config_map("default", limit=2, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
    assert names == [f"cm-{i}" for i in range(5)]
    assert len(core.list_config_map_for_all_namespaces(limit=3).items) == 3

    with pytest.raises(ApiException) as garbage:
        core.list_namespaced_config_map("default", limit=2, _continue="not-a-token")
    assert garbage.value.status == 400
    kubeapi.expire_history()
    with pytest.raises(ApiException) as expired:
        core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    assert expired.value.status == 410 and status_of(expired.value)["reason"] == "Expired"


def test_field_and_label_selectors(core: client.CoreV1Api) -> None:
    for name, type_, labels in (("a", "Opaque", {"app": "snapguard", "tier": "web"}),
                                ("b", "kubernetes.io/tls", {"app": "snapguard", "tier": "db"}),
                                ("c", "kubernetes.io/tls", {"app": "other"})):
        core.create_namespaced_secret("default", client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, labels=labels), type=type_))
    core.create_namespaced_secret("other", client.V1Secret(metadata=client.V1ObjectMeta(name="d"), type="Opaque"))

    def names(**kw: Any) -> list[str]:
        return [s.metadata.name for s in core.list_namespaced_secret("default", **kw).items]
    assert names(field_selector="type=kubernetes.io/tls") == ["b", "c"]
    assert names(field_selector="type!=kubernetes.io/tls,metadata.name!=x") == ["a"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names(label_selector="app=snapguard,tier!=db") == ["a"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!tier") == ["c"]
    assert names(label_selector="app in (other, nothing)") == ["c"]
    assert names(label_selector="tier notin (db)") == ["a", "c"]
    everywhere = core.list_secret_for_all_namespaces(field_selector="type=Opaque").items
    assert [(s.metadata.namespace, s.metadata.name) for s in everywhere] == [("default", "a"), ("other", "d")]
    with pytest.raises(ApiException) as unknown:
        core.list_namespaced_secret("default", field_selector="data.x=1")
    assert unknown.value.status == 400


# ---- watch ----------------------------------------------------------------------------------

def test_watch_streams_added_modified_deleted_and_bookmarks(crd: client.CustomObjectsApi,
                                                            kubeapi: KubeAPIServer) -> None:
    crd.create_namespaced_custom_object(G, V, "default", VDS, vds("before"))
    rv = crd.list_namespaced_custom_object(G, V, "default", VDS)["metadata"]["resourceVersion"]

    def writer() -> None:
        wait_until(lambda: kubeapi.active_watches == 1)
        crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
        crd.patch_namespaced_custom_object(G, V, "default", VDS, "s1", {"metadata": {"labels": {"x": "1"}}})
        crd.create_namespaced_custom_object(G, V, "other", VDS, vds("elsewhere", "other"))
        crd.delete_namespaced_custom_object(G, V, "default", VDS, "s1")
    thread = threading.Thread(target=writer)
    thread.start()
    w = watch.Watch()
    seen = []
    for event in w.stream(crd.list_namespaced_custom_object, G, V, "default", VDS, resource_version=rv,
                          allow_watch_bookmarks=True, timeout_seconds=5):
        if event["type"] != "BOOKMARK":
            seen.append((event["type"], event["object"]["metadata"]["name"]))
        if event["type"] == "DELETED":
            w.stop()
    thread.join()
    assert seen == [("ADDED", "s1"), ("MODIFIED", "s1"), ("DELETED", "s1")]

    # replay from history, then bookmarks until timeoutSeconds closes the stream
    events = list(watch.Watch().stream(crd.list_namespaced_custom_object, G, V, "default", VDS,
                                       resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=1))
    assert [e["type"] for e in events[:3]] == ["ADDED", "MODIFIED", "DELETED"]
    bookmarks = [e["raw_object"] for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and bookmarks[-1] == {"kind": "VirtualDiskSnapshot", "apiVersion": f"{G}/{V}",
                                           "metadata": {"resourceVersion": bookmarks[-1]["metadata"]["resourceVersion"]}}
    assert int(bookmarks[-1]["metadata"]["resourceVersion"]) >= int(events[2]["object"]["metadata"]["resourceVersion"])

    # without a resourceVersion: the current state as ADDED, selectors applied
    initial = list(watch.Watch().stream(crd.list_cluster_custom_object, G, V, VDS,
                                        field_selector="metadata.namespace=other", timeout_seconds=1))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [("ADDED", "elsewhere")]


def test_watch_label_selector_transitions(core: client.CoreV1Api, kubeapi: KubeAPIServer) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm")))
    core.patch_namespaced_config_map("cm", "default", {"metadata": {"labels": {"watched": "yes"}}})
    core.patch_namespaced_config_map("cm", "default", {"data": {"k": "v"}})
    core.patch_namespaced_config_map("cm", "default", {"metadata": {"labels": {"watched": "no"}}})
    events = list(watch.Watch().stream(core.list_namespaced_config_map, "default", label_selector="watched=yes",
                                       resource_version=rv, timeout_seconds=1))
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert isinstance(events[0]["object"], client.V1ConfigMap)


def test_watch_from_expired_resource_version_gets_410(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer) -> None:
    rv = crd.list_namespaced_custom_object(G, V, "default", VDS)["metadata"]["resourceVersion"]
    crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
    kubeapi.expire_history()
    resp = crd.list_namespaced_custom_object(G, V, "default", VDS, watch=True, resource_version=rv,
                                             _preload_content=False)
    lines = [json.loads(line) for line in resp.data.decode().splitlines()]
    assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
    assert lines == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
        "code": 410, "message": lines[0]["object"]["message"]}}]
    for kwargs in ({"timeout_seconds": 2}, {}):  # without timeout_seconds the client retries once first
        with pytest.raises(ApiException) as expired:
            for _ in watch.Watch().stream(crd.list_namespaced_custom_object, G, V, "default", VDS,
                                          resource_version=rv, **kwargs):
                pass
        assert expired.value.status == 410
    # the current resourceVersion still works after a compaction
    now = crd.list_namespaced_custom_object(G, V, "default", VDS)["metadata"]["resourceVersion"]
    assert list(watch.Watch().stream(crd.list_namespaced_custom_object, G, V, "default", VDS,
                                     resource_version=now, timeout_seconds=1)) == []


def test_bounded_history_window() -> None:
    with KubeAPIServer(history_size=3) as server:
        start = server.put_object(vds("s0"))["metadata"]["resourceVersion"]
        for i in range(1, 5):
            server.put_object(vds(f"s{i}"))
        api = client.CustomObjectsApi(client.ApiClient(client.Configuration(host=server.url)))
        with pytest.raises(ApiException) as expired:
            list(watch.Watch().stream(api.list_namespaced_custom_object, G, V, "default", VDS,
                                      resource_version=start, timeout_seconds=1))
        assert expired.value.status == 410
        recent = server.get_object(VDS, "s2", "default")["metadata"]["resourceVersion"]
        events = list(watch.Watch().stream(api.list_namespaced_custom_object, G, V, "default", VDS,
                                           resource_version=recent, timeout_seconds=1))
        assert [e["object"]["metadata"]["name"] for e in events] == ["s3", "s4"]


def test_drop_watches_and_restart_keep_objects(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer) -> None:
    crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
    rv = crd.list_namespaced_custom_object(G, V, "default", VDS)["metadata"]["resourceVersion"]
    ended = threading.Event()

    def watcher() -> None:
        for _ in watch.Watch().stream(crd.list_namespaced_custom_object, G, V, "default", VDS,
                                      resource_version=rv, timeout_seconds=30):
            pass
        ended.set()
    threading.Thread(target=watcher, daemon=True).start()
    wait_until(lambda: kubeapi.active_watches == 1)
    kubeapi.drop_watches()
    assert ended.wait(3)
    wait_until(lambda: kubeapi.active_watches == 0)

    port = kubeapi.port
    kubeapi.stop()
    with pytest.raises(Exception):  # noqa: B017 - the connection is refused, whatever urllib3 calls it
        crd.get_namespaced_custom_object(G, V, "default", VDS, "s1", _request_timeout=1)
    kubeapi.start()
    assert kubeapi.port == port
    assert crd.get_namespaced_custom_object(G, V, "default", VDS, "s1")["metadata"]["resourceVersion"] == rv
    # a restarted apiserver's watch cache starts now: older resourceVersions are gone
    with pytest.raises(ApiException) as expired:
        list(watch.Watch().stream(crd.list_namespaced_custom_object, G, V, "default", VDS,
                                  resource_version=str(int(rv) - 1), timeout_seconds=1))
    assert expired.value.status == 410


# ---- failure injection and seeding ----------------------------------------------------------

def test_fail_next_and_seeding(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer) -> None:
    seeded = kubeapi.put_object({**cr("VirtualDisk", "d1"), "status": {"phase": "Ready"}})
    assert seeded["status"] == {"phase": "Ready"} and seeded["metadata"]["uid"]
    assert crd.get_namespaced_custom_object(G, V, "default", VD, "d1")["status"] == {"phase": "Ready"}

    kubeapi.fail_next("create", VDS, code=500, count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as failed:
            crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
        assert failed.value.status == 500 and status_of(failed.value)["reason"] == "InternalError"
    crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))

    kubeapi.fail_next(lambda r: r.verb == "patch" and r.resource == f"{VD}/status", code=409)
    crd.patch_namespaced_custom_object(G, V, "default", VD, "d1", {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(ApiException) as conflict:
        crd.patch_namespaced_custom_object_status(G, V, "default", VD, "d1", {"status": {"phase": "Failed"}})
    assert conflict.value.status == 409 and status_of(conflict.value)["reason"] == "Conflict"
    crd.patch_namespaced_custom_object_status(G, V, "default", VD, "d1", {"status": {"phase": "Failed"}})
    assert kubeapi.get_object(VD, "d1", "default")["status"] == {"phase": "Failed"}


def test_dry_run_stores_nothing(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer) -> None:
    dry, code, _ = crd.create_namespaced_custom_object_with_http_info(G, V, "default", VDS, vds("s1"), dry_run="All")
    assert code == 201 and dry["metadata"]["uid"]
    assert kubeapi.objects(VDS) == []
    crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
    patched = crd.patch_namespaced_custom_object(G, V, "default", VDS, "s1", {"spec": {"virtualDiskName": "x"}},
                                                 dry_run="All")
    assert patched["spec"]["virtualDiskName"] == "x"
    crd.delete_namespaced_custom_object(G, V, "default", VDS, "s1", dry_run="All")
    assert kubeapi.get_object(VDS, "s1", "default")["spec"]["virtualDiskName"] == "disk-1"


# ---- kubectl ---------------------------------------------------------------------------------

MANIFEST = """\
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualDiskSnapshot
metadata:
  name: snap-1
  namespace: ns1
spec:
  virtualDiskName: {disk}
"""

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


@needs_kubectl
def test_kubectl_apply_get_and_delete(kubectl: Callable[..., Any], kubeapi: KubeAPIServer) -> None:
    assert "created" in kubectl("apply", "-f", "-", input=MANIFEST.format(disk="disk-1")).stdout
    assert "unchanged" in kubectl("apply", "-f", "-", input=MANIFEST.format(disk="disk-1")).stdout
    assert "configured" in kubectl("apply", "-f", "-", input=MANIFEST.format(disk="disk-2")).stdout
    stored = kubeapi.get_object(VDS, "snap-1", "ns1")
    assert stored["spec"] == {"virtualDiskName": "disk-2"} and stored["metadata"]["generation"] == 2
    kubeapi.put_object({**stored, "status": {"phase": "Ready", "consistent": True}})

    table = kubectl("get", "vds", "-n", "ns1").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "CONSISTENT", "AGE"]
    assert table[1].split()[:3] == ["snap-1", "Ready", "true"]
    assert kubectl("get", "virtualdisksnapshots.virtualization.deckhouse.io", "-A").stdout.split()[:2] == [
        "NAMESPACE", "NAME"]
    as_json = json.loads(kubectl("get", "vdsnapshot", "snap-1", "-n", "ns1", "-o", "json").stdout)
    assert as_json["status"]["phase"] == "Ready"
    assert "kubectl.kubernetes.io/last-applied-configuration" in as_json["metadata"]["annotations"]
    names = kubectl("get", "ns", "-o", "jsonpath={.items[*].metadata.name}").stdout
    assert names == "ns1"
    missing = kubectl("get", "vds", "nope", "-n", "ns1", check=False)
    assert missing.returncode == 1 and f'{VDS}.{G} "nope" not found' in missing.stderr
    assert "deleted" in kubectl("delete", "vds", "snap-1", "-n", "ns1").stdout
    assert kubeapi.objects(VDS) == []
    typed = kubectl("create", "configmap", "cm", "--from-literal=a=b", check=False)
    assert typed.returncode == 1 and "unknown format" in typed.stderr  # protobuf bodies are refused
    server_side = kubectl("apply", "--server-side", "-f", "-", input=MANIFEST.format(disk="disk-3"))
    assert "serverside-applied" in server_side.stdout
    assert kubeapi.get_object(VDS, "snap-1", "ns1")["spec"] == {"virtualDiskName": "disk-3"}


@needs_kubectl
def test_kubectl_get_watch_prints_table_rows(kubectl: Callable[..., Any], kubeapi: KubeAPIServer) -> None:
    kubeapi.put_object(vds("snap-1"))

    def progress() -> None:
        wait_until(lambda: kubeapi.active_watches == 1, timeout=10)
        kubeapi.put_object({**kubeapi.get_object(VDS, "snap-1", "default"), "status": {"phase": "Ready"}})
    thread = threading.Thread(target=progress)
    thread.start()
    out = kubectl("get", "vds", "--watch", "--request-timeout=1s").stdout.splitlines()
    thread.join()
    assert len(out) == 3 and out[0].split()[:2] == ["NAME", "PHASE"] and out[1].split()[0] == "snap-1"
    assert out[2].split()[:2] == ["snap-1", "Ready"]  # the MODIFIED event, as a Table row


# ---- admission webhooks -----------------------------------------------------------------------

def webhook_config(kind: str, name: str, hook: FakeWebhook | None, *, url: str | None = None,
                   service: Obj | None = None, resources: tuple[str, ...] = (VDS,),
                   operations: tuple[str, ...] = ("CREATE", "UPDATE"), **extra: Any) -> Obj:
    client_config: Obj = {"service": service} if service else {"url": url or hook.url + "/validate"}
    if hook is not None:
        client_config["caBundle"] = hook.ca_bundle
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "webhooks": [{"name": name, "clientConfig": client_config, "admissionReviewVersions": ["v1"],
                          "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 2,
                          "rules": [{"apiGroups": [G], "apiVersions": ["*"], "resources": list(resources),
                                     "operations": list(operations), "scope": "Namespaced"}], **extra}]}


def refuse_disk_x(request: Obj) -> Obj:
    if (request["object"] or {}).get("spec", {}).get("virtualDiskName") == "disk-x":
        return deny("disk-x may not be snapshotted", code=403, reason="Forbidden")
    return allow(warnings=["snapshots are not backups"])


def test_validating_webhook_denies_via_client_and_kubectl(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer,
                                                          kubectl: Callable[..., Any]) -> None:
    with FakeWebhook(refuse_disk_x, dns_names=("snapguard-webhook.d8-snapguard.svc",)) as hook:
        kubeapi.service_urls[("d8-snapguard", "snapguard-webhook")] = hook.url
        kubeapi.put_object(webhook_config(
            "ValidatingWebhookConfiguration", "vds.snapguard.deckhouse.io", hook,
            service={"namespace": "d8-snapguard", "name": "snapguard-webhook", "path": "/validate"},
            namespaceSelector={"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}))

        with pytest.raises(ApiException) as denied:
            crd.create_namespaced_custom_object(G, V, "ns1", VDS, vds("s1", "ns1", disk="disk-x"))
        assert denied.value.status == 403
        body = status_of(denied.value)
        assert body["reason"] == "Forbidden"
        assert body["message"] == ('admission webhook "vds.snapguard.deckhouse.io" denied the request: '
                                   "disk-x may not be snapshotted")
        assert kubeapi.objects(VDS) == []

        _, code, headers = crd.create_namespaced_custom_object_with_http_info(G, V, "ns1", VDS, vds("s1", "ns1"))
        assert code == 201 and headers["Warning"] == '299 - "snapshots are not backups"'
        request = kubeapi.admission_log[-1]["request"]
        assert hook.reviews[-1]["request"] == request
        assert request["operation"] == "CREATE" and request["namespace"] == "ns1" and request["name"] == "s1"
        assert request["kind"] == {"group": G, "version": V, "kind": "VirtualDiskSnapshot"}
        assert request["resource"] == {"group": G, "version": V, "resource": VDS}
        assert request["userInfo"]["username"] == "kubernetes-admin"
        assert request["oldObject"] is None and request["dryRun"] is False
        assert request["options"]["kind"] == "CreateOptions"

        calls = len(hook.reviews)
        crd.create_namespaced_custom_object(G, V, "kube-system", VDS, vds("s1", "kube-system", disk="disk-x"))
        assert len(hook.reviews) == calls  # excluded by the namespaceSelector
        crd.patch_namespaced_custom_object(G, V, "ns1", VDS, "s1", {"metadata": {"labels": {"a": "b"}}})
        update = hook.reviews[-1]["request"]
        assert update["operation"] == "UPDATE" and update["oldObject"]["metadata"].get("labels") is None

        result = kubectl("apply", "-f", "-", input=MANIFEST.format(disk="disk-x").replace("snap-1", "s2"),
                         check=False)
        assert result.returncode == 1
        assert ('admission webhook "vds.snapguard.deckhouse.io" denied the request: '
                "disk-x may not be snapshotted") in result.stderr
        warned = kubectl("apply", "-f", "-", input=MANIFEST.format(disk="disk-1").replace("snap-1", "s3"))
        assert "Warning: snapshots are not backups" in warned.stderr


def test_mutating_webhook_patch_is_applied_before_validation(crd: client.CustomObjectsApi,
                                                             kubeapi: KubeAPIServer) -> None:
    def add_label(request: Obj) -> Obj:
        return json_patch([{"op": "add", "path": "/metadata/labels", "value": {"snapguard.deckhouse.io/seen": "true"}}])
    with FakeWebhook(add_label) as mutator, FakeWebhook(lambda r: allow()) as validator:
        kubeapi.put_object(webhook_config("MutatingWebhookConfiguration", "mutate.snapguard", mutator))
        kubeapi.put_object(webhook_config("ValidatingWebhookConfiguration", "validate.snapguard", validator))
        created = crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
        assert created["metadata"]["labels"] == {"snapguard.deckhouse.io/seen": "true"}
        assert validator.reviews[0]["request"]["object"]["metadata"]["labels"] == {"snapguard.deckhouse.io/seen": "true"}
        assert "uid" not in mutator.reviews[0]["request"]["object"]["metadata"]  # mutation precedes defaulting
        assert [r["request"]["uid"] for r in kubeapi.admission_log] == [
            mutator.reviews[0]["request"]["uid"], validator.reviews[0]["request"]["uid"]]


def test_denial_without_a_code_is_a_bad_request(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer) -> None:
    with FakeWebhook(lambda r: {"allowed": False, "status": {"message": "no"}}) as hook:
        kubeapi.put_object(webhook_config("ValidatingWebhookConfiguration", "terse", hook))
        with pytest.raises(ApiException) as denied:
            crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
    assert denied.value.status == 400  # kube-apiserver raises codes below 400 to 400
    body = status_of(denied.value)
    assert "reason" not in body and body["message"] == 'admission webhook "terse" denied the request: no'


def test_failure_policy_on_unreachable_webhook(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{s.getsockname()[1]}/validate"
    kubeapi.put_object(webhook_config("ValidatingWebhookConfiguration", "strict.snapguard", None, url=dead))
    with pytest.raises(ApiException) as failed:
        crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
    assert failed.value.status == 500
    body = status_of(failed.value)
    assert body["reason"] == "InternalError"
    assert 'failed calling webhook "strict.snapguard"' in body["message"] and dead in body["message"]
    assert kubeapi.objects(VDS) == []

    config = kubeapi.get_object("validatingwebhookconfigurations", "strict.snapguard")
    config["webhooks"][0]["failurePolicy"] = "Ignore"
    kubeapi.put_object(config)
    crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
    assert len(kubeapi.objects(VDS)) == 1


def test_webhook_timeout_and_untrusted_certificate_fail_closed(crd: client.CustomObjectsApi,
                                                               kubeapi: KubeAPIServer) -> None:
    def slow(request: Obj) -> Obj:
        time.sleep(1.5)
        return allow()
    with FakeWebhook(slow) as hook, FakeWebhook() as other:
        kubeapi.put_object(webhook_config("ValidatingWebhookConfiguration", "slow", hook, timeoutSeconds=1))
        with pytest.raises(ApiException) as timed_out:
            crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
        assert timed_out.value.status == 500 and 'failed calling webhook "slow"' in status_of(timed_out.value)["message"]
        wrong_ca = webhook_config("ValidatingWebhookConfiguration", "slow", hook)
        wrong_ca["webhooks"][0]["clientConfig"]["caBundle"] = other.ca_bundle
        kubeapi.put_object(wrong_ca)
        with pytest.raises(ApiException) as untrusted:
            crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
        assert "certificate verify failed" in status_of(untrusted.value)["message"]


def test_dry_run_with_webhooks(crd: client.CustomObjectsApi, kubeapi: KubeAPIServer) -> None:
    with FakeWebhook(refuse_disk_x) as hook:
        kubeapi.put_object(webhook_config("ValidatingWebhookConfiguration", "v.snapguard", hook,
                                          operations=("CREATE", "DELETE")))
        crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"), dry_run="All")
        assert hook.reviews[-1]["request"]["dryRun"] is True and kubeapi.objects(VDS) == []
        with pytest.raises(ApiException) as denied:
            crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1", disk="disk-x"), dry_run="All")
        assert denied.value.status == 403

        crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s1"))
        crd.delete_namespaced_custom_object(G, V, "default", VDS, "s1", dry_run="All")
        delete = hook.reviews[-1]["request"]
        assert delete["operation"] == "DELETE" and delete["object"] is None
        assert delete["oldObject"]["metadata"]["name"] == "s1" and delete["options"]["kind"] == "DeleteOptions"
        assert kubeapi.get_object(VDS, "s1", "default") is not None

        config = kubeapi.get_object("validatingwebhookconfigurations", "v.snapguard")
        config["webhooks"][0]["sideEffects"] = "Some"
        kubeapi.put_object(config)
        with pytest.raises(ApiException) as unsupported:
            crd.create_namespaced_custom_object(G, V, "default", VDS, vds("s2"), dry_run="All")
        assert unsupported.value.status == 400
        assert status_of(unsupported.value)["message"] == 'admission webhook "v.snapguard" does not support dry run'
