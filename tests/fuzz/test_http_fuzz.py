"""Fuzzing the webhook through its real HTTP stack: a real `snapguard serve` (gunicorn,
TLS, 2 workers) on 127.0.0.1, started once for the module with a small state.

Hypothesis generates AdmissionReviews: valid ones for every governed kind and
operation, then mutated (fields removed, values of the wrong type, strings up to
100 KiB, nesting thousands of levels deep, unicode names, NaN and huge numbers), encoded
as UTF-8 or not (invalid bytes, UTF-16, truncated), under random content types, to
/validate or /mutate, and now and then padded to just under, at or over the 3 MiB limit.
What must hold for every one of them (SPEC "Webhook (HTTPS)"):

* never a 5xx, never a traceback in the body or a new one in the server's stderr;
* HTTP 200 only with a well-formed AdmissionReview response: apiVersion, kind,
  `response.uid` equal to the request's uid, `allowed` a boolean (and a patch, when
  there is one, a base64 JSON list);
* otherwise a 4xx whose body is a JSON object with an `error` string.

Requests go over one kept-alive connection (http.client), reopened when the server
closes it. A body over the limit is sent as the API server's Go client sends it:
reading the answer while writing (see test_oversized_body_sent_whole_before_reading).

Examples: 2,000 by default (derandomized: every run tries the same inputs), or
`SNAPGUARD_FUZZ_EXAMPLES` for a long run, e.g.

    SNAPGUARD_FUZZ_EXAMPLES=100000 .venv/bin/pytest tests/fuzz -p no:cacheprovider -s

Results of the long runs: docs/fuzzing.md.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.server]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("SNAPGUARD_FUZZ_EXAMPLES", "2000"))
LIMIT = 3 * 1024 * 1024  # the API server's request limit, the webhook's 413 threshold
GROUP = "virtualization.deckhouse.io"
V = f"{GROUP}/v1alpha2"
GOVERNED = ("VirtualDiskSnapshot", "VirtualMachineSnapshot", "VirtualMachineRestore", "VirtualDisk")


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


# A namespace with a VM that can be snapshotted (vm1: agent, Ready disk d1), one that
# cannot (vm2: no agent), a resizing disk (d3), a Ready snapshot of vm1 with its
# Secret and disk snapshot (restores and disks from snapshots decide against them).
STATE = [
    {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "replicated"},
     "provisioner": "replicated.csi.storage.deckhouse.io"},
    {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
     "metadata": {"name": "replicated", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
     "driver": "replicated.csi.storage.deckhouse.io"},
    *[
        {"apiVersion": V, "kind": "VirtualMachine", "metadata": {"name": vm, "namespace": "ns1", "generation": 1},
         "spec": {"virtualMachineIPAddressName": f"{vm}-ip", "blockDeviceRefs": [{"kind": "VirtualDisk", "name": disk}],
                  "provisioning": {"type": "UserDataRef", "userDataRef": {"kind": "Secret", "name": "cloud-init"}}},
         "status": {"phase": "Running", "virtualMachineIPAddressName": f"{vm}-ip",
                    "blockDeviceRefs": [{"kind": "VirtualDisk", "name": disk, "attached": True}],
                    "conditions": [{"type": "BlockDevicesReady", "status": "True"},
                                   {"type": "AgentReady", "status": agent}]}}
        for vm, disk, agent in (("vm1", "d1", "True"), ("vm2", "d2", "False"))
    ],
    *[
        {"apiVersion": V, "kind": "VirtualDisk", "metadata": {"name": disk, "namespace": "ns1", "generation": 1},
         "spec": {"persistentVolumeClaim": {"size": "10Gi", "storageClassName": "replicated"}},
         "status": {"phase": phase, "capacity": "10Gi", "target": {"persistentVolumeClaimName": f"{disk}-pvc"},
                    "attachedToVirtualMachines": [{"name": vm}] if vm else [],
                    "conditions": [{"type": "Ready", "status": "True"}]}}
        for disk, phase, vm in (("d1", "Ready", "vm1"), ("d2", "Ready", "vm2"), ("d3", "Resizing", None))
    ],
    *[
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"{disk}-pvc", "namespace": "ns1"},
         "spec": {"storageClassName": "replicated"}, "status": {"phase": "Bound"}}
        for disk in ("d1", "d2", "d3")
    ],
    *[
        {"apiVersion": V, "kind": "VirtualMachineIPAddress", "metadata": {"name": f"{vm}-ip", "namespace": "ns1"},
         "spec": {"type": "Static", "staticIP": ip}, "status": {"phase": "Attached", "address": ip, "virtualMachineName": vm}}
        for vm, ip in (("vm1", "10.0.0.1"), ("vm2", "10.0.0.2"))
    ],
    {"apiVersion": V, "kind": "VirtualMachineMACAddress", "metadata": {"name": "vm1-mac", "namespace": "ns1"},
     "spec": {"address": "aa:bb:cc:dd:ee:01"}, "status": {"phase": "Attached", "address": "aa:bb:cc:dd:ee:01", "virtualMachine": "vm1"}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloud-init", "namespace": "ns1"}, "data": {"userData": _b64("#cloud-config")}},
    {"apiVersion": "v1", "kind": "Secret", "type": "virtualmachine.virtualization.deckhouse.io/snapshot",
     "metadata": {"name": "snap1-secret", "namespace": "ns1"},
     "data": {
         "vm": _b64({"apiVersion": V, "kind": "VirtualMachine", "metadata": {"name": "vm1"},
                     "spec": {"virtualMachineIPAddressName": "vm1-ip", "blockDeviceRefs": [{"kind": "VirtualDisk", "name": "d1"}]}}),
         "vmip": _b64({"apiVersion": V, "kind": "VirtualMachineIPAddress", "metadata": {"name": "vm1-ip"},
                       "spec": {"type": "Static", "staticIP": "10.0.0.1"}}),
         "vmmacs": _b64([{"apiVersion": V, "kind": "VirtualMachineMACAddress", "metadata": {"name": "vm1-mac"},
                          "spec": {"address": "aa:bb:cc:dd:ee:01"}}]),
     }},
    {"apiVersion": V, "kind": "VirtualMachineSnapshot", "metadata": {"name": "snap1", "namespace": "ns1", "generation": 1},
     "spec": {"virtualMachineName": "vm1", "requiredConsistency": True, "keepIPAddress": "Always"},
     "status": {"phase": "Ready", "virtualMachineSnapshotSecretName": "snap1-secret",
                "virtualDiskSnapshotNames": ["snap1-d1"],
                "conditions": [{"type": "VirtualMachineSnapshotReady", "status": "True"}]}},
    {"apiVersion": V, "kind": "VirtualDiskSnapshot", "metadata": {"name": "snap1-d1", "namespace": "ns1", "generation": 1},
     "spec": {"virtualDiskName": "d1"}, "status": {"phase": "Ready", "volumeSnapshotName": "vs-snap1-d1"}},
    {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "vs-snap1-d1", "namespace": "ns1"},
     "spec": {"source": {"persistentVolumeClaimName": "d1-pvc"}}, "status": {"readyToUse": True, "restoreSize": "10Gi"}},
]

# ---------------------------------------------------------------- the server


@dataclass
class FuzzServer:
    process: subprocess.Popen[bytes]
    port: int
    cafile: Path
    stderr_path: Path
    stderr_offset: int = 0
    connection: http.client.HTTPSConnection | None = None
    outcomes: Counter[str] = field(default_factory=Counter)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))

    def new_stderr(self) -> bytes:
        """What the server wrote to stderr since the last call."""
        with open(self.stderr_path, "rb") as err:
            err.seek(self.stderr_offset)
            data = err.read()
        self.stderr_offset += len(data)
        return data


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    workdir = tmp_path_factory.mktemp("fuzz")
    state = workdir / "state.json"
    state.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": STATE}))
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "SNAPGUARD_CERT_DIR", "KUBECONFIG")}
    environment["PYTHONPATH"] = str(ROOT)
    stderr_path = workdir / "serve.err"
    with open(workdir / "serve.out", "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "snapguard.cli", "serve", "--state", str(state), "--port", str(port),
             "--cert-dir", str(workdir / "certs")],
            cwd=workdir, stdout=out, stderr=err, env=environment,
        )
    running = FuzzServer(process, port, workdir / "certs" / "ca.crt", stderr_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"snapguard serve exited {process.returncode}: {stderr_path.read_text()}")
            try:
                if _get(running, "/readyz")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield running
    finally:
        if running.connection is not None:
            running.connection.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        print(f"\nfuzz outcomes: {dict(sorted(running.outcomes.items()))}")


def _get(server: FuzzServer, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.context(), timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


def post_kept_alive(server: FuzzServer, path: str, content_type: str, body: bytes) -> Answer:
    """POST over the module's kept-alive connection; reopened when the server closed it
    (after a `Connection: close` answer, or an idle close racing this request)."""
    for attempt in range(2):
        if server.connection is None:
            server.connection = http.client.HTTPSConnection(
                "127.0.0.1", server.port, context=server.context(), timeout=20
            )
        connection = server.connection
        reused = connection.sock is not None
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            data = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            connection.close()
            server.connection = None
            if reused and attempt == 0:
                continue  # the server closed a kept-alive connection first: once more
            raise
        if response.will_close:
            connection.close()
            server.connection = None
        return Answer(response.status, response.getheader("Content-Type") or "", data)
    raise AssertionError("unreachable")


def post_reading_while_sending(server: FuzzServer, path: str, content_type: str, body: bytes) -> Answer:
    """POST on a new connection, reading the answer while the body is being written, as
    Go's HTTP client (the API server's) does: the server may answer 413 and close
    before it has read a body over the limit. One thread, reads first: an SSL object
    must not be read and written from two threads at once."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock = server.context().wrap_socket(raw, server_hostname="127.0.0.1")
    sock.setblocking(False)
    pending = memoryview((
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body)
    data = b""
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], 1.0)
            if readable or sock.pending():
                try:
                    chunk = sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                if not chunk:
                    raise ConnectionError(f"closed without a complete answer: {data[:200]!r}")
                data += chunk
                end = data.find(b"\r\n\r\n")
                if end >= 0:
                    headers = data[:end].decode("latin-1").lower().split("\r\n")
                    length = next((int(h.split(":", 1)[1]) for h in headers if h.startswith("content-length:")), 0)
                    if len(data) >= end + 4 + length:
                        content_type_header = next(
                            (h.split(":", 1)[1].strip() for h in headers if h.startswith("content-type:")), "")
                        return Answer(int(headers[0].split()[1]), content_type_header, data[end + 4 : end + 4 + length])
            elif writable:
                try:
                    pending = pending[sock.send(pending[:65536]) :]
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except OSError:
                    pending = memoryview(b"")  # the server stopped reading: read its answer
        raise TimeoutError(f"no answer within 20 s: {data[:200]!r}")
    finally:
        sock.close()


