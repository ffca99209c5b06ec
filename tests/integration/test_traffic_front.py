"""The front's shadow and canary routing against stdlib stand-in backends (no model server: seconds, not minutes)."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from sluicegate.deploy import free_port
from sluicegate.deploy.processes import stop_process_group
from sluicegate.deploy.proxy import ROUTING_FILE, STATS_FILE, start_front, write_backend


class Backend:
    """A stand-in model server: answers POST /predict with one prediction per record; records what it got."""

    def __init__(self, name: str, status: int = 200, gate: threading.Event | None = None,
                 refuse_over: int | None = None, gate_first: int | None = None, merge_ok: bool = True,
                 gate_after: int = 0):
        self.name, self.status, self.gate, self.seen = name, status, gate, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if outer.gate is not None and (gate_first is None or gate_after < len(outer.seen) <= gate_first):
                    outer.gate.wait(30)
                given = (self.headers.get("X-Sluice-Prediction-Id") or "").split(",")
                answer = [{"prediction": body[i].get("x", 1), "model_version": outer.name, "fallback": False, "error": None,
                           "prediction_id": given[i] if i < len(given) and given[i] else str(uuid.uuid4())}
                          for i in range(len(body))]
                data = json.dumps(answer).encode()
                if refuse_over is not None and len(body) > refuse_over:
                    data = b'{"error": "refused"}'
                    self.send_response(422)
                else:
                    self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if merge_ok:  # as the ONNX runtime's answers say: it scores each request as it comes
                    self.send_header("x-sluice-merge", "ok")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def front(tmp_path):
    made = {}

    def make(routing: dict, champion: Backend):
        folder = tmp_path / "deploy" / "proj"
        folder.mkdir(parents=True)
        write_backend(folder, champion.port)
        (folder / ROUTING_FILE).write_text(json.dumps({"project": "proj", "started_at": time.time(),
                                                        "cwd": str(tmp_path), **routing}))
        port = free_port()
        made["proc"] = start_front("127.0.0.1", port, folder, secrets.token_hex(8), 5)
        return f"http://127.0.0.1:{port}", folder

    yield make
    if "proc" in made:
        stop_process_group(made["proc"].pid)


def _stats(folder: Path, until, timeout_s: float = 20) -> dict:
    end = time.monotonic() + timeout_s
    while True:
        try:
            stats = json.loads((folder / STATS_FILE).read_text())
            if until(stats) or time.monotonic() > end:
                return stats
        except (OSError, ValueError):
            if time.monotonic() > end:
                raise
        time.sleep(0.1)


def _copies_in_order(answers: list, copies: list) -> None:
    """Every copy is tagged shadow, carries one champion id per record, and the copies together hold
    every answered record once, with the ids in the order the champion gave them."""
    assert all(h["x-sluice-traffic"] == "shadow" for h, _ in copies)
    assert all(len(h["x-sluice-prediction-id"].split(",")) == len(b) for h, b in copies)
    sent = sorted((ans[0]["prediction_id"], [r["prediction_id"] for r in ans]) for ans in answers)
    mirrored = [i for h, _ in copies for i in h["x-sluice-prediction-id"].split(",")]
    assert sorted(mirrored) == sorted(i for _, ids in sent for i in ids)
    for _, ids in sent:  # a request's records stay together and in order inside whatever copy holds them
        at = mirrored.index(ids[0])
        assert mirrored[at:at + len(ids)] == ids


def test_shadow_copies_off_the_request_path_with_the_champions_ids(front):
    gate = threading.Event()  # the candidate answers nothing until the clients got every answer
    champ, cand = Backend("1"), Backend("2", gate=gate)
    try:
        url, folder = front({"mode": "shadow", "share": 1.0, "candidate_port": cand.port}, champ)
        answers = []
        with httpx.Client(timeout=10) as client:  # keep-alive: request after request on one connection
            for i in range(20):
                resp = client.post(f"{url}/predict", json=[{"x": i}, {"x": i + 1}])
                assert resp.status_code == 200
                answers.append(resp.json())
        assert all(a[0]["model_version"] == "1" for a in answers)  # only the champion answers
        assert not gate.is_set()
        gate.set()
        stats = _stats(folder, lambda s: s.get("candidate", {}).get("requests", 0) >= 20)
        assert stats["champion"]["requests"] == 20
        # the first copy went alone (its latency counts); while the candidate held it, the others were
        # merged into batches (at most one more goes alone: copies made after the gate opened)
        cand_stats = stats["candidate"]
        assert (cand_stats["requests"], cand_stats["dropped"], cand_stats["errors"]) == (20, 0, 0)
        assert 18 <= cand_stats["batched"] <= 19
        assert len(cand.seen) < 20 and sum(len(b) for _, b in cand.seen) == 40
        _copies_in_order(answers, cand.seen)
        assert cand.seen[0][1] == [{"x": 0}, {"x": 1}]
        assert all("x-sluice-traffic" not in h for h, _ in champ.seen)
    finally:
        gate.set()
        champ.close()
        cand.close()


def test_a_refused_shadow_batch_is_sent_again_copy_by_copy(front):
    """One bad copy must not sink the others merged with it: a batch answered 4xx goes again one by one."""
    gate = threading.Event()
    champ = Backend("1")
    cand = Backend("2", gate=gate, refuse_over=2)  # 422 for any body of more than 2 records: every batch
    try:
        url, folder = front({"mode": "shadow", "share": 1.0, "candidate_port": cand.port}, champ)
        with httpx.Client(timeout=10) as client:
            answers = [client.post(f"{url}/predict", json=[{"x": i}, {"x": -i}]).json() for i in range(8)]
        gate.set()
        stats = _stats(folder, lambda s: s.get("candidate", {}).get("requests", 0) >= 8)
        assert (stats["candidate"]["requests"], stats["candidate"]["errors"]) == (8, 0)
        accepted = [(h, b) for h, b in cand.seen if len(b) <= 2]
        assert len(accepted) == 8
        _copies_in_order(answers, accepted)
    finally:
        gate.set()
        champ.close()
        cand.close()


def test_canary_breach_rolls_back_to_the_champion_and_answers_every_request(front):
    champ, cand = Backend("1"), Backend("2", status=500)
    try:
        limits = {"window_requests": 1000, "min_requests": 5, "max_error_rate_increase": 0.02, "max_p95_ratio": 100}
        url, folder = front({"mode": "canary", "share": 0.5, "candidate_port": cand.port, "limits": limits,
                             "check_interval_s": 0.2}, champ)
        statuses = []
        with httpx.Client(timeout=10) as client:
            for i in range(40):
                statuses.append(client.post(f"{url}/predict", json=[{"x": i}]).status_code)
            stats = _stats(folder, lambda s: s.get("breach") is not None)
            tried = len(cand.seen)
            for i in range(40):
                statuses.append(client.post(f"{url}/predict", json=[{"x": i}]).status_code)
        assert statuses == [200] * 80  # the candidate's 5xx were answered by the champion
        assert stats["share"] == 0.0 and "errors: candidate error rate 100.0%" in stats["breach"]["reason"]
        assert len(cand.seen) == tried  # nothing more went to the candidate after the breach
        assert json.loads((folder / ROUTING_FILE).read_text())["breach"]["reason"] == stats["breach"]["reason"]
        assert len(champ.seen) == 80
    finally:
        champ.close()
        cand.close()


# ---------------------------------------------------------------- plain forwarding (no rollout): piped
@pytest.fixture()
def plain_front(tmp_path):
    made = {}

    def make(champion: Backend) -> int:
        folder = tmp_path / "deploy" / "plain"
        folder.mkdir(parents=True)
        write_backend(folder, champion.port)
        port = free_port()
        made["proc"] = start_front("127.0.0.1", port, folder, secrets.token_hex(8), 5)
        return port

    yield make
    if "proc" in made:
        stop_process_group(made["proc"].pid)


def _read_response(sock, buf: bytes) -> tuple[bytes, bytes, bytes]:
    """One HTTP response (head, body) off a raw socket, and what was read past it."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        rest += chunk
    return head, rest[:length], rest[length:]


