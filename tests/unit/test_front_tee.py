"""The front's shadow tee: piped bytes framed into requests and answers after they passed (no processes)."""

from __future__ import annotations

from sluicegate.deploy.proxy import _frame, _Tee


class _Front:
    def __init__(self):
        self.seen = []
        self.pending = 0

    def tee_pending(self):
        self.pending += 1

    def observed(self, request, status, answer, now):
        self.seen.append((request[0], request[1], request[4], status, answer, round(now - request[5], 3)))


def _req(body: bytes, path: bytes = b"/predict", extra: bytes = b"") -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n" % len(body) + extra + b"\r\n" + body


def _resp(body: bytes, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body


def test_requests_and_answers_are_paired_in_order_across_any_chunking():
    front = _Front()
    tee = _Tee(front)
    stream = _req(b'[{"x": 1}]') + _req(b'[{"x": 2}]', b"/predict_proba?debug=1")  # pipelined
    for i in range(0, len(stream), 7):  # bytes arrive in odd pieces
        tee.client_bytes(stream[i:i + 7], 1.0)
    answers = _resp(b'[{"prediction": 1}]') + _resp(b'[{"p": 0.5}]')
    tee.backend_bytes(b"HTTP/1.1 100 Continue\r\n\r\n", 1.5)  # an interim answer is skipped
    for i in range(0, len(answers), 5):
        tee.backend_bytes(answers[i:i + 5], 2.0)
    assert front.seen == [] and front.pending  # nothing framed on the request path: at the front's next pass
    tee.process()
    assert [(m, p, b, s, a) for m, p, b, s, a, _ in front.seen] == [
        (b"POST", b"/predict", b'[{"x": 1}]', 200, b'[{"prediction": 1}]'),
        (b"POST", b"/predict_proba", b'[{"x": 2}]', 200, b'[{"p": 0.5}]')]
    assert front.seen[0][5] == 1.0  # latency from the request's first bytes to its whole answer


def test_chunked_bodies_are_decoded_and_unframeable_connections_stop_being_copied():
    buf = bytearray(b"POST /predict HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4\r\n[{}]\r\n0\r\n\r\nGET")
    head, headers, body = _frame(buf, False)
    assert body == b"[{}]" and bytes(buf) == b"GET"
    assert _frame(bytearray(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil close"), True) is False
    front = _Front()
    tee = _Tee(front)
    tee.client_bytes(_req(b"[]"), 0.0)
    tee.backend_bytes(b"HTTP/1.1 200 OK\r\n\r\nno length, to the close", 0.1)
    tee.process()
    assert tee.off and front.seen == []
    tee.client_bytes(_req(b"[]"), 0.2)  # a stopped tee copies nothing more (the bytes were still piped)
    assert not tee.waiting and not tee.req