# ---------------------------------------------------------------- strategies

# Names from the state (so rules reach deep paths), names that do not exist, unicode.
KNOWN_NAMES = ("vm1", "vm2", "d1", "d2", "d3", "snap1", "snap1-d1", "vm1-ip", "vm1-mac", "cloud-init", "replicated", "ns1")
# Hypothesis's text() leaves out lone surrogates (category Cs); JSON can carry them as
# escapes (\udfff) and names are reflected into messages, so they are drawn explicitly
# (test_lone_surrogate_reflected_into_a_message is the fixed case).
names = st.one_of(
    st.sampled_from(KNOWN_NAMES),
    st.text(min_size=0, max_size=40),
    st.text(alphabet=st.characters(categories=("Cs", "Ll")), min_size=1, max_size=8),
    st.text(alphabet=st.characters(categories=("Lu", "Ll", "Lo", "Mn", "Nd", "So", "Zs", "Cf")), max_size=20),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), names,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=12,
)
quantities = st.one_of(st.sampled_from(["10Gi", "20Gi", "1Mi", "0", "-1Gi", "1e3", "10Ei", "999999999999999999999Ei", "Gi", ""]), names)


def spec_for(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    if kind == "VirtualDiskSnapshot":
        return st.fixed_dictionaries(
            {"virtualDiskName": names},
            optional={"requiredConsistency": st.booleans(), "volumeSnapshotClassName": names},
        )
    if kind == "VirtualMachineSnapshot":
        return st.fixed_dictionaries(
            {"virtualMachineName": names},
            optional={
                "requiredConsistency": st.booleans(),
                "keepIPAddress": st.sampled_from(["Always", "Never", "Sometimes", ""]),
                "volumeSnapshotClasses": st.lists(
                    st.fixed_dictionaries({"storageClassName": names, "volumeSnapshotClassName": names}), max_size=3),
            },
        )
    if kind == "VirtualMachineRestore":
        replacement = st.fixed_dictionaries({
            "from": st.fixed_dictionaries({"name": names}, optional={"kind": st.sampled_from(
                ["VirtualMachine", "VirtualDisk", "VirtualMachineIPAddress", "VirtualMachineMACAddress",
                 "VirtualMachineBlockDeviceAttachment", "Secret", "Pod", ""])}),
            "to": names,
        })
        return st.fixed_dictionaries(
            {"virtualMachineSnapshotName": st.one_of(st.just("snap1"), names)},
            optional={"restoreMode": st.sampled_from(["Safe", "Forced", "Unsafe", ""]),
                      "nameReplacements": st.lists(replacement, max_size=4)},
        )
    return st.fixed_dictionaries(
        {"dataSource": st.fixed_dictionaries({
            "type": st.sampled_from(["ObjectRef", "HTTP", "Upload", ""]),
            "objectRef": st.fixed_dictionaries({"kind": st.sampled_from(["VirtualDiskSnapshot", "VirtualImage", ""]),
                                                "name": st.one_of(st.just("snap1-d1"), names)}),
        })},
        optional={"persistentVolumeClaim": st.fixed_dictionaries({}, optional={"size": quantities, "storageClassName": names})},
    )


@st.composite
def admission_reviews(draw: st.DrawFn) -> dict[str, Any]:
    """A valid AdmissionReview v1 request for a governed (or, sometimes, another) kind."""
    kind = draw(st.sampled_from((*GOVERNED, *GOVERNED, "VirtualMachine", "Pod")))
    group = "" if kind == "Pod" else draw(st.sampled_from((GROUP, GROUP, GROUP, "example.com")))
    operation = draw(st.sampled_from(("CREATE", "CREATE", "UPDATE", "DELETE", "CONNECT")))
    name = draw(names)
    namespace = draw(st.one_of(st.just("ns1"), names))
    obj = {
        "apiVersion": f"{group}/v1alpha2" if group else "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, **draw(st.fixed_dictionaries(
            {}, optional={"generation": st.integers(0, 5), "labels": st.dictionaries(names, names, max_size=3),
                          "annotations": st.dictionaries(names, names, max_size=3)}))},
        "spec": draw(spec_for(kind)) if kind in GOVERNED else draw(json_values),
    }
    request: dict[str, Any] = {
        "uid": draw(st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=64))),
        "kind": {"group": group, "version": "v1alpha2", "kind": kind},
        "resource": {"group": group, "version": "v1alpha2", "resource": kind.lower() + "s"},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": draw(names), "groups": ["system:authenticated"]},
        "object": None if operation == "DELETE" else obj,
        "oldObject": None,
        "dryRun": draw(st.booleans()),
    }
    if operation in ("UPDATE", "DELETE"):
        old = json.loads(json.dumps(obj))
        if kind in GOVERNED and draw(st.booleans()):
            old["spec"] = draw(spec_for(kind))
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