def _request(records: list) -> bytes:
    body = json.dumps(records).encode()
    return (b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % len(body)) + body


def test_piped_connection_carries_pipelined_large_and_half_closed_requests(plain_front):
    import socket

    champ = Backend("1")
    try:
        port = plain_front(champ)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(_request([{"x": 1}]) + _request([{"x": 2}, {"x": 3}]))  # two requests in one write
            head, body, rest = _read_response(sock, b"")
            assert head.startswith(b"HTTP/1.1 200") and len(json.loads(body)) == 1
            head, body, rest = _read_response(sock, rest)
            assert len(json.loads(body)) == 2
            big = [{"x": i, "pad": "p" * 20} for i in range(20_000)]  # ~0.6 MB each way: flow control engages
            sock.sendall(_request(big))
            head, body, rest = _read_response(sock, rest)
            assert len(json.loads(body)) == 20_000
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(_request([{"x": 4}]))
            sock.shutdown(socket.SHUT_WR)  # the client is done sending; the answer must still come back
            head, body, _ = _read_response(sock, b"")
            assert head.startswith(b"HTTP/1.1 200") and json.loads(body)[0]["model_version"] == "1"
        assert [len(b) for _, b in champ.seen] == [1, 2, 20_000, 1]
    finally:
        champ.close()


