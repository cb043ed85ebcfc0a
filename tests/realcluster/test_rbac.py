"""The chart's ServiceAccounts under the real RBAC authorizer.

The chart's ServiceAccounts, roles and bindings are applied for real (default values,
the release's namespace); the accounts then act with real signed tokens (TokenRequest,
as a pod's projected token) and, for kubectl, by impersonation (`--as`). Questions go
to the authorizer itself (SelfSubjectAccessReview with the account's token) over every
resource the API server serves, so a grant nobody listed is found too.

What it shows: the webhook reads exactly the kinds its watch cache lists and writes
nothing (`snapguard serve` with its token syncs without a single 403); the reconciler
writes exactly `RECONCILER_WRITES` of the chart tests and its own Lease. Secrets: the
webhook reads every Secret, as the chart documents (RBAC cannot limit a list or watch to
the snapshot Secrets' field selector), and can write none.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.chart.test_chart import READ_VERBS, RECONCILER_WRITES, model_resources
from tests.realcluster.conftest import NAMESPACE, Serve
from tests.realcluster.controlplane import ControlPlane
from tests.reconciler import objects as o

pytestmark = pytest.mark.controlplane

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def served(control_plane: ControlPlane) -> list[tuple[str, str, bool]]:
    """(group, resource, namespaced) of every resource in discovery, subresources too."""
    resources = []
    code, body = control_plane.apiserver.get("/api/v1")
    lists = [("", json.loads(body))]
    code, body = control_plane.apiserver.get("/apis")
    for group in json.loads(body)["groups"]:
        code, body = control_plane.apiserver.get(f"/apis/{group['preferredVersion']['groupVersion']}")
        assert code == 200, body
        lists.append((group["name"], json.loads(body)))
    for group_name, resource_list in lists:
        for resource in resource_list["resources"]:
            resources.append((group_name, resource["name"], resource["namespaced"]))
    return resources


def token_of(control_plane: ControlPlane, account: str) -> str:
    return control_plane.service_account_token(NAMESPACE, account)


def allowed(control_plane: ControlPlane, token: str, group: str, resource: str, verb: str,
            namespace: str = "ns-anywhere", name: str = "") -> bool:
    """The authorizer's answer for the token's user (SelfSubjectAccessReview)."""
    plural, _, subresource = resource.partition("/")
    code, body = control_plane.apiserver.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"group": group, "resource": plural, "subresource": subresource,
                                        "verb": verb, "namespace": namespace, "name": name}}}, token=token)
    assert code == 201, body
    return bool(json.loads(body)["status"]["allowed"])


def writes_of(control_plane: ControlPlane, token: str,
              served: list[tuple[str, str, bool]]) -> dict[tuple[str, str], set[str]]:
    """Every (group, resource) the token may write anywhere, with the verbs. Besides
    what discovery lists, each resource's `finalizers`: not a real subresource, but what
    the OwnerReferencesPermissionEnforcement plugin asks about for blockOwnerDeletion."""
    writes: dict[tuple[str, str], set[str]] = {}
    finalizers = [(g, f"{r}/finalizers", n) for g, r, n in served if "/" not in r]
    for group, resource, _ in served + finalizers:
        for verb in WRITE_VERBS:
            if allowed(control_plane, token, group, resource, verb):
                writes.setdefault((group, resource), set()).add(verb)
    return writes


@pytest.fixture(scope="module")
def baseline(control_plane: ControlPlane) -> str:
    """The token of a ServiceAccount bound to nothing: what every account may do
    (create self-reviews, list ClusterTrustBundles) is nobody's grant to check."""
    control_plane.apply([{"apiVersion": "v1", "kind": "ServiceAccount",
                          "metadata": {"name": "bound-to-nothing", "namespace": NAMESPACE}}])
    token = token_of(control_plane, "bound-to-nothing")
    writes = writes_of(control_plane, token, [("authorization.k8s.io", "selfsubjectaccessreviews", False)])
    assert writes == {("authorization.k8s.io", "selfsubjectaccessreviews"): {"create"}}
    return token


