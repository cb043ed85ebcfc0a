"""End to end, as a cluster user sees it: kubectl talks to the in-process API server,
which calls `snapguard serve` (a subprocess: real gunicorn, real TLS, the watch cache
over the same API server) through registered webhook configurations.

The webhook is set up as in a cluster: `snapguard certs create` for the Service's
name, `snapguard webhook-config` applied with kubectl, the Service mapped to the
subprocess's port. The API server verifies the serving certificate against the
configuration's caBundle and the name `snapguard.snapguard-system.svc`.

One API server and one webhook serve the whole module (starting gunicorn is the slow
part); the last test stops the webhook with SIGTERM.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubeapi.server import KubeAPIServer

pytestmark = [pytest.mark.kubeapi, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[2]
SERVICE, NAMESPACE = "snapguard", "snapguard-system"
SERVICE_NAME = f"{SERVICE}.{NAMESPACE}.svc"
Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


def vm_state(index: int, *, agent: bool) -> str:
    """A running VM with one Ready disk on a Bound PVC and its IP address object."""
    return f"""
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachine
metadata: {{name: vm{index}, namespace: ns1, generation: 1}}
spec:
  runPolicy: AlwaysOn
  blockDeviceRefs: [{{kind: VirtualDisk, name: d{index}}}]
status:
  phase: Running
  virtualMachineIPAddressName: vm{index}
  ipAddress: 10.66.10.1{index}
  blockDeviceRefs: [{{kind: VirtualDisk, name: d{index}, size: 10Gi, target: sda, attached: true}}]
  conditions:
  - {{type: AgentReady, status: '{agent}', observedGeneration: 1}}
  - {{type: BlockDevicesReady, status: 'True', observedGeneration: 1}}
---
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualDisk
metadata: {{name: d{index}, namespace: ns1, generation: 1}}
spec:
  persistentVolumeClaim: {{size: 10Gi, storageClassName: replicated}}
status:
  phase: Ready
  capacity: 10Gi
  storageClassName: replicated
  target: {{persistentVolumeClaimName: vd-d{index}-pvc}}
  attachedToVirtualMachines: [{{name: vm{index}, mounted: true}}]
  conditions: [{{type: Ready, status: 'True', observedGeneration: 1}}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: vd-d{index}-pvc, namespace: ns1}}
spec:
  storageClassName: replicated
  volumeMode: Block
  accessModes: [ReadWriteMany]
  resources: {{requests: {{storage: 10Gi}}}}
status: {{phase: Bound, capacity: {{storage: 10Gi}}}}
---
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachineIPAddress
metadata: {{name: vm{index}, namespace: ns1, generation: 1}}
spec: {{type: Auto}}
status:
  phase: Attached
  address: 10.66.10.1{index}
  virtualMachineName: vm{index}
  conditions: [{{type: Attached, status: 'True', observedGeneration: 1}}]
"""


# ns1: vm1 runs without a guest agent (a consistent snapshot is impossible), vm2 runs
# with one (possible); both on the "replicated" class, which has a default
# VolumeSnapshotClass.
CLUSTER_STATE = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: replicated}
provisioner: replicated.csi.storage.deckhouse.io
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: replicated-vsc
  annotations: {snapshot.storage.kubernetes.io/is-default-class: "true"}
driver: replicated.csi.storage.deckhouse.io
deletionPolicy: Delete
---
""" + vm_state(1, agent=False) + "---" + vm_state(2, agent=True)

# A stopped VM without disks, created with kubectl during a test.
VM3 = """
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachine
metadata: {name: vm3, namespace: ns1}
spec: {runPolicy: Manual, blockDeviceRefs: []}
"""
VM3_STATUS = {"status": {"phase": "Stopped", "conditions": [{"type": "BlockDevicesReady", "status": "True"}]}}


def snapshot_manifest(name: str, vm: str, **spec: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": "virtualization.deckhouse.io/v1alpha2",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": "ns1"},
        "spec": {"virtualMachineName": vm, **spec},
    })


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def snapguard(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapguard.cli", *args], cwd=cwd, capture_output=True, text=True,
        env=_environment(), timeout=60, check=True,
    )


def _environment() -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items()
        if key not in ("PROMETHEUS_MULTIPROC_DIR", "SNAPGUARD_CERT_DIR", "KUBECONFIG")
    }
    environment["PYTHONPATH"] = str(ROOT)
    return environment


