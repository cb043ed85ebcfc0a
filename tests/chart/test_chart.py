"""The Helm chart `charts/dvp-snapguard`, rendered by the real Helm engine.

Rendering goes through helm-python-sdk, which binds Helm's Go SDK (a shared library in
the wheel) with ctypes: the same template engine, values coalescing and
values.schema.json validation as `helm template` / `helm install`, no helm binary and
no hand-written template engine. Every values file in the chart's `ci/` folder is
rendered; each object is validated against the Kubernetes OpenAPI schemas with
kubernetes-validate in strict mode (unknown fields are errors). Objects of CRDs that
kubernetes-validate has no schema for (cert-manager, Prometheus Operator) are checked
to be exactly the expected kinds.

Then the properties the product relies on: the webhook configurations are the objects
`snapguard webhook-config` prints, the webhook's RBAC only reads, the reconciler only
writes what it creates, every container is locked down, the probes and the PDB are
there, each certificate mode brings what it needs and nothing else, and an unknown
value fails the render.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from certs.authority import service_sans
from policies import kinds
from policies.catalogue import CATALOGUE
from policies.config import load_policy
from policies.models import MODELS
from snapguard.cli import build_parser, main
from snapguard.commands.certs import parse_duration
from webhook.configuration import webhook_configurations

CHART = Path(__file__).resolve().parents[2] / "charts" / "dvp-snapguard"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE = "snapguard"
NAMESPACE = "d8-snapguard"
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion: matchConditions)
# and the newest that kubernetes-validate has schemas for.
KUBE_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
# Kinds from CRDs: no schema in kubernetes-validate; these and only these may appear.
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
READ_VERBS = {"get", "list", "watch"}
CERT_DIR = "/etc/snapguard/certs"
WORKLOAD_KINDS = ("Deployment", "Job", "CronJob")


# --- rendering ------------------------------------------------------------------------


@dataclass
class Rendered:
    values: dict[str, Any]
    objects: list[dict[str, Any]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def named(self, kind: str, suffix: str) -> dict[str, Any]:
        return self.one(kind, f"{self.fullname}{suffix}")

    @property
    def fullname(self) -> str:
        """The name prefix: the webhook Service's name."""
        return str(self.one("Service")["metadata"]["name"])

    def pod_templates(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for obj in self.objects:
            if obj["kind"] in ("Deployment", "Job"):
                yield obj["metadata"]["name"], obj["spec"]["template"]
            elif obj["kind"] == "CronJob":
                yield obj["metadata"]["name"], obj["spec"]["jobTemplate"]["spec"]["template"]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(
    chart: helm.Chart,
    values: dict[str, Any],
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    revision: int = 1,
) -> Rendered:
    manifests = chart.render(
        values=values, name=release, namespace=namespace, revision=revision, is_install=True
    )
    objects: list[dict[str, Any]] = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(values, objects, notes)


def load_values(path: Path) -> dict[str, Any]:
    values = yaml.safe_load(path.read_text()) or {}
    assert isinstance(values, dict)
    return values


@pytest.fixture(scope="module", params=CI_VALUES, ids=[p.stem for p in CI_VALUES])
def rendered(request: pytest.FixtureRequest, chart: helm.Chart) -> Rendered:
    return render(chart, load_values(request.param))


@pytest.fixture(scope="module")
def default(chart: helm.Chart) -> Rendered:
    return render(chart, {})


@pytest.fixture(scope="module")
def cert_manager(chart: helm.Chart) -> Rendered:
    return render(chart, load_values(CHART / "ci" / "cert-manager-values.yaml"))


def merged(rendered: Rendered, *path: str) -> Any:
    """A value as the chart sees it: the ci file's, else values.yaml's."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for source in (rendered.values, defaults):
        node: Any = source
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            return node
    raise KeyError(".".join(path))


# --- every ci values file: renders, and every object is valid ---------------------------


def test_ci_values_cover_the_required_cases() -> None:
    """One values file per case the chart must support."""
    assert {p.stem for p in CI_VALUES} >= {
        "default-values",
        "cert-manager-values",
        "self-managed-values",
        "servicemonitor-values",
        "policy-values",
        "reconciler-disabled-values",
    }


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_is_valid_for_kubernetes(rendered: Rendered, kube_version: str) -> None:
    """Strict OpenAPI validation (unknown fields, wrong types) of every built-in object;
    CRD objects are only of the expected kinds."""
    assert rendered.objects
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_objects_are_in_the_release_namespace_and_uniquely_named(rendered: Rendered) -> None:
    """Helm does not add a namespace: every namespaced object sets it; no two objects
    of a kind share a name; every name is a valid Kubernetes name."""
    seen: set[tuple[str, str]] = set()
    for obj in rendered.objects:
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in seen, key
        seen.add(key)
        assert len(key[1]) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", key[1])
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], key
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, key


def test_only_known_kinds_are_rendered(rendered: Rendered) -> None:
    builtin = {
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("policy/v1", "PodDisruptionBudget"),
        *(
            ("rbac.authorization.k8s.io/v1", k)
            for k in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
        ),
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
    }
    assert {(o["apiVersion"], o["kind"]) for o in rendered.objects} <= builtin | CRD_KINDS


def test_helm_lint_is_clean(rendered: Rendered) -> None:
    """`helm lint --strict` (Helm's own checks: YAML, schema, metadata): no warning or error."""
    report = helm.lint(CHART, rendered.values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert (problems, report["errors"]) == ([], [])


def test_install_dry_run_renders_the_same_objects(chart: helm.Chart) -> None:
    """`helm install --dry-run=client` (the full install action, offline) produces the
    same objects as the render the other tests use."""
    with helm.Config(namespace=NAMESPACE, kube_apiserver="https://127.0.0.1:1") as config:
        release = config.install(chart, RELEASE, {}, dry_run="client", namespace=NAMESPACE)
    installed = [doc for doc in yaml.safe_load_all(release["manifest"]) if doc]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(installed, key=key) == sorted(render(chart, {}).objects, key=key)
    assert "dvp-snapguard" in release["notes"]


def test_notes_render(rendered: Rendered) -> None:
    assert f"Secret {rendered.fullname}-tls" in rendered.notes
    assert "{{" not in rendered.notes


# --- values.schema.json and values.yaml -------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"bogus": 1},
        {"webhook": {"replica": 3}},
        {
            "webhook": {
                "failurePolicy": {"validating": "Fail", "mutating": "Ignore", "other": "Fail"}
            }
        },
        {"webhook": {"failurePolicy": {"validating": "Maybe", "mutating": "Ignore"}}},
        {"policy": {"rules": {"no-such-rule": "deny"}}},
        {"policy": {"rules": {"vms-consistency": "block"}}},
        {"certificates": {"mode": "letsencrypt"}},
        {"certificates": {"selfManaged": {"renewBefore": "30 days"}}},
        {"serviceMonitor": {"enabled": True, "port": 9090}},
        {"reconciler": {"resources": {"requests": {"gpu": 1}}}},
        {"image": {"digest": "latest"}},
    ],
    ids=[
        "unknown-top-level",
        "misspelt-nested",
        "unknown-failure-policy-key",
        "bad-failure-policy",
        "unknown-rule-id",
        "bad-action",
        "unknown-certificate-mode",
        "bad-duration",
        "unknown-servicemonitor-key",
        "unknown-resource",
        "bad-digest",
    ],
)
def test_the_schema_rejects_unknown_and_invalid_values(
    chart: helm.Chart, values: dict[str, Any]
) -> None:
    """The render itself fails (what `helm install` would do), naming the value."""
    with pytest.raises(helm.HelmValuesError, match="schema"):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def _objects(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield schema
        for value in schema.values():
            yield from _objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _objects(value)


def test_every_object_of_the_schema_is_closed(chart: helm.Chart) -> None:
    """additionalProperties: false on every object with known keys; a map of names of
    your choice (labels, annotations, nodeSelector) types its values instead. No
    object takes anything."""
    schema = chart.schema
    assert schema is not None
    objects = list(_objects(schema))
    closed = [node for node in objects if "properties" in node]
    assert len(closed) >= 15
    for node in objects:
        if "properties" in node:
            assert node.get("additionalProperties") is False, sorted(node["properties"])
        else:
            assert isinstance(node.get("additionalProperties"), dict), node


def test_the_schema_knows_exactly_the_catalogue_rules(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    rules = schema["properties"]["policy"]["properties"]["rules"]["properties"]
    assert set(rules) == set(CATALOGUE)


def test_every_value_is_commented() -> None:
    """Each key of values.yaml has a comment right above it (the leaves of a resources
    block are described by the block's comment)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    parents: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while parents and parents[-1][0] >= indent:
            parents.pop()
        inside_resources = any(name == "resources" for _, name in parents)
        parents.append((indent, key))
        previous = next(
            (lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()), ""
        )
        if not inside_resources and not previous.startswith("#"):
            uncommented.append(f"line {number + 1}: {key}")
    assert uncommented == []


# --- the webhook configurations ---------------------------------------------------------


def generated(rendered: Rendered, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    service = rendered.fullname
    return webhook_configurations(
        service=service,
        namespace=namespace,
        name=service,
        validating_failure_policy=merged(rendered, "webhook", "failurePolicy", "validating"),
        mutating_failure_policy=merged(rendered, "webhook", "failurePolicy", "mutating"),
    )


def comparable(configuration: dict[str, Any]) -> dict[str, Any]:
    """Without labels and annotations (the chart adds Helm's labels and, with
    cert-manager, the injection annotation); everything else must be equal."""
    result = copy.deepcopy(configuration)
    result["metadata"].pop("labels", None)
    result["metadata"].pop("annotations", None)
    return result


def chart_configurations(rendered: Rendered) -> list[dict[str, Any]]:
    return [
        rendered.one("ValidatingWebhookConfiguration"),
        rendered.one("MutatingWebhookConfiguration"),
    ]


def test_webhook_configurations_are_what_snapguard_webhook_config_prints(
    rendered: Rendered,
) -> None:
    """Same names, rules, client config, failure policies, selectors, timeouts: the
    generator derives the rules from the rule catalogue, the chart must agree."""
    for ours, expected in zip(chart_configurations(rendered), generated(rendered), strict=True):
        assert comparable(ours) == comparable(expected)
        assert ours["metadata"]["labels"].items() >= expected["metadata"]["labels"].items()


def test_the_chart_registers_the_governed_resources_and_the_operation_filter(
    rendered: Rendered,
) -> None:
    """Virtual disks on CREATE; snapshots, restores, VirtualMachineOperations and
    VirtualMachineSnapshotOperations on CREATE and UPDATE; virtualmachineoperations
    filtered to Restore and Clone by a matchConditions entry, which needs Kubernetes
    1.28 (Chart.yaml says so)."""
    (webhook,) = rendered.one("ValidatingWebhookConfiguration")["webhooks"]
    routes = {
        (resource, op) for rule in webhook["rules"] for resource in rule["resources"] for op in rule["operations"]
    }
    governed = ("virtualdisksnapshots", "virtualmachinesnapshots", "virtualmachinerestores",
                "virtualmachineoperations", "virtualmachinesnapshotoperations")
    assert routes == {(r, op) for r in governed for op in ("CREATE", "UPDATE")} | {("virtualdisks", "CREATE")}
    (condition,) = webhook["matchConditions"]
    assert condition["name"] == "governed-operation-types"
    assert "'virtualmachineoperations'" in condition["expression"]
    assert condition["expression"].count("['Restore', 'Clone']") == 2
    assert not {"Start", "Stop", "Migrate"} & set(re.findall(r"'(\w+)'", condition["expression"]))
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"] == ">=1.28.0-0"


def test_webhook_configurations_match_the_cli_output(
    default: Rendered, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command itself, run in-process, prints the same objects."""
    service = default.fullname
    code = main(
        ["webhook-config", "--service", service, "--namespace", NAMESPACE, "--name", service]
    )
    printed = [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]
    assert code == 0
    assert [comparable(c) for c in chart_configurations(default)] == [
        comparable(c) for c in printed
    ]


def test_webhook_configurations_follow_a_long_release_name(chart: helm.Chart) -> None:
    """Names are cut to fit; the configurations still match the generator for the
    Service name the chart chose, in another namespace."""
    long = render(chart, {}, release="a" * 53, namespace="tenant-snapguard")
    assert all(len(o["metadata"]["name"]) <= 63 for o in long.objects)
    for ours, expected in zip(
        chart_configurations(long), generated(long, "tenant-snapguard"), strict=True
    ):
        assert comparable(ours) == comparable(expected)


def test_webhook_settings(rendered: Rendered) -> None:
    """sideEffects None, timeoutSeconds 5, matchPolicy Equivalent, AdmissionReview v1,
    the release namespace exempt, HTTPS to the Service on 443, no caBundle rendered."""
    for configuration in chart_configurations(rendered):
        (webhook,) = configuration["webhooks"]
        assert webhook["sideEffects"] == "None"
        assert webhook["timeoutSeconds"] == 5
        assert webhook["matchPolicy"] == "Equivalent"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["namespaceSelector"] == {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE]}
            ]
        }
        service = webhook["clientConfig"]["service"]
        assert (service["name"], service["namespace"], service["port"]) == (
            rendered.fullname,
            NAMESPACE,
            443,
        )
        assert "caBundle" not in webhook["clientConfig"]


