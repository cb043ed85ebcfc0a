"""A real Kubernetes control plane for tests: etcd and kube-apiserver (built from source
by `scripts/build-control-plane`), on free loopback ports, started and stopped by PID.

What it sets up, as a cluster has it and the double (`tests/kubeapi`) cannot:
  * etcd on 127.0.0.1 (plain HTTP, `--unsafe-no-fsync`: the data dies with the test run);
  * kube-apiserver on https://127.0.0.1:PORT with its own CA and serving certificate,
    RBAC as the only authorizer, a static bearer token for `admin` (system:masters), a
    service-account signing key
    (so `kubectl create token` issues real service-account tokens) and every admission
    plugin but `ServiceAccount` (no controller here creates the default account);
  * the CRDs of `tests/realcluster/crds/` (DVP's and the snapshot / PolicyReport kinds),
    waited for until Established and in discovery.

What it does not run: kube-controller-manager (no garbage collection, no namespace
deletion, no aggregated admin/edit/view roles), a scheduler or kubelets. Tests therefore
use a fresh namespace each (`ControlPlane.namespace`) and never wait for deletions that
need a controller.

No network beyond 127.0.0.1; every wait is bounded; `stop()` ends exactly the
processes started here, API servers first.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from certs.authority import certificate_pem, create_ca, issue_serving_certificate, private_key_pem
from tests.e2e.test_kubectl import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRDS = Path(__file__).resolve().parent / "crds"
BUILD_SCRIPT = ROOT / "scripts" / "build-control-plane"
# kube-apiserver reports ready 5-10 s after its start here; the bound leaves room for
# a machine busy with other builds.
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0

Obj = dict[str, Any]
# The kinds of DVP v1.10, plus VirtualMachineRestore as v1.2 - v1.8 still served it next
# to them (its CRD from v0.22.0: the reconciler executes restores of that kind), plus
# the snapshot and PolicyReport kinds of `crds/extra`.
DEFAULT_CRDS = ("v1.10", "v0.22.0/virtualmachinerestores.yaml", "extra")


@dataclass(frozen=True)
class User:
    name: str
    token: str
    groups: tuple[str, ...] = ()


ADMIN = User("admin", "admin-token-e2e", ("system:masters",))
USERS = (ADMIN,)


def binaries_dir() -> Path:
    """$SNAPGUARD_CONTROL_PLANE_BIN (set by scripts/e2e), else whatever
    scripts/build-control-plane builds or reuses (its last line of output)."""
    configured = os.environ.get("SNAPGUARD_CONTROL_PLANE_BIN")
    if configured:
        return Path(configured)
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/build-control-plane failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def without_doc_keys(value: Any) -> Any:
    """The CRD without its `x-doc-*` keys. DVP's CRDs carry documentation examples
    (`x-doc-examples`) that are not fields of a JSON schema; Deckhouse strips them when
    it installs a module, and kube-apiserver refuses them (field not declared in schema)."""
    if isinstance(value, dict):
        return {k: without_doc_keys(v) for k, v in value.items() if not str(k).startswith("x-doc-")}
    if isinstance(value, list):
        return [without_doc_keys(v) for v in value]
    return value


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Process:
    """One child process, its log file, and a stop that signals exactly its PID."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{_tail(self.log)}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_TIMEOUT)
        self.popen = None