@dataclass
class Webhook:
    process: subprocess.Popen[bytes]
    port: int
    cert_dir: Path
    stderr_path: Path

    def get(self, path: str) -> tuple[int, str]:
        """GET over TLS, the chain verified against our CA (the name is checked by the
        API server's own calls)."""
        context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        context.check_hostname = False
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=context)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def readiness(self) -> tuple[int, dict[str, Any]]:
        try:
            status, body = self.get("/readyz")
        except OSError:
            return 0, {}
        return status, json.loads(body)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @classmethod
    def start(cls, kubeconfig: Path, cert_dir: Path, workdir: Path, *options: str) -> Webhook:
        """`snapguard serve --kubeconfig` on a free port (stdout and stderr in
        `workdir`), waited for until /readyz answers 200."""
        port = free_port()
        stderr_path = workdir / "serve.err"
        with open(workdir / "serve.out", "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "snapguard.cli", "serve", "--kubeconfig", str(kubeconfig),
                 "--cert-dir", str(cert_dir), "--port", str(port), *options],
                cwd=workdir, stdout=out, stderr=err, env=_environment(),
            )
        webhook = cls(process, port, cert_dir, stderr_path)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"snapguard serve exited {process.returncode}: {webhook.stderr()}")
            return webhook.readiness()[0] == 200

        try:
            wait_for(ready, "snapguard serve to be ready", timeout=60)
        except BaseException:
            webhook.stop()
            raise
        return webhook

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 30 s; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def cluster() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(bookmark_interval=0.2) as server:
        for document in yaml.safe_load_all(CLUSTER_STATE):
            server.put_object(document)
        yield server


@pytest.fixture(scope="module")
def kubectl(cluster: KubeAPIServer, workdir: Path) -> Kubectl:
    kubeconfig = cluster.kubeconfig_path(workdir)
    environment = {**_environment(), "KUBECACHEDIR": str(workdir / "kubecache"), "HOME": str(workdir)}

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), *args], input=input, capture_output=True,
            text=True, env=environment, timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="module")
def webhook(cluster: KubeAPIServer, kubectl: Kubectl, workdir: Path) -> Iterator[Webhook]:
    """`snapguard serve --kubeconfig` on a free port, ready, and registered."""
    cert_dir = workdir / "certs"
    snapguard("certs", "create", "--service", SERVICE, "--namespace", NAMESPACE,
              "--cert-dir", str(cert_dir), cwd=workdir)
    webhook = Webhook.start(cluster.kubeconfig_path(workdir), cert_dir, workdir)
    port = webhook.port
    try:
        configuration = snapguard(
            "webhook-config", "--service", SERVICE, "--namespace", NAMESPACE,
            "--ca-bundle", str(cert_dir / "ca.crt"), cwd=workdir,
        ).stdout
        kubectl("apply", "-f", "-", input=configuration)
        cluster.service_urls[(NAMESPACE, SERVICE)] = f"https://127.0.0.1:{port}"
        yield webhook
    finally:
        webhook.stop()


# ------------------------------------------------------------------------ tests


def test_serve_refuses_an_unusable_cluster_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable kubeconfig, or --state together with --kubeconfig, is one line
    and exit code 2 before anything starts (an unreachable server is not: it only makes
    the webhook unready)."""
    from snapguard.cli import main

    broken = tmp_path / "kubeconfig"
    broken.write_text("not: [a kubeconfig\n")
    assert main(["serve", "--kubeconfig", str(broken), "--cert-dir", str(tmp_path / "certs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"snapguard: error: {broken}: cannot load cluster configuration") and err.count("\n") == 1
    assert main(["serve", "--kubeconfig", str(broken), "--state", str(tmp_path)]) == 2
    assert "--state and --kubeconfig/--context are two sources" in capsys.readouterr().err
    assert not (tmp_path / "certs").exists()


def test_ready_once_the_watch_cache_is_synced(webhook: Webhook) -> None:
    """/readyz reports the cluster view as the watch cache, synced; /metrics carries
    its staleness per kind."""
    status, body = webhook.readiness()
    assert status == 200 and body["ready"] is True
    assert body["view"]["reason"].startswith("watch cache synced:"), body
    assert webhook.get("/metrics")[0] == 200
    wait_for(lambda: 'snapguard_watch_staleness_seconds{kind="VirtualMachine"}' in webhook.get("/metrics")[1],
             "the staleness gauge")


def test_kubectl_apply_of_an_impossible_snapshot_is_denied_with_the_rule_and_the_fix(
    webhook: Webhook, kubectl: Kubectl, cluster: KubeAPIServer
) -> None:
    """A consistent snapshot of a running VM without a guest agent: kubectl fails with
    the webhook's message, naming the rule and the ways out; nothing is stored."""
    proc = kubectl("apply", "-f", "-", input=snapshot_manifest("snap-vm1", "vm1"), check=False)
    assert proc.returncode != 0
    assert 'admission webhook "validate.snapguard.snapguard-system.svc" denied the request' in proc.stderr
    assert "vms-consistency" in proc.stderr
    assert 'Cannot take a consistent snapshot of virtual machine "vm1"' in proc.stderr
    assert "qemu-guest-agent" in proc.stderr and "spec.requiredConsistency: false" in proc.stderr
    assert cluster.get_object("virtualmachinesnapshots", "snap-vm1", "ns1") is None


