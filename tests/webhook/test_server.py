"""A real `snapguard serve` (gunicorn, 2 workers, TLS) on 127.0.0.1: what only a real
server shows: certificates, TLS versions, client certificates, rotation, shutdown,
framing on the wire and stalled clients. Load is bounded in count and time."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.authority import (
    CERT_FILE_MODE,
    KEY_FILE_MODE,
    certificate_pem,
    create_ca,
    issue_serving_certificate,
    private_key_pem,
    service_sans,
    write_file_atomic,
)
from certs.inspect import load_certificate, load_private_key

from .conftest import RunningServer
from .loadgen import review_body
from .rawhttp import HttpResponse, ResponseReader, exchange, open_tls, post_review, request_bytes

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

Serve = Callable[..., RunningServer]


def fingerprint(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def file_fingerprint(path: Path) -> str:
    return load_certificate(path).fingerprint(hashes.SHA256()).hex()


def _tls11_client(cafile: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def assert_answered(response: HttpResponse, uid: str) -> None:
    assert response.status == 200, response.body
    assert response.json()["response"]["uid"] == uid


class TestCertificates:
    def test_embedded_default_creates_certificates_and_says_how_to_call(self, serve: Serve, tmp_path: Path) -> None:
        """No --cert-dir: a CA and serving certificate appear in ./.snapguard/certs, the
        server verifies against that CA for localhost and 127.0.0.1, and the printed
        curl line is the one to use."""
        server = serve(default_cert_dir=True)
        ca = tmp_path / ".snapguard" / "certs" / "ca.crt"
        assert ca.is_file()
        out = server.stdout_path.read_text()
        assert f"CA certificate: {ca}" in out
        assert (
            f"curl --cacert {ca} -H 'Content-Type: application/json' --data @review.json "
            f"https://127.0.0.1:{server.port}/validate"
        ) in out
        context = ssl.create_default_context(cafile=str(ca))
        for host in ("localhost", "127.0.0.1"):
            with open_tls(server.port, context, host=host) as sock:
                assert sock.version() in ("TLSv1.2", "TLSv1.3")
                [health] = exchange(sock, request_bytes("/healthz", method="GET"))
                assert health.status == 200
        assert_answered(post_review(server.port, context, review_body("cli-1")), "cli-1")

    def test_readyz_over_tls(self, serve: Serve) -> None:
        """Ready, and the platform version assumed: the default without a cluster, said
        in the startup log and in /readyz alike."""
        server = serve()
        with open_tls(server.port, server.client_context()) as sock:
            [ready] = exchange(sock, request_bytes("/readyz", method="GET"))
        assert ready.status == 200
        assert ready.json()["ready"] is True
        assert ready.json()["platformVersion"] == "1.10"
        assert "snapguard: platform: v1.10 (the default; no cluster to detect it from)\n" in (
            server.stdout_path.read_text()
        )

    def test_platform_version_flag_in_the_log_and_readyz(self, serve: Serve) -> None:
        server = serve("--platform-version", "0.22")
        with open_tls(server.port, server.client_context()) as sock:
            [ready] = exchange(sock, request_bytes("/readyz", method="GET"))
        assert ready.json()["platformVersion"] == "0.22"
        assert "snapguard: platform: v0.22 (from --platform-version)\n" in server.stdout_path.read_text()

    @pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
    def test_tls_1_1_is_refused_and_1_2_accepted(self, serve: Serve) -> None:
        """The client offers TLS 1.0-1.1 only (and would accept them: see
        test_the_tls_1_1_client_can_speak_tls_1_1): the server refuses."""
        server = serve()
        old = _tls11_client(server.paths.ca_cert)
        with pytest.raises(OSError):  # ssl.SSLError: no shared protocol version
            open_tls(server.port, old).close()
        tls12 = server.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        with open_tls(server.port, tls12) as sock:
            assert sock.version() == "TLSv1.2"
            assert exchange(sock, request_bytes("/healthz", method="GET"))[0].status == 200

    @pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
    def test_the_tls_1_1_client_can_speak_tls_1_1(self, tmp_path: Path) -> None:
        """Control for the test above: the same client completes a TLS 1.1 handshake
        with a server that allows it, so the refusal above is the webhook's."""
        from certs.authority import ensure_certificates

        paths = ensure_certificates(tmp_path / "permissive").paths
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.minimum_version = ssl.TLSVersion.TLSv1
        server_context.set_ciphers("ALL:@SECLEVEL=0")
        server_context.load_cert_chain(paths.tls_cert, paths.tls_key)
        client_context = _tls11_client(paths.ca_cert)
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        outcome: list[object] = []

        def accept() -> None:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    outcome.append(tls.version())
            except (OSError, ssl.SSLError) as error:
                outcome.append(error)

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            try:
                with open_tls(port, client_context) as sock:
                    version = sock.version()
            except ssl.SSLError as error:
                pytest.skip(f"this OpenSSL cannot speak TLS 1.1 at all ({error}); the refusal test is moot")
        finally:
            thread.join(timeout=10)
            listener.close()
        assert version == "TLSv1.1"

    def test_client_certificate_required_with_client_ca(self, serve: Serve, tmp_path: Path) -> None:
        """--client-ca: no certificate, no answer; a certificate of that CA is answered."""
        client_ca, client_ca_key = create_ca(common_name="clients")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        client_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(client_ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(client_ca_key, hashes.SHA256())
        )
        (tmp_path / "client-ca.crt").write_bytes(certificate_pem(client_ca))
        (tmp_path / "client.crt").write_bytes(certificate_pem(client_cert))
        (tmp_path / "client.key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        server = serve("--client-ca", str(tmp_path / "client-ca.crt"))
        anonymous = server.client_context()
        with pytest.raises(OSError):  # handshake alert (TLS 1.2) or on the first read (1.3)
            post_review(server.port, anonymous, review_body("anon"))
        authenticated = server.client_context()
        authenticated.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
        assert_answered(post_review(server.port, authenticated, review_body("mtls")), "mtls")

    def test_rotation_fails_no_request_and_new_connections_get_the_new_certificate(self, serve: Serve) -> None:
        """Replace tls.key and tls.crt (same CA) while clients on kept-alive and on new
        connections keep asking: none fails, and new connections soon see the new
        certificate."""
        server = serve()
        paths = server.paths
        old_print = file_fingerprint(paths.tls_cert)
        context = server.client_context()
        stop = threading.Event()
        failures: list[str] = []
        seen: list[tuple[float, str]] = []
        counts = {"keepalive": 0, "new": 0}
        lock = threading.Lock()

        def keepalive_client(index: int) -> None:
            try:
                with open_tls(server.port, context) as sock:
                    reader = ResponseReader(sock)
                    n = 0
                    while not stop.is_set():
                        uid = f"ka-{index}-{n}"
                        sock.sendall(request_bytes("/validate", review_body(uid)))
                        assert_answered(reader.read(), uid)
                        n += 1
                        with lock:
                            counts["keepalive"] += 1
            except Exception as error:
                failures.append(f"keep-alive client {index}: {error!r}")

        def new_connection_client(index: int) -> None:
            n = 0
            while not stop.is_set():
                uid = f"new-{index}-{n}"
                try:
                    with open_tls(server.port, context) as sock:
                        print_ = fingerprint(sock)
                        assert_answered(exchange(sock, request_bytes("/validate", review_body(uid)))[0], uid)
                    with lock:
                        seen.append((time.monotonic(), print_))
                        counts["new"] += 1
                except Exception as error:
                    failures.append(f"new-connection client {index}: {error!r}")
                n += 1
                time.sleep(0.02)

        threads = [threading.Thread(target=keepalive_client, args=(i,)) for i in range(2)]
        threads += [threading.Thread(target=new_connection_client, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            ca_cert, ca_key = load_certificate(paths.ca_cert), load_private_key(paths.ca_key)
            cert, key = issue_serving_certificate(ca_cert, ca_key, service_sans(None, None))  # type: ignore[arg-type]
            rotated = time.monotonic()
            write_file_atomic(paths.tls_key, private_key_pem(key), mode=KEY_FILE_MODE)
            write_file_atomic(paths.tls_cert, certificate_pem(cert), mode=CERT_FILE_MODE)
            new_print = cert.fingerprint(hashes.SHA256()).hex()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with lock:
                    if sum(1 for at, fp in seen if at > rotated and fp == new_print) >= 3:
                        break
                time.sleep(0.1)
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=20)
        assert failures == []
        assert old_print != new_print
        assert any(fp == old_print for _, fp in seen)
        assert sum(1 for at, fp in seen if at > rotated and fp == new_print) >= 3
        assert counts["keepalive"] > 0 and counts["new"] > 0


class TestShutdown:
    def test_sigterm_finishes_every_request_that_had_started(self, serve: Serve) -> None:
        """SIGTERM while kept-alive clients send and one request is half sent: every
        request sent gets its answer, the half-sent one once it is complete, and the
        server then exits 0 and refuses new connections."""
        server = serve()
        context = server.client_context()
        slow = open_tls(server.port, context)
        slow_request = request_bytes("/validate", review_body("slow"))
        slow.sendall(slow_request[:-100])
        stop = threading.Event()
        failures: list[str] = []
        answered = [0]

        def client(index: int) -> None:
            try:
                with open_tls(server.port, context) as sock:
                    reader = ResponseReader(sock)
                    n = 0
                    while not stop.is_set():
                        uid = f"c{index}-{n}"
                        sock.sendall(request_bytes("/validate", review_body(uid)))
                        response = reader.read()
                        assert_answered(response, uid)
                        answered[0] += 1
                        n += 1
                        if response.headers.get("connection") == "close":
                            return
            except Exception as error:
                failures.append(f"client {index}: {error!r}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        stop.set()
        time.sleep(0.5)
        slow.sendall(slow_request[-100:])
        slow_response = ResponseReader(slow).read()
        slow.close()
        for thread in threads:
            thread.join(timeout=20)
        assert failures == []
        assert answered[0] > 0
        assert_answered(slow_response, "slow")
        assert server.process.wait(timeout=30) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


class TestSlowClients:
    def test_stalled_connections_do_not_stop_anyone_else(self, serve: Serve) -> None:
        """100 TCP-only connections, 100 TLS connections that send nothing, 100 with half
        a body, 50 idle kept-alive connections: a new client is still answered within
        1 s, and a stalled request is still answered once it completes."""
        server = serve()
        context = server.client_context()
        stalled: list[socket.socket] = []
        partial: list[tuple[ssl.SSLSocket, bytes]] = []
        try:
            for _ in range(100):
                stalled.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            for _ in range(100):
                stalled.append(open_tls(server.port, context))
            for index in range(100):
                sock = open_tls(server.port, context)
                data = request_bytes("/validate", review_body(f"partial-{index}"))
                sock.sendall(data[:-50])
                partial.append((sock, data[-50:]))
            for _ in range(50):
                sock = open_tls(server.port, context)
                assert exchange(sock, request_bytes("/healthz", method="GET"))[0].status == 200
                stalled.append(sock)
            time.sleep(0.2)  # let the server take them all in
            for attempt in range(5):
                started = time.monotonic()
                response = post_review(server.port, context, review_body(f"fresh-{attempt}"), timeout=5)
                elapsed = time.monotonic() - started
                assert_answered(response, f"fresh-{attempt}")
                assert elapsed < 1.0, f"a new client waited {elapsed:.2f} s"
            sock, rest = partial[0]
            sock.sendall(rest)
            assert_answered(ResponseReader(sock).read(), "partial-0")
        finally:
            for sock in stalled:
                sock.close()
            for sock, _ in partial:
                sock.close()


    def test_stalled_connections_are_closed_at_their_deadline(self, serve: Serve) -> None:
        """Handshake, first request and a started request each get 10 s (the API
        server's webhook timeout); then the server closes the connection. An idle
        kept-alive connection is not cut at 10 s (it gets gunicorn's keepalive)."""
        server = serve()
        context = server.client_context()
        tcp_only = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        silent = open_tls(server.port, context)
        half = open_tls(server.port, context)
        half.sendall(request_bytes("/validate", review_body("half"))[:-50])
        kept = open_tls(server.port, context)
        assert exchange(kept, request_bytes("/healthz", method="GET"))[0].status == 200
        opened = time.monotonic()
        for sock in (tcp_only, silent, half):
            sock.settimeout(20)
            try:
                data = sock.recv(1024)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            assert data == b""  # closed by the server (within the 20 s read timeout)
            assert time.monotonic() - opened > 5.0  # by the deadline, not at once
        assert exchange(kept, request_bytes("/healthz", method="GET"))[0].status == 200
        for sock in (tcp_only, silent, half, kept):
            sock.close()


class TestWire:
    def test_framing_on_the_wire(self, serve: Serve) -> None:
        """Pipelined requests, Expect: 100-continue, chunked bodies, an announced body
        over 3 MiB and a malformed request line, over real TLS."""
        server = serve()
        context = server.client_context()
        with open_tls(server.port, context) as sock:
            first, second = exchange(
                sock,
                request_bytes("/validate", review_body("pipe-1")) + request_bytes("/validate", review_body("pipe-2")),
                count=2,
            )
            assert_answered(first, "pipe-1")
            assert_answered(second, "pipe-2")
        with open_tls(server.port, context) as sock:
            body = review_body("expect")
            head = request_bytes("/validate", body, headers={"Expect": "100-continue"})[: -len(body)]
            sock.sendall(head)
            interim = sock.recv(1024)
            assert interim.startswith(b"HTTP/1.1 100 Continue")
            [answer] = exchange(sock, body)
            assert_answered(answer, "expect")
        with open_tls(server.port, context) as sock:
            body = review_body("chunked")
            chunked = b"".join(
                f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:100], body[100:])
            ) + b"0\r\n\r\n"
            head = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            assert_answered(exchange(sock, head + chunked)[0], "chunked")
        with open_tls(server.port, context) as sock:
            head = request_bytes("/validate", b"", headers={"Content-Length": str(4 * 1024 * 1024)})
            [too_large] = exchange(sock, head)
            assert too_large.status == 413
            assert "error" in too_large.json()
        with open_tls(server.port, context) as sock:
            [bad] = exchange(sock, b"BREW /validate HTCPCP/1.0\r\n\r\n")
            assert bad.status == 400

    def test_metrics_merge_all_workers_and_stale_files_are_cleaned(self, serve: Serve, tmp_path: Path) -> None:
        """PROMETHEUS_MULTIPROC_DIR is emptied at start; /metrics counts the requests of
        every worker, whichever worker answers the scrape."""
        metrics_dir = tmp_path / "metrics"
        metrics_dir.mkdir()
        (metrics_dir / "counter_999999.db").write_bytes(b"stale")
        server = serve(env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
        assert not (metrics_dir / "counter_999999.db").exists()
        context = server.client_context()
        for index in range(20):
            assert_answered(post_review(server.port, context, review_body(f"m-{index}")), f"m-{index}")
        def scrape() -> str:
            with open_tls(server.port, context) as sock:
                [page] = exchange(sock, request_bytes("/metrics", method="GET"))
            return page.body.decode()

        def requests_counted(text: str) -> float:
            return sum(
                float(value)
                for value in re.findall(r'^snapguard_admission_requests_total\{[^}]*\} (\S+)$', text, re.M)
            )

        # Every worker moves its tallies into the shared files once a second.
        deadline = time.monotonic() + 15
        while requests_counted(text := scrape()) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(3):  # whichever worker scrapes, the totals are the same
            assert requests_counted(text) == 20
            count = re.search(r'^snapguard_admission_duration_seconds_count\{webhook="validate"\} (\S+)$', text, re.M)
            assert count and float(count.group(1)) == 20
            assert "snapguard_certificate_expiry_timestamp_seconds" in text
            assert re.search(r'^snapguard_view_objects\{kind="VirtualDisk"\} 3\.0$', text, re.M)
            text = scrape()

    def test_decision_log_lines_on_stderr(self, serve: Serve) -> None:
        server = serve()
        assert_answered(post_review(server.port, server.client_context(), review_body("logged", "d2")), "logged")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            lines = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
            if any(line.get("uid") == "logged" for line in lines):
                break
            time.sleep(0.1)
        [line] = [line for line in lines if line.get("uid") == "logged"]
        assert line["decision"] == "denied" and line["rules"] == ["vds-disk-resizing"]



class TestRejectedRequests:
    def test_refusals_are_json_logged_and_counted(self, serve: Serve, tmp_path: Path) -> None:
        """gunicorn's own parse errors answer in the documented `{"error": ...}` shape (not
        its HTML page); a gzip body is 415 saying compression is not supported; every
        refusal is a `request rejected` log line and counts in /metrics by status."""
        metrics_dir = tmp_path / "metrics"
        metrics_dir.mkdir()
        server = serve(env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
        context = server.client_context()
        with open_tls(server.port, context) as sock:
            # A header name with a space: framed fine, refused by gunicorn's parser.
            [bad_header] = exchange(
                sock, b"POST /validate HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n"
            )
        assert bad_header.status == 400
        assert bad_header.headers.get("content-type") == "application/json"
        assert "header" in bad_header.json()["error"].lower()
        with open_tls(server.port, context) as sock:
            [gzipped] = exchange(
                sock, request_bytes("/validate", b"\x1f\x8b\x08\x00", headers={"Content-Encoding": "gzip"})
            )
        assert gzipped.status == 415
        assert "compression is not supported" in gzipped.json()["error"]
        with open_tls(server.port, context) as sock:
            [bad_json] = exchange(sock, request_bytes("/validate", b"{" * 10))
        assert bad_json.status == 400

        def counted(text: str, status: str) -> float:
            found = re.search(rf'^snapguard_rejected_requests_total\{{status="{status}"\}} (\S+)$', text, re.M)
            return float(found.group(1)) if found else 0.0

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open_tls(server.port, context) as sock:
                [page] = exchange(sock, request_bytes("/metrics", method="GET"))
            text = page.body.decode()
            if counted(text, "400") >= 2 and counted(text, "415") >= 1:
                break
            time.sleep(0.2)
        assert counted(text, "400") == 2 and counted(text, "415") == 1, text
        lines = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
        rejected = [line for line in lines if line.get("msg") == "request rejected"]
        assert sorted(line["status"] for line in rejected) == [400, 400, 415]