def test_failure_policies(rendered: Rendered) -> None:
    """Validation fails closed and defaulting open by default; both are configurable."""
    validating, mutating = (
        c["webhooks"][0]["failurePolicy"] for c in chart_configurations(rendered)
    )
    if rendered.values.get("webhook", {}).get("failurePolicy"):
        assert (validating, mutating) == ("Ignore", "Fail")  # ci/policy-values.yaml
    else:
        assert (validating, mutating) == ("Fail", "Ignore")


# --- RBAC -------------------------------------------------------------------------------


def rules_of(rendered: Rendered, kind: str, name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = rendered.one(kind, name)["rules"]
    return rules


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) for every rule without resourceNames."""
    return {
        (group, resource, verb)
        for rule in rules
        if not rule.get("resourceNames")
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def model_resources() -> set[tuple[str, str]]:
    """(group, plural) of every kind the rules read: what the webhook's watch cache lists."""
    return {(kinds.KINDS[kind].group, kinds.KINDS[kind].plural) for kind in MODELS}


def bindings_of(rendered: Rendered, service_account: str) -> set[tuple[str, str]]:
    """(kind, name) of every role bound to the ServiceAccount."""
    bound = set()
    for binding in rendered.all("ClusterRoleBinding") + rendered.all("RoleBinding"):
        for subject in binding["subjects"]:
            if subject["kind"] == "ServiceAccount" and subject["name"] == service_account:
                assert subject["namespace"] == NAMESPACE
                bound.add((binding["roleRef"]["kind"], binding["roleRef"]["name"]))
    return bound