def test_server_side_dry_run_is_denied_the_same_way_and_stores_nothing(
    webhook: Webhook, kubectl: Kubectl, cluster: KubeAPIServer
) -> None:
    """`--dry-run=server` goes through the same admission: the same denial, no object."""
    proc = kubectl("apply", "--dry-run=server", "-f", "-", input=snapshot_manifest("snap-vm1", "vm1"),
                   check=False)
    assert proc.returncode != 0
    assert "vms-consistency" in proc.stderr and "spec.requiredConsistency: false" in proc.stderr
    assert cluster.get_object("virtualmachinesnapshots", "snap-vm1", "ns1") is None
    reviews = [review["request"] for review in cluster.admission_log
               if review["request"]["name"] == "snap-vm1"]
    assert reviews and reviews[-1]["dryRun"] is True


def test_a_possible_snapshot_is_created_with_its_defaults(
    webhook: Webhook, kubectl: Kubectl
) -> None:
    """A snapshot of the VM with a ready agent is admitted, and the mutating webhook
    fills requiredConsistency and keepIPAddress."""
    proc = kubectl("apply", "-f", "-", input=snapshot_manifest("snap-vm2", "vm2"))
    assert "created" in proc.stdout
    stored = json.loads(kubectl("get", "vmsnapshot", "snap-vm2", "-n", "ns1", "-o", "json").stdout)
    assert stored["spec"]["requiredConsistency"] is True
    assert stored["spec"]["keepIPAddress"] == "Always"
    assert stored["spec"]["virtualMachineName"] == "vm2"


def test_the_webhook_sees_a_vm_created_with_kubectl_a_moment_before(
    webhook: Webhook, kubectl: Kubectl
) -> None:
    """Decisions come from the watch cache: a snapshot of a VM that does not exist is
    denied; once the VM is created (and its status written) with kubectl, the same
    snapshot is admitted as soon as the cache has the VM."""
    manifest = snapshot_manifest("snap-vm3", "vm3")
    denied = kubectl("apply", "-f", "-", input=manifest, check=False)
    assert denied.returncode != 0 and "vms-vm-exists" in denied.stderr

    kubectl("apply", "-f", "-", input=VM3)
    kubectl("patch", "vm", "vm3", "-n", "ns1", "--subresource=status", "--type=merge",
            "-p", json.dumps(VM3_STATUS))

    def admitted() -> bool:
        return kubectl("apply", "-f", "-", input=manifest, check=False).returncode == 0

    wait_for(admitted, "the snapshot of vm3 to be admitted", timeout=10)
    stored = json.loads(kubectl("get", "vmsnapshot", "snap-vm3", "-n", "ns1", "-o", "json").stdout)
    assert stored["spec"]["requiredConsistency"] is True


def test_sigterm_stops_the_webhook_cleanly(webhook: Webhook) -> None:
    """The server exits 0 on SIGTERM, its watch threads and all (last in the module)."""
    webhook.process.send_signal(signal.SIGTERM)
    code = webhook.process.wait(timeout=30)
    assert code == 0, webhook.stderr()
    assert "Traceback" not in webhook.stderr()
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", webhook.port), timeout=1):
        pytest.fail("still listening after SIGTERM")