DEEP = "\x00deep:"  # placeholder replaced by nesting after serialisation (json.dumps recurses)


@st.composite
def mutated(draw: st.DrawFn, review: dict[str, Any]) -> dict[str, Any]:
    """The review with 0-3 of: a field removed, a value of the wrong type, a string up to
    100 KiB, nesting up to 100,000 levels deep."""
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(review) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = review
        for key in path[:-1]:
            parent = parent[key]
        how = draw(st.sampled_from(("remove", "wrong type", "wrong type", "huge string", "deep")))
        if how == "remove":
            del parent[path[-1]]
            continue
        if how == "wrong type":
            value = draw(json_values)
        elif how == "huge string":
            value = draw(st.sampled_from("x\u00e9\u4e2d\U0001f600\"\\")) * draw(st.integers(1024, 100 * 1024))
        else:
            value = f"{DEEP}{draw(st.sampled_from('[{'))}{draw(st.integers(10, 100_000))}"
        parent[path[-1]] = value
    return review


def _serialise(review: Any, ensure_ascii: bool = False) -> bytes:
    text = json.dumps(review, ensure_ascii=ensure_ascii)
    while (start := text.find(json.dumps(DEEP)[1:-1])) >= 0:
        # The placeholder starts a JSON string value: replace the whole string literal.
        open_quote = start - 1
        close_quote = text.index('"', start)
        token = json.loads(text[open_quote : close_quote + 1])
        bracket, depth = token[len(DEEP)], int(token[len(DEEP) + 1 :])
        nested = "[" * depth + "]" * depth if bracket == "[" else '{"a":' * depth + "1" + "}" * depth
        text = text[:open_quote] + nested + text[close_quote + 1 :]
    # Lone surrogates (only ever inside strings) as escapes: UTF-8 cannot carry them raw.
    return LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text).encode("utf-8")


LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# Mostly the one content type that gets past the 415, so the body is what is tested.
CONTENT_TYPES = st.integers(0, 9).flatmap(lambda n: st.just("application/json") if n < 7 else st.one_of(
    st.sampled_from([
        "application/json; charset=utf-8", "APPLICATION/JSON", "application/json;charset=latin-1",
        "text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
        "application/json-patch+json", "application/merge-patch+json", "application/yaml", "*/*",
    ]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
))


@dataclass(frozen=True)
class Case:
    path: str
    content_type: str
    body: bytes

    def __repr__(self) -> str:  # a failing 3 MiB example should stay readable
        shown = self.body if len(self.body) <= 2000 else self.body[:1000] + b"..." + self.body[-200:]
        return f"Case(path={self.path!r}, content_type={self.content_type!r}, {len(self.body)} bytes: {shown!r})"


@st.composite
def cases(draw: st.DrawFn) -> Case:
    review = draw(admission_reviews())
    if draw(st.integers(0, 3)):
        review = draw(mutated(review))
    body = _serialise(review, ensure_ascii=draw(st.booleans()))
    encoding = draw(st.sampled_from(("utf-8",) * 12 + ("invalid bytes", "utf-16", "latin-1", "truncated", "not json")))
    if encoding == "invalid bytes":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=8).filter(_not_utf8)) + body[at:]
    elif encoding == "utf-16":
        body = body.decode().encode("utf-16")
    elif encoding == "latin-1":
        body = body.decode().encode("latin-1", errors="replace")
    elif encoding == "truncated":
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    elif encoding == "not json":
        body = draw(st.binary(max_size=200))
    if draw(st.integers(0, 99)) == 0:  # near, at and over the 3 MiB limit, now and then
        target = draw(st.sampled_from((LIMIT - 4096, LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + 65536)))
        body = _padded(review, target)
    content_type = draw(CONTENT_TYPES)
    path = draw(st.sampled_from(("/validate", "/validate", "/mutate")))
    return Case(path, content_type, body)


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _padded(review: dict[str, Any], target: int) -> bytes:
    """The review serialised to exactly `target` bytes (padding in an annotation)."""
    padded = json.loads(json.dumps(review)) if isinstance(review, dict) else {}
    padded.setdefault("padding", "")
    base = len(_serialise(padded))
    padded["padding"] = "p" * max(0, target - base)
    body = _serialise(padded)
    return body + b" " * max(0, target - len(body))


