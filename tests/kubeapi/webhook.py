"""A tiny HTTPS admission webhook for tests, with a self-signed certificate made on the fly."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Obj = dict[str, Any]


def self_signed_cert(dns_names: list[str]) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) for the DNS names and 127.0.0.1; the cert is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
    now = datetime.datetime.now(datetime.UTC)
    sans = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def allow(warnings: list[str] | None = None) -> Obj:
    return {"allowed": True, **({"warnings": warnings} if warnings else {})}


def deny(message: str, code: int = 403, reason: str = "Forbidden") -> Obj:
    return {"allowed": False, "status": {"code": code, "reason": reason, "message": message}}


def json_patch(ops: list[Obj]) -> Obj:
    return {"allowed": True, "patchType": "JSONPatch",
            "patch": base64.b64encode(json.dumps(ops).encode()).decode()}


class FakeWebhook:
    """HTTPS server on 127.0.0.1 answering AdmissionReviews with `decide(request) -> response`.

    The response dict needs no uid: it is copied from the request. `reviews` records requests.
    """

    def __init__(self, decide: Callable[[Obj], Obj] = lambda req: allow(),
                 dns_names: tuple[str, ...] = ("webhook.default.svc",)):
        self.decide = decide
        self.reviews: list[Obj] = []
        self.cert_pem, key_pem = self_signed_cert(list(dns_names))
        self.ca_bundle = base64.b64encode(self.cert_pem).decode()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "c.pem").write_bytes(self.cert_pem)
            (Path(d) / "k.pem").write_bytes(key_pem)
            ctx.load_cert_chain(Path(d) / "c.pem", Path(d) / "k.pem")
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.reviews.append(review)
                response = {**hook.decide(review["request"]), "uid": review["request"]["uid"]}
                data = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True,
                                              do_handshake_on_connect=False)
        self.port = self._httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeWebhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
