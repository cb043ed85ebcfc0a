"""Which release of the virtualization platform a cluster runs (SPEC, "Platform
versions"): what `serve`, `audit` and `reconcile` decide for when neither
`--platform-version` nor the policy file's `platformVersion` says.

In order, the first that answers:

1. **The virtualization module's version.** Deckhouse describes every module with a
   cluster-scoped `deckhouse.io/v1alpha1` `Module`; the one named `virtualization`
   carries the deployed release in `properties.version` (`v1.10.3`;
   deckhouse-controller's `ModuleProperties.Version`, what `kubectl get module
   virtualization` shows). The `ModuleConfig` of the same name is not used: its
   `spec.version` is the version of the module's settings schema, not of the module.
2. **The kinds the API serves**, from discovery of `virtualization.deckhouse.io/v1alpha2`
   (and two CRDs when they can be read):

   | served | assumed |
   |---|---|
   | VirtualMachineSnapshotOperation, no VirtualMachineRestore | v1.10 (v1.9 removed VirtualMachineRestore; the newest known) |
   | VirtualMachineSnapshotOperation and VirtualMachineRestore | v1.8 (v1.2 - v1.8) |
   | VirtualMachineOperation whose CRD's `spec.type` enum has `Restore` | v1.1 |
   | older: the VirtualDiskSnapshot CRD without `volumeSnapshotClassName` | v0.25 with VirtualMachineMACAddresses served, else v0.24 |
   | older: the class fields still there, or the CRDs unreadable | v0.22 |

   Within a range the newest release is assumed, except for the oldest shape, which
   is the level the product's contract was first written for.
3. Nothing to go by (the group is not served, the API server cannot be reached): the
   default, v1.10, saying why.

Every answer says how it was found, for the one log line the commands print. Reads
only: GET on one Module, one discovery document and two CRDs, each with a short
deadline so that a slow API server delays start-up by seconds, not minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies import kinds
from policies.kinds import KindInfo
from policies.platform import (
    DEFAULT,
    NEWEST,
    PlatformVersion,
    PlatformVersionError,
    known,
    parse_platform_version,
)

from .api import ApiError, KubeApi
from .config import ClusterTarget, api_client

MODULE = KindInfo("Module", "deckhouse.io", "v1alpha1", "modules", namespaced=False)
CRD = KindInfo(
    "CustomResourceDefinition", "apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False
)
MODULE_NAME = "virtualization"
# The CRDs whose schemas tell older releases apart (what RBAC grants `get` on, by name).
DETECTION_CRDS = (kinds.VIRTUAL_MACHINE_OPERATION, kinds.VIRTUAL_DISK_SNAPSHOT)
# Every read of the detection is a single small GET.
DETECTION_TIMEOUT = 5.0

V0_22 = PlatformVersion(0, 22)
V0_24 = PlatformVersion(0, 24)
V0_25 = PlatformVersion(0, 25)
V1_1 = PlatformVersion(1, 1)
V1_8 = PlatformVersion(1, 8)


@dataclass(frozen=True)
class DetectedPlatform:
    """A platform version and how it was found (`source`: `module`, `inferred` or
    `default`)."""

    version: PlatformVersion
    source: str
    how: str

    def describe(self) -> str:
        """`platform: v1.10 (from the virtualization module's version v1.10.3)`."""
        return f"platform: {self.version.label} ({self.how})"


def _plural(kind: str) -> str:
    return kinds.KINDS[kind].plural


def crd_name(kind: str) -> str:
    return f"{_plural(kind)}.{kinds.GROUP}"


def _module_version(api: KubeApi) -> tuple[DetectedPlatform | None, str]:
    """The module's version, or None and why not (for the inferred answer's log line)."""
    try:
        module = api.get(MODULE.kind, None, MODULE_NAME)
    except ApiError as error:
        if error.status == 0:
            raise
        return None, f"the virtualization Module cannot be read ({error.status} {error.reason})"
    if module is None:
        return None, "no virtualization Module"
    text = (module.get("properties") or {}).get("version") or ""
    if not text:
        return None, "the virtualization Module has no properties.version"
    try:
        version = parse_platform_version(text)
    except PlatformVersionError:
        return None, f"the virtualization Module's version {text!r} is not a release"
    how = f"from the virtualization module's version {text}"
    if not known(version):
        how += f"; decided by the rules of {NEWEST.label}, the newest this dvp-snapguard knows"
    return DetectedPlatform(version, "module", how), ""


def _schema_of(crd: dict[str, Any] | None) -> dict[str, Any]:
    """The schema of the CRD's served storage version (v1alpha2), or {}."""
    if not crd:
        return {}
    for version in (crd.get("spec") or {}).get("versions") or []:
        if version.get("name") == kinds.VERSION:
            schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
            return schema if isinstance(schema, dict) else {}
    return {}