# Platform version detection (cluster/platform.py): get by name, nothing more.
DETECTION_READS = {
    ("deckhouse.io", "modules", "virtualization", "get"),
    ("apiextensions.k8s.io", "customresourcedefinitions",
     "virtualmachineoperations.virtualization.deckhouse.io", "get"),
    ("apiextensions.k8s.io", "customresourcedefinitions",
     "virtualdisksnapshots.virtualization.deckhouse.io", "get"),
}


def named_grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """(group, resource, name, verb) for every rule with resourceNames."""
    return {
        (group, resource, name, verb)
        for rule in rules
        for name in rule.get("resourceNames") or []
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_detection_reads_are_the_ones_cluster_platform_makes() -> None:
    """The names granted are the Module and CRDs cluster/platform.py reads."""
    from cluster.platform import CRD, DETECTION_CRDS, MODULE, MODULE_NAME, crd_name

    read = {(MODULE.group, MODULE.plural, MODULE_NAME, "get")} | {
        (CRD.group, CRD.plural, crd_name(kind), "get")
        for kind in DETECTION_CRDS
    }
    assert read == DETECTION_READS


def test_the_webhook_only_reads_the_kinds_the_rules_read(rendered: Rendered) -> None:
    """get/list/watch, nothing else, on exactly the kinds of policies.models.MODELS,
    get on the objects the platform version is detected from, and no other role bound
    to its ServiceAccount."""
    name = f"{rendered.fullname}-webhook"
    rules = rules_of(rendered, "ClusterRole", name)
    assert all(set(rule["verbs"]) <= READ_VERBS for rule in rules)
    assert grants(rules) == {(g, r, v) for g, r in model_resources() for v in READ_VERBS}
    assert named_grants(rules) == DETECTION_READS
    assert bindings_of(rendered, name) == {("ClusterRole", name)}
    deployment = rendered.named("Deployment", "-webhook")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == name


def test_secrets_access_none_grants_no_secret(chart: helm.Chart, default: Rendered) -> None:
    """The narrowest choice for Secrets the API allows besides cluster-wide reads: none."""
    narrow = render(chart, {"webhook": {"secretsAccess": "none"}})
    name = f"{narrow.fullname}-webhook"
    assert grants(rules_of(narrow, "ClusterRole", name)) == {
        (g, r, v) for g, r in model_resources() if r != "secrets" for v in READ_VERBS
    }
    assert ("", "secrets", "list") in grants(rules_of(default, "ClusterRole", name))


def test_the_default_image_is_what_build_image_makes(default: Rendered) -> None:
    """scripts/build-image tags localhost/dvp-snapguard:<version>; the chart's default
    image is that (tag = appVersion = the package version)."""
    import tomllib

    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((CHART.parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert chart_meta["appVersion"] == version
    script = (CHART.parents[1] / "scripts" / "build-image").read_text()
    assert "NAME=${SNAPGUARD_IMAGE_NAME:-localhost/dvp-snapguard}" in script
    images = {c["image"] for _, pod in default.pod_templates() for c in pod["spec"]["containers"]}
    assert images == {f"localhost/dvp-snapguard:{version}"}


RECONCILER_WRITES = {
    ("snapshot.storage.k8s.io", "volumesnapshots"): {"create", "update", "patch", "delete"},
    ("virtualization.deckhouse.io", "virtualdisksnapshots"): {"create", "update", "patch"},
    ("", "secrets"): {"create", "update", "patch"},
    ("virtualization.deckhouse.io", "virtualmachines"): {"create", "update", "patch"},
    ("virtualization.deckhouse.io", "virtualdisks"): {"create", "update", "patch"},
    ("virtualization.deckhouse.io", "virtualmachineipaddresses"): {"create", "update", "patch"},
    ("virtualization.deckhouse.io", "virtualmachinemacaddresses"): {"create", "update", "patch"},
    ("virtualization.deckhouse.io", "virtualmachineblockdeviceattachments"): {
        "create",
        "update",
        "patch",
    },
    # status of the three snapshot/restore kinds; finalizers of owners (blockOwnerDeletion)
    **{
        ("virtualization.deckhouse.io", f"{plural}/{sub}"): {"update", "patch"}
        for plural in ("virtualdisksnapshots", "virtualmachinesnapshots", "virtualmachinerestores")
        for sub in ("status", "finalizers")
    },
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}


def test_the_reconciler_writes_only_what_it_creates(rendered: Rendered) -> None:
    """Reads what the engine decides from; writes exactly the listed (kind, verbs);
    no wildcard; PVCs, classes and everything else stay read-only."""
    if not merged(rendered, "reconciler", "enabled"):
        assert not [o for o in rendered.objects if o["metadata"]["name"].endswith("-reconciler")]
        return
    name = f"{rendered.fullname}-reconciler"
    rules = rules_of(rendered, "ClusterRole", name)
    granted = grants(rules)
    assert not any("*" in part for grant in granted for part in grant)
    assert {(g, r) for g, r, v in granted if v in READ_VERBS} == model_resources()
    assert named_grants(rules) == DETECTION_READS
    writes: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in granted:
        if verb not in READ_VERBS:
            writes.setdefault((group, resource), set()).add(verb)
    assert writes == RECONCILER_WRITES
    assert bindings_of(rendered, name) == {("ClusterRole", name), ("Role", name)}
    deployment = rendered.named("Deployment", "-reconciler")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == name


def test_the_reconciler_lease_role_is_its_namespace_and_its_lease(rendered: Rendered) -> None:
    if not merged(rendered, "reconciler", "enabled"):
        return
    name = f"{rendered.fullname}-reconciler"
    role = rendered.one("Role", name)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [name],
            "verbs": ["get", "update", "patch"],
        },
    ]


def test_the_certificate_maintainer_touches_one_secret_and_two_configurations(
    rendered: Rendered,
) -> None:
    """Self-managed only: create Secrets (RBAC cannot name what does not exist yet),
    get/update/patch the TLS Secret and the two webhook configurations by name."""
    name = f"{rendered.fullname}-certs"
    if merged(rendered, "certificates", "mode") != "selfManaged":
        assert [o for o in rendered.objects if o["metadata"]["name"] == name] == []
        return
    assert rules_of(rendered, "Role", name) == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [f"{rendered.fullname}-tls"],
            "verbs": ["get", "update", "patch"],
        },
    ]
    assert rules_of(rendered, "ClusterRole", name) == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": [resource],
            "resourceNames": [rendered.one(kind)["metadata"]["name"]],
            "verbs": ["get", "update", "patch"],
        }
        for resource, kind in (
            ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration"),
            ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration"),
        )
    ]
    assert bindings_of(rendered, name) == {("ClusterRole", name), ("Role", name)}


