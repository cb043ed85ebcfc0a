"""A minimal HTTP/1.1 client over TLS sockets for the real-server tests: every byte the
tests send is visible (partial bodies, pipelining, Expect), and responses are read by
Content-Length with a bounded timeout."""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def open_tls(port: int, context: ssl.SSLContext, *, host: str = "localhost", timeout: float = 5.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname=host)


def request_bytes(path: str, body: bytes | None = None, *, method: str = "POST", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    all_headers = {"Content-Type": "application/json"} if body is not None else {}
    if body is not None:
        all_headers["Content-Length"] = str(len(body))
    all_headers.update(headers or {})
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class ResponseReader:
    """Reads consecutive responses from one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before a complete response")
        self.buffer += data

    def read(self) -> HttpResponse:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
                status = int(head[0].split()[1])
                headers = {}
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if 100 <= status < 200:
                    del self.buffer[: end + 4]
                    continue
                length = int(headers.get("content-length", "0"))
                while len(self.buffer) < end + 4 + length:
                    self._fill()
                body = bytes(self.buffer[end + 4 : end + 4 + length])
                del self.buffer[: end + 4 + length]
                return HttpResponse(status, headers, body)
            self._fill()


def exchange(sock: socket.socket, data: bytes, count: int = 1) -> list[HttpResponse]:
    sock.sendall(data)
    reader = ResponseReader(sock)
    return [reader.read() for _ in range(count)]


def post_review(port: int, context: ssl.SSLContext, body: bytes, path: str = "/validate", timeout: float = 5.0) -> HttpResponse:
    with open_tls(port, context, timeout=timeout) as sock:
        return exchange(sock, request_bytes(path, body))[0]