def test_the_webhook_reads_exactly_the_kinds_of_its_cache_and_writes_nothing(
    control_plane: ControlPlane, chart_rbac: str, served: list[tuple[str, str, bool]], baseline: str
) -> None:
    """get/list/watch in every namespace on each kind the rules read, no other list;
    over every served resource and subresource, no write verb beyond what every
    ServiceAccount has."""
    token = token_of(control_plane, f"{chart_rbac}-webhook")
    for group, plural in sorted(model_resources()):
        for verb in READ_VERBS:
            assert allowed(control_plane, token, group, plural, verb), (group, plural, verb)
    def readable(token: str) -> set[tuple[str, str]]:
        return {(g, r) for g, r, _ in served if "/" not in r and allowed(control_plane, token, g, r, "list")}

    # Besides its kinds (those this cluster serves: the v1.10 CRD set has no VirtualImage
    # CRDs), only what every ServiceAccount may list (ClusterTrustBundles).
    served_resources = {(g, r) for g, r, _ in served}
    assert readable(token) == (model_resources() & served_resources) | readable(baseline)
    assert writes_of(control_plane, token, served) == writes_of(control_plane, baseline, served)


def test_the_webhook_syncs_with_its_own_token_without_a_forbidden_list(
    control_plane: ControlPlane, chart_rbac: str, serve_factory: Callable[..., Serve],
    tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`snapguard serve` with the webhook's ServiceAccount token is ready, and no kind
    was refused to it (a 403 would make its rules say `unknown` for that kind)."""
    token = token_of(control_plane, f"{chart_rbac}-webhook")
    kubeconfig = control_plane.kubeconfig(tmp_path_factory.mktemp("sa") / "kubeconfig", token=token)
    serve = serve_factory(kubeconfig=kubeconfig)
    assert serve.webhook.readiness()[0] == 200
    assert "403" not in serve.webhook.stderr() and "may not be listed" not in serve.webhook.stderr()


def test_impersonating_the_webhook_kubectl_may_read_secrets_but_not_write_one(
    control_plane: ControlPlane, chart_rbac: str, namespace: str
) -> None:
    """What the chart documents: Secrets are readable (RBAC cannot narrow a list to the
    snapshot Secrets' type), never writable."""
    account = f"system:serviceaccount:{NAMESPACE}:{chart_rbac}-webhook"
    listed = control_plane.kubectl("get", "secrets", "-A", f"--as={account}", check=False)
    assert listed.returncode == 0, listed.stderr
    secret = o.secret("cloud-init")
    secret["metadata"]["namespace"] = namespace
    refused = control_plane.apply([secret], f"--as={account}", check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr
    assert f'User "{account}" cannot' in refused.stderr


def test_the_reconciler_writes_exactly_what_it_creates(
    control_plane: ControlPlane, chart_rbac: str, served: list[tuple[str, str, bool]], baseline: str
) -> None:
    """Over every served resource and subresource, the reconciler's write verbs beyond
    what every ServiceAccount has are exactly the chart's RECONCILER_WRITES (in any
    namespace); its Lease comes on top, in the release's namespace only and by name."""
    name = f"{chart_rbac}-reconciler"
    token = token_of(control_plane, name)
    writes = writes_of(control_plane, token, served)
    everyone = writes_of(control_plane, baseline, served)
    assert {key: verbs - everyone.get(key, set()) for key, verbs in writes.items()
            if verbs - everyone.get(key, set())} == RECONCILER_WRITES
    lease = ("coordination.k8s.io", "leases")
    assert allowed(control_plane, token, *lease, "create", namespace=NAMESPACE)
    assert allowed(control_plane, token, *lease, "update", namespace=NAMESPACE, name=name)
    assert not allowed(control_plane, token, *lease, "update", namespace=NAMESPACE, name="someone-else")
    assert not allowed(control_plane, token, *lease, "create", namespace="default")