# ---------------------------------------------------------------- the oracle


def _request_uid(body: bytes) -> Any:
    """The uid the server saw, decoded the way it decodes (json.loads of the bytes)."""
    try:
        decoded = json.loads(body)
        return decoded["request"]["uid"]
    except Exception:
        return None


def check_answer(case: Case, answer: Answer) -> str:
    assert answer.status < 500, f"HTTP {answer.status}: {answer.body[:500]!r}"
    assert b"Traceback" not in answer.body and b'File "' not in answer.body, answer.body[:2000]
    assert answer.content_type.startswith("application/json"), answer.content_type
    payload = json.loads(answer.body)
    if answer.status == 200:
        assert payload["apiVersion"] == "admission.k8s.io/v1" and payload["kind"] == "AdmissionReview", payload
        response = payload["response"]
        assert response["uid"] == _request_uid(case.body), (response["uid"], _request_uid(case.body))
        assert isinstance(response["allowed"], bool), response
        if "patch" in response:
            assert response["patchType"] == "JSONPatch"
            assert isinstance(json.loads(base64.b64decode(response["patch"])), list)
        return "200 allowed" if response["allowed"] else "200 denied"
    assert 400 <= answer.status < 500, answer.status
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str), payload
    return str(answer.status)


# ---------------------------------------------------------------- the tests

