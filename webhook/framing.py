"""Is a whole HTTP/1.1 request in this buffer yet?

The server's event loop reads bytes into a per-connection buffer and asks `RequestFrame`
after every read. Only a complete request (headers, then a `Content-Length` body or a
chunked body up to its last chunk) is handed to a worker thread, so a thread never
waits on a slow or silent client. This is framing only, not parsing: gunicorn's parser
still reads the request (from the buffer) and rejects what is malformed.

Pure: no sockets, no clock. Incremental: each call looks only at bytes it has not
looked at before, so a request trickling in byte by byte costs linear time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Request line and headers together. The API server sends well under 1 KiB; gunicorn's
# own limits (8 KiB per field, 100 fields) are far above what a webhook needs.
MAX_HEADER_BYTES = 64 * 1024
# A chunk-size line ("1a2b;ext=x\r\n"); real clients send a few bytes.
MAX_CHUNK_LINE = 1024


class Status(enum.Enum):
    INCOMPLETE = "incomplete"  # read more
    COMPLETE = "complete"  # `end` bytes form one request: dispatch
    OVERSIZED = "oversized"  # announced body over the limit: dispatch the headers only
    INVALID = "invalid"  # answer `error_status` and close


@dataclass
class Verdict:
    status: Status
    end: int = 0  # with COMPLETE or OVERSIZED: where the dispatched bytes end
    error_status: int = 0
    error: str = ""


class RequestFrame:
    """Framing state of the request at the start of a connection's buffer."""

    def __init__(self, max_body: int, max_header: int = MAX_HEADER_BYTES) -> None:
        self.max_body = max_body
        self.max_header = max_header
        self.header_end: int | None = None  # index just past the blank line
        self.content_length = 0
        self.chunked = False
        self.expect_continue = False
        self._scanned = 0  # where to resume looking for the blank line
        self._chunk_pos = 0  # with chunked: start of the next chunk-size line
        self._decoded = 0  # with chunked: body bytes so far
        self._in_trailers = False

    @property
    def started(self) -> bool:
        return self._scanned > 0

    def check(self, buffer: bytes | bytearray) -> Verdict:
        if self.header_end is None:
            verdict = self._find_headers(buffer)
            if verdict is not None:
                return verdict
        assert self.header_end is not None
        if self.chunked:
            return self._check_chunked(buffer)
        end = self.header_end + self.content_length
        if len(buffer) >= end:
            return Verdict(Status.COMPLETE, end)
        return Verdict(Status.INCOMPLETE)

    def wants_continue(self, buffer: bytes | bytearray) -> bool:
        """The client waits for `100 Continue` before sending its body."""
        return (
            self.expect_continue
            and self.header_end is not None
            and len(buffer) == self.header_end
            and (self.chunked or self.content_length > 0)
        )

    # ------------------------------------------------------------------ headers

    def _find_headers(self, buffer: bytes | bytearray) -> Verdict | None:
        # Resume 3 bytes back: the blank line may straddle two reads.
        index = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
        self._scanned = len(buffer)
        if index < 0:
            if len(buffer) > self.max_header:
                return Verdict(
                    Status.INVALID,
                    error_status=431,
                    error=f"request headers exceed {self.max_header} bytes",
                )
            return Verdict(Status.INCOMPLETE)
        self.header_end = index + 4
        if self.header_end > self.max_header:
            return Verdict(
                Status.INVALID, error_status=431, error=f"request headers exceed {self.max_header} bytes"
            )
        return self._read_framing_headers(bytes(buffer[:index]))

    def _read_framing_headers(self, head: bytes) -> Verdict | None:
        lengths: set[bytes] = set()
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue  # gunicorn's parser rejects it with a proper 400
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                lengths.add(value)
            elif name == b"transfer-encoding":
                codings = [c.strip() for c in value.lower().split(b",")]
                self.chunked = codings[-1] == b"chunked"
                if not self.chunked:
                    return Verdict(
                        Status.INVALID,
                        error_status=501,
                        error="only the chunked transfer coding is supported",
                    )
            elif name == b"expect":
                self.expect_continue = value.lower() == b"100-continue"
        if self.chunked:
            # Transfer-Encoding wins over Content-Length (RFC 9112 6.3); gunicorn's
            # parser decides whether to accept the combination.
            self._chunk_pos = self.header_end or 0
            return None
        if len(lengths) > 1:
            return Verdict(Status.INVALID, error_status=400, error="conflicting Content-Length headers")
        if lengths:
            value = lengths.pop()
            if not value.isdigit() or len(value) > 18:
                return Verdict(Status.INVALID, error_status=400, error="invalid Content-Length")
            self.content_length = int(value)
            if self.content_length > self.max_body:
                # Hand the headers over without the body: the app answers 413 from the
                # announced length and the connection is closed.
                return Verdict(Status.OVERSIZED, self.header_end or 0)
        return None

    # ------------------------------------------------------------------ chunked

    def _check_chunked(self, buffer: bytes | bytearray) -> Verdict:
        while True:
            line_end = buffer.find(b"\r\n", self._chunk_pos)
            if line_end < 0:
                if len(buffer) - self._chunk_pos > MAX_CHUNK_LINE:
                    return Verdict(Status.INVALID, error_status=400, error="chunk line too long")
                return Verdict(Status.INCOMPLETE)
            if self._in_trailers:
                # Trailer fields end with an empty line.
                if line_end == self._chunk_pos:
                    return Verdict(Status.COMPLETE, line_end + 2)
                self._chunk_pos = line_end + 2
                continue
            size_text = bytes(buffer[self._chunk_pos : line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return Verdict(Status.INVALID, error_status=400, error="invalid chunk size")
            if size < 0 or len(size_text) > 16:
                return Verdict(Status.INVALID, error_status=400, error="invalid chunk size")
            if size == 0:
                self._in_trailers = True
                self._chunk_pos = line_end + 2
                continue
            if self._decoded + size > self.max_body:
                return Verdict(
                    Status.INVALID,
                    error_status=413,
                    error=f"the body exceeds {self.max_body} bytes (the API server's own request limit)",
                )
            data_end = line_end + 2 + size
            if len(buffer) < data_end + 2:
                return Verdict(Status.INCOMPLETE)
            if buffer[data_end : data_end + 2] != b"\r\n":
                return Verdict(Status.INVALID, error_status=400, error="chunk without CRLF")
            self._decoded += size
            self._chunk_pos = data_end + 2