# --- pods ---------------------------------------------------------------------------------


def test_every_container_is_locked_down(rendered: Rendered) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, every capability
    dropped, RuntimeDefault seccomp, requests and limits, a writable /tmp emptyDir."""
    templates = list(rendered.pod_templates())
    assert templates
    for name, template in templates:
        spec = template["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert context.get("privileged", False) is False, name
            resources = container["resources"]
            assert set(resources["requests"]) >= {"cpu", "memory"}, name
            assert set(resources["limits"]) >= {"memory"}, name
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], name


def webhook_container(rendered: Rendered) -> dict[str, Any]:
    spec = rendered.named("Deployment", "-webhook")["spec"]["template"]["spec"]
    container: dict[str, Any]
    (container,) = spec["containers"]
    return container


def test_the_webhook_container_runs_serve_with_the_mounted_certificate_and_policy(
    rendered: Rendered,
) -> None:
    """`serve --host 0.0.0.0 --port 8443 --cert-dir /etc/snapguard/certs --policy ...`,
    accepted by the real command line parser; the TLS Secret (without the CA key) is
    mounted at --cert-dir and the policy ConfigMap at --policy's directory."""
    container = webhook_container(rendered)
    assert container["command"] == ["snapguard"]
    args = container["args"]
    assert args[:7] == ["serve", "--host", "0.0.0.0", "--port", "8443", "--cert-dir", CERT_DIR]
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.host, parsed.port, parsed.cert_dir) == (
        "serve",
        "0.0.0.0",
        8443,
        CERT_DIR,
    )
    spec = rendered.named("Deployment", "-webhook")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    certs = volumes[mounts[CERT_DIR]["name"]]["secret"]
    assert certs["secretName"] == f"{rendered.fullname}-tls"
    assert sorted(item["key"] for item in certs["items"]) == ["ca.crt", "tls.crt", "tls.key"]
    policy_dir, policy_file = parsed.policy.rsplit("/", 1)
    policy = volumes[mounts[policy_dir]["name"]]["configMap"]["name"]
    assert policy_file in rendered.one("ConfigMap", policy)["data"]
    assert container["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]


def test_the_webhook_probes_use_healthz_and_readyz_over_https(rendered: Rendered) -> None:
    container = webhook_container(rendered)
    for probe, path in (
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}, (
            probe
        )


def test_the_webhook_is_replicated_spread_and_protected(rendered: Rendered) -> None:
    """2 replicas (3 in ci/policy-values.yaml), anti-affinity by hostname on its own
    pods, rolling updates that never go below capacity, a PDB keeping one."""
    deployment = rendered.named("Deployment", "-webhook")
    spec = deployment["spec"]
    assert spec["replicas"] == merged(rendered, "webhook", "replicas") >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    mode = merged(rendered, "webhook", "podAntiAffinity")
    if mode == "preferred":
        (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        term = term["podAffinityTerm"]
    else:
        assert mode == "required"
        (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    pdb = rendered.named("PodDisruptionBudget", "-webhook")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == spec["selector"]


def test_the_service_sends_443_to_the_webhook_pods_8443(rendered: Rendered) -> None:
    service = rendered.one("Service")
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("https", 443, "https")
    template = rendered.named("Deployment", "-webhook")["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert webhook_container(rendered)["ports"][0]["containerPort"] == 8443


def test_the_reconciler_runs_with_leader_election_in_the_release_namespace(
    rendered: Rendered,
) -> None:
    if not merged(rendered, "reconciler", "enabled"):
        assert not [
            d for d in rendered.all("Deployment") if d["metadata"]["name"].endswith("-reconciler")
        ]
        return
    deployment = rendered.named("Deployment", "-reconciler")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["reconcile", "--leader-elect"]
    assert args[args.index("--lease-namespace") + 1] == NAMESPACE
    assert args[args.index("--lease-name") + 1] == f"{rendered.fullname}-reconciler"
    assert deployment["spec"]["replicas"] == 2
    if importlib.util.find_spec("snapguard.commands.reconcile") is not None:
        # Once `snapguard reconcile` exists, its parser must accept the chart's flags.
        parsed = build_parser().parse_args(args)
        assert parsed.command == "reconcile"


def test_a_policy_change_rolls_the_pods(chart: helm.Chart) -> None:
    """The policy is read at start: its checksum is in the pod templates."""
    before = render(chart, {})
    after = render(chart, {"policy": {"rules": {"vms-consistency": "warn"}}})
    for name in ("-webhook", "-reconciler"):
        old = before.named("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        new = after.named("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert old["checksum/policy"] != new["checksum/policy"]


def test_the_policy_configmap_is_a_valid_policy_file(rendered: Rendered) -> None:
    """The engine's own loader accepts it, with the configured actions and exemptions."""
    data = rendered.named("ConfigMap", "-policy")["data"]["policy.yaml"]
    policy = load_policy(yaml.safe_load(data), "policy.yaml")
    configured = merged(rendered, "policy", "rules")
    for rule_id, action in configured.items():
        assert policy.action_for(rule_id).value == ("off" if action is False else action)
    assert list(policy.exempt_namespaces) == merged(rendered, "policy", "exemptNamespaces")
    assert policy.rule_errors.value == merged(rendered, "policy", "ruleErrors")


# --- certificates -----------------------------------------------------------------------


def test_self_managed_mode_runs_certs_maintain_at_install_and_on_schedule(
    rendered: Rendered,
) -> None:
    """A Job per release revision and a CronJob, both `certs maintain --once` for the TLS
    Secret, the Service and both configurations, accepted by the real parser; no
    cert-manager objects and no injection annotation."""
    if merged(rendered, "certificates", "mode") != "selfManaged":
        return
    assert not [
        o
        for o in rendered.objects
        if (o["apiVersion"], o["kind"])
        in CRD_KINDS - {("monitoring.coreos.com/v1", "ServiceMonitor")}
    ]
    for configuration in chart_configurations(rendered):
        assert "annotations" not in configuration["metadata"]
    job = rendered.named("Job", "-certs-1")
    cronjob = rendered.named("CronJob", "-certs")
    assert cronjob["spec"]["schedule"] == merged(
        rendered, "certificates", "selfManaged", "schedule"
    )
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    for template in (job["spec"]["template"], cronjob["spec"]["jobTemplate"]["spec"]["template"]):
        (container,) = template["spec"]["containers"]
        parsed = build_parser().parse_args(container["args"])
        assert (parsed.command, parsed.certs_command, parsed.once) == ("certs", "maintain", True)
        assert parsed.secret == f"{rendered.fullname}-tls"
        assert (parsed.namespace, parsed.service) == (NAMESPACE, rendered.fullname)
        assert parsed.validating_webhook == [
            rendered.one("ValidatingWebhookConfiguration")["metadata"]["name"]
        ]
        assert parsed.mutating_webhook == [
            rendered.one("MutatingWebhookConfiguration")["metadata"]["name"]
        ]
        assert parsed.renew_before == parse_duration(
            merged(rendered, "certificates", "selfManaged", "renewBefore")
        )
        assert template["spec"]["serviceAccountName"] == f"{rendered.fullname}-certs"
        (tmp,) = template["spec"]["volumes"]
        assert tmp["emptyDir"]["medium"] == "Memory"  # the CA key never touches the node's disk


def test_a_new_revision_gets_a_new_certs_job(chart: helm.Chart) -> None:
    """Job specs are immutable: the revision in the name lets every upgrade run it."""
    assert [j["metadata"]["name"] for j in render(chart, {}, revision=7).all("Job")] == [
        f"{RELEASE}-dvp-snapguard-certs-7"
    ]


def test_cert_manager_mode_issues_from_a_self_signed_ca_chain(cert_manager: Rendered) -> None:
    """selfSigned Issuer -> CA Certificate -> CA Issuer -> serving Certificate into the
    mounted Secret, for the Service's DNS names; both configurations carry
    `cert-manager.io/inject-ca-from: <ns>/<certificate>`; no Job, CronJob or certs RBAC."""
    fullname = cert_manager.fullname
    selfsigned = cert_manager.named("Issuer", "-selfsigned")
    assert selfsigned["spec"] == {"selfSigned": {}}
    ca = cert_manager.named("Certificate", "-ca")
    assert ca["spec"]["isCA"] is True
    assert ca["spec"]["issuerRef"]["name"] == selfsigned["metadata"]["name"]
    ca_issuer = cert_manager.named("Issuer", "-ca")
    assert ca_issuer["spec"] == {"ca": {"secretName": ca["spec"]["secretName"]}}
    serving = cert_manager.named("Certificate", "-tls")
    assert serving["spec"]["issuerRef"]["name"] == ca_issuer["metadata"]["name"]
    assert serving["spec"]["secretName"] == f"{fullname}-tls"
    wanted = [s for s in service_sans(fullname, NAMESPACE) if s not in ("localhost", "127.0.0.1")]
    assert serving["spec"]["dnsNames"] == wanted
    assert serving["spec"]["duration"] == "2160h" and ca["spec"]["duration"] == "43800h"
    for configuration in chart_configurations(cert_manager):
        assert configuration["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{serving['metadata']['name']}"
        }
    assert cert_manager.all("Job") == [] and cert_manager.all("CronJob") == []
    assert not [o for o in cert_manager.objects if o["metadata"]["name"] == f"{fullname}-certs"]


def test_cert_manager_mode_can_use_an_existing_issuer(chart: helm.Chart) -> None:
    rendered = render(
        chart,
        {
            "certificates": {
                "mode": "certManager",
                "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
            }
        },
    )
    assert [o["kind"] for o in rendered.objects if o["apiVersion"] == "cert-manager.io/v1"] == [
        "Certificate"
    ]
    assert rendered.one("Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


# --- ServiceMonitor -----------------------------------------------------------------------


def test_service_monitor_scrapes_metrics_over_verified_https(rendered: Rendered) -> None:
    monitors = rendered.all("ServiceMonitor")
    if not merged(rendered, "serviceMonitor", "enabled"):
        assert monitors == []
        return
    (monitor,) = monitors
    assert monitor["metadata"]["labels"]["prometheus"] == "main"
    service = rendered.one("Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"], endpoint["path"]) == (
        "https",
        "https",
        "/metrics",
    )
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["tlsConfig"] == {
        "serverName": f"{rendered.fullname}.{NAMESPACE}.svc",
        "insecureSkipVerify": False,
        "ca": {"secret": {"name": f"{rendered.fullname}-tls", "key": "ca.crt"}},
    }


def test_no_secret_material_is_rendered(rendered: Rendered) -> None:
    """The chart never carries keys or certificates: the Secret is made in the cluster."""
    text = yaml.safe_dump_all(rendered.objects)
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text
    assert base64.b64encode(b"-----BEGIN").decode()[:8] not in text
    assert rendered.all("Secret") == []