def _merged_load(port: int, champ: Backend, gate: threading.Event, n: int = 10,
                 meanwhile=None) -> dict[int, httpx.Response]:
    """One request answered (the front learns the backend's `x-sluice-merge: ok` from it), two the
    stand-in holds (gate_after=1, gate_first=3: the server is busy), then `n` more that must wait in the
    front; the gate opens once the front says they all wait (and `meanwhile()` returned). Every response
    but the first, by request number."""
    from sluicegate.deploy.proxy import front_identity

    answers: dict[int, httpx.Response] = {}
    with httpx.Client(timeout=10) as client:
        assert client.post(f"http://127.0.0.1:{port}/predict", json=[{"x": -1}]).status_code == 200

    def call(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            answers[i] = client.post(f"http://127.0.0.1:{port}/predict", json=[{"x": i}, {"x": 1000 + i}])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2 + n)]
    for t in threads[:2]:
        t.start()
    end = time.monotonic() + 20
    while len(champ.seen) < 3 and time.monotonic() < end:
        time.sleep(0.02)
    for t in threads[2:]:
        t.start()
    while (front_identity("127.0.0.1", port) or {}).get("merge_waiting", 0) < 2 * n and time.monotonic() < end:
        time.sleep(0.02)
    if meanwhile is not None:
        meanwhile()
    gate.set()
    for t in threads:
        t.join(30)
    return answers


def test_requests_arriving_while_the_server_is_busy_go_merged_and_each_gets_its_own_answer(plain_front):
    """The front merges scoring requests that wait for a busy model server into one; each client gets
    exactly its records' answers, in order, with a length of its own."""
    from sluicegate.deploy.proxy import front_identity

    gate = threading.Event()
    champ = Backend("1", gate=gate, gate_after=1, gate_first=3)
    big = []

    def a_big_request_goes_alone_at_once():  # 40 records pay their own way: no wait behind the busy server
        with httpx.Client(timeout=5) as client:
            big.append(client.post(f"http://127.0.0.1:{port}/predict", json=[{"x": i} for i in range(40)]))

    try:
        port = plain_front(champ)
        answers = _merged_load(port, champ, gate, meanwhile=a_big_request_goes_alone_at_once)
        assert [r["prediction"] for r in big[0].json()] == list(range(40))
        assert sorted(answers) == list(range(12))
        for i, resp in answers.items():
            assert resp.status_code == 200
            assert [r["prediction"] for r in resp.json()] == [i, 1000 + i]
            assert int(resp.headers["content-length"]) == len(resp.content)
        assert sorted(len(b) for _, b in champ.seen) == [1, 2, 2, 20, 40]  # the ten waiting ones left as one
        merged = next(h for h, b in champ.seen if len(b) == 20)
        assert "x-sluice-traffic" not in merged and merged["content-type"] == "application/json"
        who = front_identity("127.0.0.1", port)
        assert (who["merged_requests"], who["merged_sends"], who["merge_waiting"]) == (10, 1, 0)
    finally:
        gate.set()
        champ.close()


