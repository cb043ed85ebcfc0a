"""Request framing of the server's event loop: a request goes to a thread only when it
is complete, whatever pieces it arrives in."""

from __future__ import annotations

import pytest

from webhook.framing import MAX_HEADER_BYTES, RequestFrame, Status

LIMIT = 1000


def head(*headers: str, method: str = "POST") -> bytes:
    return (f"{method} /validate HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def feed(data: bytes, step: int = 1) -> tuple[list[Status], int]:
    """Feed `data` `step` bytes at a time; the statuses seen and the final end."""
    frame = RequestFrame(LIMIT)
    buffer = bytearray()
    seen = []
    verdict = None
    for start in range(0, len(data), step):
        buffer += data[start : start + step]
        verdict = frame.check(buffer)
        seen.append(verdict.status)
        if verdict.status is not Status.INCOMPLETE:
            break
    assert verdict is not None
    return seen, verdict.end


class TestContentLength:
    @pytest.mark.parametrize("step", [1, 3, 7, 1000])
    def test_complete_only_with_the_whole_body(self, step: int) -> None:
        request = head("Content-Length: 10") + b"0123456789"
        seen, end = feed(request, step)
        assert seen[-1] is Status.COMPLETE and end == len(request)
        assert all(s is Status.INCOMPLETE for s in seen[:-1])

    def test_headers_alone_are_incomplete(self) -> None:
        seen, _ = feed(head("Content-Length: 10") + b"01234", step=1000)
        assert seen == [Status.INCOMPLETE]

    def test_no_body_is_complete_at_the_blank_line(self) -> None:
        seen, end = feed(head(method="GET") + b"GET /next", step=1000)
        assert seen == [Status.COMPLETE] and end == len(head(method="GET"))

    def test_pipelined_bytes_are_not_part_of_the_request(self) -> None:
        first = head("Content-Length: 2") + b"{}"
        _, end = feed(first + head("Content-Length: 2"), step=1000)
        assert end == len(first)

    def test_announced_body_over_the_limit_dispatches_headers_only(self) -> None:
        request = head(f"Content-Length: {LIMIT + 1}")
        seen, end = feed(request + b"x" * 10, step=1000)
        assert seen == [Status.OVERSIZED] and end == len(request)

    @pytest.mark.parametrize("value", ["-1", "abc", "1e3", "99999999999999999999"])
    def test_invalid_length_is_400(self, value: str) -> None:
        verdict = RequestFrame(LIMIT).check(head(f"Content-Length: {value}"))
        assert (verdict.status, verdict.error_status) == (Status.INVALID, 400)

    def test_conflicting_lengths_are_400(self) -> None:
        verdict = RequestFrame(LIMIT).check(head("Content-Length: 1", "Content-Length: 2"))
        assert (verdict.status, verdict.error_status) == (Status.INVALID, 400)

    def test_headers_over_the_limit_are_431(self) -> None:
        verdict = RequestFrame(LIMIT).check(b"POST / HTTP/1.1\r\nX: " + b"a" * (MAX_HEADER_BYTES + 1))
        assert (verdict.status, verdict.error_status) == (Status.INVALID, 431)


class TestChunked:
    BODY = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n"

    @pytest.mark.parametrize("step", [1, 2, 5, 1000])
    def test_complete_after_the_last_chunk(self, step: int) -> None:
        request = head("Transfer-Encoding: chunked") + self.BODY
        seen, end = feed(request + b"NEXT", step)
        assert seen[-1] is Status.COMPLETE and end == len(request)

    def test_trailers_are_part_of_the_request(self) -> None:
        request = head("Transfer-Encoding: chunked") + b"1\r\nx\r\n0\r\nX-Trailer: 1\r\n\r\n"
        _, end = feed(request, step=1)
        assert end == len(request)

    def test_decoded_body_over_the_limit_is_413(self) -> None:
        request = head("Transfer-Encoding: chunked") + f"{LIMIT + 1:x}\r\n".encode()
        verdict = RequestFrame(LIMIT).check(request)
        assert (verdict.status, verdict.error_status) == (Status.INVALID, 413)

    @pytest.mark.parametrize("body", [b"zz\r\n", b"4\r\nWikiXX", b"1" * 2000])
    def test_malformed_chunks_are_400(self, body: bytes) -> None:
        verdict = RequestFrame(LIMIT).check(head("Transfer-Encoding: chunked") + body)
        assert (verdict.status, verdict.error_status) == (Status.INVALID, 400)

    def test_other_codings_are_501(self) -> None:
        verdict = RequestFrame(LIMIT).check(head("Transfer-Encoding: gzip"))
        assert (verdict.status, verdict.error_status) == (Status.INVALID, 501)


class TestExpectContinue:
    def test_wants_continue_once_the_headers_are_in(self) -> None:
        frame = RequestFrame(LIMIT)
        request = head("Content-Length: 2", "Expect: 100-continue")
        assert frame.check(request).status is Status.INCOMPLETE
        assert frame.wants_continue(request)
        assert not frame.wants_continue(request + b"{")

    def test_no_continue_without_a_body(self) -> None:
        frame = RequestFrame(LIMIT)
        request = head("Expect: 100-continue")
        assert frame.check(request).status is Status.COMPLETE
        assert not frame.wants_continue(request)