def _spec_properties(schema: dict[str, Any]) -> dict[str, Any]:
    spec = (schema.get("properties") or {}).get("spec") or {}
    properties = spec.get("properties") or {}
    return properties if isinstance(properties, dict) else {}


def _read_crd(api: KubeApi, kind: str) -> dict[str, Any] | None:
    """The CRD, or None when it cannot be read (absent, or not allowed)."""
    assert kind in DETECTION_CRDS, kind  # RBAC grants these only
    try:
        return api.get(CRD.kind, None, crd_name(kind))
    except ApiError as error:
        if error.status == 0:
            raise
        return None


def _inferred(version: PlatformVersion, why: str) -> DetectedPlatform:
    return DetectedPlatform(version, "inferred", f"inferred: {why}")


def _infer(api: KubeApi, served: set[str], module_note: str) -> DetectedPlatform:
    def has(kind: str) -> bool:
        return _plural(kind) in served

    note = f"; {module_note}" if module_note else ""
    restore, vmsop = has(kinds.VIRTUAL_MACHINE_RESTORE), has(kinds.VIRTUAL_MACHINE_SNAPSHOT_OPERATION)
    if vmsop and not restore:
        return _inferred(
            NEWEST,
            "the API serves VirtualMachineSnapshotOperation and no VirtualMachineRestore, "
            f"as from v1.9{note}",
        )
    if vmsop:
        return _inferred(
            V1_8,
            "the API serves VirtualMachineRestore and VirtualMachineSnapshotOperation, as "
            f"v1.2 - v1.8{note}",
        )
    if has(kinds.VIRTUAL_MACHINE_OPERATION):
        schema = _schema_of(_read_crd(api, kinds.VIRTUAL_MACHINE_OPERATION))
        types = (_spec_properties(schema).get("type") or {}).get("enum") or []
        if "Restore" in types:
            return _inferred(
                V1_1,
                "the API serves VirtualMachineOperation with type Restore and no "
                f"VirtualMachineSnapshotOperation, as v1.1{note}",
            )
    disk_snapshot = _spec_properties(_schema_of(_read_crd(api, kinds.VIRTUAL_DISK_SNAPSHOT)))
    if disk_snapshot and "volumeSnapshotClassName" not in disk_snapshot:
        if has(kinds.VIRTUAL_MACHINE_MAC_ADDRESS):
            return _inferred(
                V0_25,
                "no restore operations; VirtualDiskSnapshot has no volumeSnapshotClassName "
                f"(removed in v0.24) and VirtualMachineMACAddress is served, as v0.25 - v1.0{note}",
            )
        return _inferred(
            V0_24,
            "no restore operations; VirtualDiskSnapshot has no volumeSnapshotClassName "
            f"(removed in v0.24), as v0.24{note}",
        )
    shape = (
        "VirtualDiskSnapshot still has volumeSnapshotClassName"
        if disk_snapshot
        else "the CRDs cannot be read to tell releases before v1.1 apart"
    )
    return _inferred(V0_22, f"no restore operations and {shape}; the oldest shape, v0.22{note}")


def _default(why: str) -> DetectedPlatform:
    return DetectedPlatform(DEFAULT, "default", f"the default: {why}; set --platform-version or platformVersion")


def detect_platform(api: KubeApi) -> DetectedPlatform:
    """The cluster's platform version and how it was found. Never raises: when nothing
    tells (the virtualization group is not served, the API server cannot be reached or
    fails), the default, with the reason."""
    short = KubeApi(api.api_client, timeout=DETECTION_TIMEOUT, extra_kinds=(MODULE, CRD))
    try:
        found, module_note = _module_version(short)
        if found is not None:
            return found
        served = short.served_resources(kinds.API_VERSION)
        if served is None:
            return _default(f"the API server does not serve {kinds.API_VERSION}")
        return _infer(short, served, module_note)
    except ApiError as error:
        return _default(f"cannot detect it from the API server ({error})")


def detect_platform_of(target: ClusterTarget) -> DetectedPlatform:
    """`detect_platform` through a client of its own, closed after: for a process that
    forks afterwards (gunicorn's master), which must not leave pooled connections for
    its workers to share. Raises ClusterConfigError for an unusable kubeconfig."""
    client = api_client(target)
    try:
        return detect_platform(KubeApi(client))
    finally:
        client.close()