SURROGATE_REVIEW = json.dumps({
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {"uid": "surrogate", "kind": {"group": GROUP, "version": "v1alpha2", "kind": "VirtualDiskSnapshot"},
                "namespace": "ns1", "operation": "CREATE",
                "object": {"apiVersion": V, "kind": "VirtualDiskSnapshot", "metadata": {"name": "s", "namespace": "ns1"},
                           "spec": {"virtualDiskName": "d\udfff"}}},
}).encode()


@pytest.mark.timeout(max(300, EXAMPLES // 5))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.large_base_example, HealthCheck.function_scoped_fixture],
)
@example(case=Case("/validate", "application/json", b"[" * 100_000 + b"]" * 100_000))
@example(case=Case("/validate", "application/json", _padded({"apiVersion": "admission.k8s.io/v1"}, LIMIT + 1)))
@example(case=Case("/mutate", "application/json", b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":NaN}}'))
@given(case=cases())
def test_every_request_gets_an_answer_or_a_4xx(server: FuzzServer, case: Case) -> None:
    """Whatever arrives: a well-formed AdmissionReview answer or a 4xx with a JSON error,
    never a 5xx or a traceback, in the answer or in the server's log."""
    if len(case.body) > LIMIT:
        answer = post_reading_while_sending(server, case.path, case.content_type, case.body)
    else:
        answer = post_kept_alive(server, case.path, case.content_type, case.body)
    server.outcomes[check_answer(case, answer)] += 1
    logged = server.new_stderr()
    assert b"Traceback" not in logged and b'"level":"error"' not in logged, logged[-3000:].decode(errors="replace")
    assert server.process.poll() is None, "the server exited"


def test_lone_surrogate_reflected_into_a_message(server: FuzzServer) -> None:
    """JSON may escape a lone surrogate (\\udfff); the API server never sends one, but a
    name holding one is reflected into the denial message, which must still encode."""
    answer = post_kept_alive(server, "/validate", "application/json", SURROGATE_REVIEW)
    server.new_stderr()
    assert answer.status == 200, answer.body


def test_oversized_body_sent_whole_before_reading(server: FuzzServer) -> None:
    """A client that writes the whole over-limit body before reading (http.client, curl
    without Expect) should get the 413 too, not a reset."""
    body = _padded({"apiVersion": "admission.k8s.io/v1"}, 8 * 1024 * 1024)
    for _ in range(3):
        connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.context(), timeout=20)
        try:
            connection.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
            assert connection.getresponse().status == 413
        finally:
            connection.close()