@dataclass
class Etcd:
    binary: Path
    directory: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = Process("etcd", [
            str(self.binary), "--name=e2e", f"--data-dir={self.directory / 'data'}",
            f"--listen-client-urls={self.url}", f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=e2e={peer}", "--unsafe-no-fsync", "--log-level=warn",
        ], self.directory / "etcd.log")
        self.process.start()
        wait_for(self._healthy, "etcd /health", READY_TIMEOUT)

    def _healthy(self) -> bool:
        assert self.process is not None
        self.process.check_alive()
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _post(self, path: str, body: Obj) -> Obj:
        # etcd's gRPC gateway: the v3 API as JSON over HTTP on the client port.
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            result: Obj = json.loads(response.read())
            return result

    def revision(self) -> int:
        return int(self._post("/v3/maintenance/status", {})["header"]["revision"])

    def compact(self) -> int:
        """Compact etcd's history up to now: every older resourceVersion is gone, so a
        watch that resumes from one gets 410 Gone. Returns the revision compacted at."""
        revision = self.revision()
        self._post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class APIServer:
    """One kube-apiserver process; `stop()` and `start()` again keep the port, so
    clients reconnect to the same URL, as after a control-plane restart."""

    binary: Path
    directory: Path
    args: list[str]
    ca_file: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = Process(f"kube-apiserver :{self.port}",
                               [str(self.binary), f"--secure-port={self.port}", *self.args],
                               self.directory / f"kube-apiserver-{self.port}.log")
        self.process.start()
        wait_for(self.ready, f"kube-apiserver {self.url}/readyz", READY_TIMEOUT)

    def ready(self) -> bool:
        assert self.process is not None
        self.process.check_alive()
        try:
            return self.get("/readyz") == (200, "ok")
        except OSError:
            return False

    def get(self, path: str, user: User = ADMIN) -> tuple[int, str]:
        return self.request("GET", path, token=user.token)

    def request(self, method: str, path: str, body: Obj | None = None, *,
                token: str = ADMIN.token) -> tuple[int, str]:
        """One HTTPS request with the bearer token, the server verified against our CA."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()


class ControlPlane:
    """etcd + kube-apiserver in `directory`; `start()`, then `stop()` (a context manager
    does both)."""

    def __init__(self, directory: Path, binaries: Path, *, crd_sets: Sequence[str] = DEFAULT_CRDS) -> None:
        self.directory = directory
        self.binaries = binaries
        self.crd_sets = tuple(crd_sets)
        self.pki = directory / "pki"
        self.etcd = Etcd(binaries / "etcd", directory)
        self.apiservers: list[APIServer] = []
        self._namespaces = itertools.count(1)

    # --- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        self.etcd.start()
        self.apiserver = self.add_apiserver()
        self.install_crds(*self.crd_sets)

    def stop(self) -> None:
        for server in reversed(self.apiservers):
            server.stop()
        self.etcd.stop()

    def add_apiserver(self, *extra_args: str) -> APIServer:
        """Another kube-apiserver on the same etcd (as in an HA control plane), e.g. with
        `--watch-cache=false` so that watches go straight to etcd. Started and ready."""
        server = APIServer(self.binaries / "kube-apiserver", self.directory, [], self.pki / "ca.crt")
        server.args = [*self.apiserver_args(server.port), *extra_args]
        self.apiservers.append(server)
        server.start()
        return server

    def apiserver_args(self, port: int) -> list[str]:
        pki = self.pki
        return [
            f"--etcd-servers={self.etcd.url}",
            "--bind-address=127.0.0.1",
            # Without it the server looks for a default route to advertise, and there may be none.
            "--advertise-address=127.0.0.1",
            # The endpoint reconciler refuses a loopback address for the kubernetes
            # Service ("may not be in the loopback range"); nothing here needs it.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.directory / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            # No controller creates namespaces' default ServiceAccount here.
            "--disable-admission-plugins=ServiceAccount",
            "--profiling=false",
            "--v=1",
        ]

    def _write_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        ca, ca_key = create_ca(common_name="e2e-kube-ca")
        serving, serving_key = issue_serving_certificate(
            ca, ca_key, ["127.0.0.1", "localhost", "kubernetes.default.svc"])
        (self.pki / "ca.crt").write_bytes(certificate_pem(ca))
        (self.pki / "apiserver.crt").write_bytes(certificate_pem(serving))
        (self.pki / "apiserver.key").write_bytes(private_key_pem(serving_key))
        # Service-account tokens are RS256 by default: an RSA key.
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.pki / "sa.key").write_bytes(private_key_pem(sa_key))
        (self.pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        # token,user,uid,"group1,group2"
        (self.pki / "tokens.csv").write_text("".join(
            f'{u.token},{u.name},{u.name}-uid,"{",".join(u.groups)}"\n' for u in USERS))

    # --- clients ---------------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        return (self.pki / "ca.crt").read_bytes()

    def kubeconfig(self, path: Path, *, token: str = ADMIN.token, server: APIServer | None = None,
                   namespace: str = "default") -> Path:
        """A kubeconfig for the bearer token (a static user's or a service account's)."""
        server = server or self.apiserver
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {
                "server": server.url,
                "certificate-authority-data": base64.b64encode(self.ca_pem).decode()}}],
            "users": [{"name": "e2e", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e", "namespace": namespace}}],
        }))
        return path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, token: str = ADMIN.token,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The kubectl built with the control plane, as the token's user."""
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        kubeconfig = self.kubeconfig(self.directory / "kubeconfigs" / f"{digest}.yaml", token=token)
        environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.directory),
                       "KUBECACHEDIR": str(self.directory / "kubecache")}
        proc = subprocess.run([str(self.binaries / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
                              input=input, capture_output=True, text=True, env=environment, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def apply(self, objects: Iterable[Obj], *args: str, check: bool = True,
              token: str = ADMIN.token) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", *args, input=yaml.safe_dump_all(list(objects)),
                            check=check, token=token)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def namespace(self, hint: str) -> str:
        """A new namespace for one test: never deleted (no namespace controller runs)."""
        name = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].strip("-")
        name = f"{name}-{next(self._namespaces)}"
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
        return name

    def service_account_token(self, namespace: str, name: str) -> str:
        """A real, signed token of the ServiceAccount (TokenRequest API)."""
        return self.kubectl("create", "token", name, "-n", namespace, "--duration=2h").stdout.strip()

    # --- CRDs --------------------------------------------------------------------------

    def install_crds(self, *sources: str) -> list[str]:
        """Apply every CRD of each source (`crds/<set>/` or one file in it) and wait
        until each is Established and its resource is in discovery. Returns the CRD
        names."""
        documents: list[Obj] = []
        for source in sources:
            location = CRDS / source
            for path in sorted(location.glob("*.yaml")) if location.is_dir() else [location]:
                documents.extend(without_doc_keys(d) for d in yaml.safe_load_all(path.read_text()) if d)
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(documents))
        names = [d["metadata"]["name"] for d in documents]
        self.kubectl("wait", "--for=condition=Established", "--timeout=120s",
                     *(f"crd/{n}" for n in names), timeout=150)
        for crd in documents:
            group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
            served = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
            for version in served:
                wait_for(lambda g=group, v=version, p=plural: self._discovered(g, v, p),
                           f"{plural}.{group}/{version} in discovery", 60)
        return names

    def _discovered(self, group: str, version: str, plural: str) -> bool:
        code, body = self.apiserver.get(f"/apis/{group}/{version}")
        return code == 200 and any(r["name"] == plural for r in json.loads(body).get("resources", []))