def test_a_refused_merged_request_is_sent_again_request_by_request(plain_front):
    """One bad request must not sink the others merged with it: each gets the answer it would have had alone."""
    gate = threading.Event()
    champ = Backend("1", gate=gate, gate_after=1, gate_first=3, refuse_over=2)  # 422 for bodies over 2 records
    try:
        port = plain_front(champ)
        answers = _merged_load(port, champ, gate, n=6)
        assert all(resp.status_code == 200 for resp in answers.values())
        assert all([r["prediction"] for r in resp.json()] == [i, 1000 + i] for i, resp in answers.items())
        assert sorted(len(b) for _, b in champ.seen) == [1] + [2] * 8 + [12]
    finally:
        gate.set()
        champ.close()


def test_merging_off_pipes_every_connection(tmp_path, monkeypatch):
    from sluicegate.deploy.proxy import MERGE_ENV, front_identity

    monkeypatch.setenv(MERGE_ENV, "off")
    gate = threading.Event()
    champ = Backend("1", gate=gate, gate_first=2)
    folder = tmp_path / "deploy" / "proj"
    folder.mkdir(parents=True)
    write_backend(folder, champ.port)
    port = free_port()
    proc = start_front("127.0.0.1", port, folder, secrets.token_hex(8), 5)
    try:
        end = time.monotonic() + 20
        while front_identity("127.0.0.1", port) is None and time.monotonic() < end:
            time.sleep(0.05)
        answers = {}

        def call(i: int) -> None:
            with httpx.Client(timeout=30) as client:
                answers[i] = client.post(f"http://127.0.0.1:{port}/predict", json=[{"x": i}])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        while len(champ.seen) < 3 and time.monotonic() < end:
            time.sleep(0.02)
        gate.set()
        for t in threads:
            t.join(30)
        assert [len(b) for _, b in champ.seen] == [1] * 6
        assert front_identity("127.0.0.1", port)["merging"] is False
    finally:
        gate.set()
        champ.close()
        stop_process_group(proc.pid)


def test_a_backend_that_batches_itself_gets_every_request_as_it_came(plain_front):
    """The native runtime (BentoML's adaptive batching) does not say `x-sluice-merge: ok`: nothing is merged for it."""
    from sluicegate.deploy.proxy import front_identity

    gate = threading.Event()
    champ = Backend("1", gate=gate, gate_after=1, gate_first=3, merge_ok=False)
    try:
        port = plain_front(champ)
        with httpx.Client(timeout=10) as client:  # one answer first: what the front learns a backend from
            assert client.post(f"http://127.0.0.1:{port}/predict", json=[{"x": 0}]).status_code == 200
        answers: dict[int, httpx.Response] = {}

        def call(i: int) -> None:
            with httpx.Client(timeout=30) as client:
                answers[i] = client.post(f"http://127.0.0.1:{port}/predict", json=[{"x": i}, {"x": 1000 + i}])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        end = time.monotonic() + 20
        while len(champ.seen) < 9 and time.monotonic() < end:  # all at the server while two are still held
            time.sleep(0.02)
        gate.set()
        for t in threads:
            t.join(30)
        assert [len(b) for _, b in champ.seen] == [1] + [2] * 8
        assert all([r["prediction"] for r in resp.json()] == [i, 1000 + i] for i, resp in answers.items())
        assert front_identity("127.0.0.1", port)["merged_sends"] == 0
    finally:
        gate.set()
        champ.close()
