"""The front process: owns a project's port and forwards each connection to the backend named in a file.

Runs as `python -m sluicegate.deploy.proxy HOST PORT BACKEND_FILE [DRAIN_S]` with its identity
token in `SLUICE_FRONT_TOKEN`; imports only the standard library (and uvloop and orjson when installed),
so it starts fast and never loads a model.

`GET /__sluice/front` on a new connection is answered by the front itself with its pid and
token, so the deploy code can tell its own front from any other process on the port.

On SIGTERM the front stops accepting (connections already queued in the listen backlog are
still taken) and drains: each response that starts from then on carries `connection: close`,
so keep-alive clients send nothing more; connections idle after a response are closed; the
rest may finish for at most DRAIN_S seconds. Then it exits, and only then is the backend
stopped (see `local.stop_local`). The one race left is HTTP's own: a keep-alive client that
sends its next request on an idle connection just as it is closed gets no answer (nor was the
request taken).

Merging (no rollout on; `SLUICE_FRONT_MERGE=off` turns it off and pipes every connection as it comes).
Each connection is read request by request (HTTP/1.1 with a Content-Length; anything else, e.g. a
chunked upload, HTTP/1.0 or an upgrade, makes the front pipe the rest of that connection as it
comes) and each request goes to the backend over a shared pool of keep-alive connections. While
fewer than MERGE_BUSY_AT requests are at the model server, a request goes alone at once: a lone
client's latency is the model server's. Beyond that, small scoring requests (POST /predict or
/predict_proba, a JSON list of at most MERGE_SMALL_RECORDS records, only ordinary headers) wait
and leave as one request per (path, Authorization) as soon as the server has room (or when
MERGE_MAX_RECORDS records wait); each client then gets its own records' part of the answer, in
order (prediction ids included), with the merged answer's headers and its own length. A merged
request the server refuses, fails or answers in a form the front cannot split is sent again
request by request, so each client gets the answer it would have had alone. On a busy server this
turns many one-row requests into a few many-row ones: the model server's per-request cost (HTTP,
validation, the log's write) is paid once per merged request. Bigger requests go alone (they pay
their own way, and the native runtime's adaptive batching does better with them in flight). The
prediction log still holds one row per record. `GET /__sluice/front` reports the merged counts.

Shadow and canary rollouts. While ROUTING_FILE (`routing.json`, beside BACKEND_FILE, written by
`sluicegate.deploy.traffic`) names a `canary` rollout, new connections are handled request by
request (HTTP/1.1, keep-alive, Content-Length or chunked bodies) instead of piped; during a
`shadow` rollout they are still piped, and a copy of their bytes is framed into requests and
answers only after each was passed on (`_Tee`):

- canary: each live scoring request (POST /predict or /predict_proba without another traffic
  tag) goes to the candidate with probability `share` (sticky per `X-Sluice-Client` header when
  the client sends one), else to the champion. A candidate that gives no answer, a 5xx, or an
  answer with a record it could not score is counted as an error and the request is answered by
  the champion, so a canary never costs a user an answer (its fallback answers are passed on,
  and counted as errors too).
- shadow: the champion answers; then, off the request path, a copy of `share` of the live
  scoring requests goes to the candidate with `X-Sluice-Traffic: shadow` and the champion's
  prediction ids (`X-Sluice-Prediction-Id`), so both rows of the prediction log share an id.
  While the candidate is idle a copy goes alone (at most every SHADOW_SINGLE_EVERY_S: these give
  the candidate's latency); the others are merged into one request of up to SHADOW_BATCH_RECORDS
  records (ids in the same order), sent SHADOW_LINGER_S after its first copy or when full, so a
  candidate on the same CPUs scores a busy champion's traffic for a fraction of its cost. A batch
  the candidate refuses (4xx) is sent again copy by copy. At most MAX_SHADOW_INFLIGHT exchanges
  are in flight and SHADOW_MAX_PENDING records wait; beyond that copies are dropped (counted).

Per side it counts requests, errors (no answer, 5xx, or an answer holding an `error` or a
`fallback` record) and latency, writes them to STATS_FILE every second, and for a canary
evaluates `sluicegate.rollout.decide_canary` on them every `check_interval_s`: on a breach it
sends nothing more to the candidate at once (share 0, recorded in the routing file), then starts
`sluice rollout check PROJECT`, which stops the candidate, emits `canary.breached` and records
it in the audit trail. Promotion is never decided here (it needs the labelled log and the
registry): `sluice rollout check` does that.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from sluicegate.deploy.processes import BACKEND_FILE, ROUTING_FILE, STATS_FILE, stop_process_group, tail_log
from sluicegate.errors import DeployError
from sluicegate.rollout import BREACH, CanaryLimits, SideStats, decide_canary, percentile

try:  # the front stays standard-library only; orjson (a dependency of Prefect) splits merged answers faster
    from orjson import dumps as _dumps
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    _loads = json.loads

IDENTITY_PATH = "/__sluice/front"
TOKEN_ENV = "SLUICE_FRONT_TOKEN"
DEFAULT_DRAIN_S = 30.0
BACKEND_RECHECK_S = 0.01  # a new backend port takes at most this long to be seen
IDLE_AFTER_RESPONSE_S = 0.5  # a connection quiet this long after the backend last spoke is between requests
SCORING_PATHS = (b"/predict", b"/predict_proba")
PREDICTION_ID_HEADER = b"x-sluice-prediction-id"
TRAFFIC_HEADER = b"x-sluice-traffic"
CLIENT_HEADER = b"x-sluice-client"
MAX_SHADOW_INFLIGHT = 16  # shadow exchanges in flight at once (a single copy or a batch each)
SHADOW_BATCH_RECORDS = 100  # records per mirrored batch at most
SHADOW_BATCH_BYTES = 256 * 1024  # and bytes
SHADOW_LINGER_S = 0.05  # a batch leaves this long after its first copy, or sooner when full
SHADOW_MAX_PENDING = 5_000  # records waiting for a batch; beyond, copies are dropped (counted)
SHADOW_SINGLE_EVERY_S = 0.1  # a copy goes alone (its latency comparable to the champion's) this often
TEE_MAX_BYTES = 2 ** 21  # a request or answer larger than this is not mirrored (the connection stops teeing)
SHADOW_TIMEOUT_S = 30.0
UPSTREAM_TIMEOUT_S = 300.0
LATENCY_SAMPLES = 10_000
MERGE_ENV = "SLUICE_FRONT_MERGE"  # "off": no merging, every connection piped as it came (see the module docstring)
MERGE_BUSY_AT = 2  # scoring requests at the model server at once beyond which new ones wait to be merged
MERGE_MAX_RECORDS = 256  # records per merged request at most
MERGE_SMALL_RECORDS = 32  # only requests of at most this many records are merged (a bigger one pays its own way)
MERGE_MAX_BYTES = 256 * 1024  # and bytes
MERGE_OK_HEADER = b"x-sluice-merge"  # on a backend's answers: it scores requests as they come, merging helps it
MERGE_HEADERS = frozenset({b"host", b"content-type", b"content-length", b"accept", b"accept-encoding",
                           b"user-agent", b"authorization", b"connection", CLIENT_HEADER})  # nothing else is lost
MAX_HEAD_BYTES = 64 * 1024
_PREDICTION_ID = re.compile(rb'"prediction_id"\s*:\s*"([^"]+)"')
_RECORD_FAILED = re.compile(rb'"error"\s*:\s*"|"fallback"\s*:\s*true')
_RECORD_ERROR = re.compile(rb'"error"\s*:\s*"')
NO_BACKEND = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
              b"content-length: 33\r\nconnection: close\r\n\r\n{\"error\": \"no backend available\"}")


class _Conn:
    """One client connection: whether a request waits for its response, who spoke last, and when."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.upstream: asyncio.StreamWriter | None = None
        self.awaiting = False  # the client sent bytes the backend has not started answering
        self.last_from = "client"
        self.last_at = time.monotonic()

    def idle(self, now: float) -> bool:
        """Between requests: the last response has been sent and nothing moved for a moment."""
        return not self.awaiting and self.last_from == "backend" and now - self.last_at > IDLE_AFTER_RESPONSE_S

    def close(self) -> None:
        for w in (self.writer, self.upstream):
            if w is not None:
                try:
                    w.close()
                except Exception:
                    pass


def _close_after(head: bytes) -> bytes:
    """Add `connection: close` to a response head, so a keep-alive client sends no further request here."""
    end = head.find(b"\r\n")
    if not head.startswith(b"HTTP/1.") or end < 0 or head.startswith(b"HTTP/1.1 1"):
        return head
    return head[:end + 2] + b"connection: close\r\n" + head[end + 2:]


class _Meter:
    """One side's counters since the rollout began: requests, errors, recent latencies."""

    def __init__(self) -> None:
        self.requests = self.errors = self.failed = self.dropped = self.batched = 0
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}

    def add(self, latency_ms: float | None, error: bool, status: int | None = None) -> None:
        self.requests += 1
        self.errors += int(error)
        key = str(status) if status is not None else "no answer"
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if latency_ms is None:
            self.failed += 1
        else:
            self.latencies.append(latency_ms)
            if len(self.latencies) > 2 * LATENCY_SAMPLES:
                del self.latencies[:LATENCY_SAMPLES]

    def add_batch(self, n: int, errors: int, status: int | None) -> None:
        """`n` requests answered together (a shadow batch): counted, without a latency of their own."""
        self.requests += n
        self.batched += n
        self.errors += min(n, errors)
        key = str(status) if status is not None else "no answer"
        self.statuses[key] = self.statuses.get(key, 0) + n
        if status is None:
            self.failed += n

    def snapshot(self) -> dict[str, Any]:
        recent = self.latencies[-LATENCY_SAMPLES:]
        return {"requests": self.requests, "errors": self.errors, "no_answer": self.failed, "dropped": self.dropped,
                "batched": self.batched,
                "statuses": dict(self.statuses),
                "p50_ms": percentile(recent, 50), "p95_ms": percentile(recent, 95)}


def _headers(head: bytes) -> dict[bytes, bytes]:
    """Header names (lower case) -> values of a request or response head (the last of repeated ones)."""
    out: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _value(low_head: bytes, key: bytes) -> bytes | None:
    """The value of a header in a lower-cased head (lower case too), or None: one search, no parse.
    `key` is b"\r\n" + the header's name + b":" (the module's _CL, _CONN)."""
    at = low_head.find(key)
    if at < 0:
        return None
    start = at + len(key)
    return low_head[start:low_head.find(b"\r\n", start)].strip()


_CL, _CONN, _MERGE_OK = b"\r\ncontent-length:", b"\r\nconnection:", b"\r\n" + MERGE_OK_HEADER + b":"


def _rewrite(head: bytes, drop: tuple[bytes, ...], add: list[tuple[bytes, bytes]]) -> bytes:
    """A head without the headers named in `drop` (lower case) and with `add` appended."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.partition(b":")[0].strip().lower() not in drop]
    return b"\r\n".join(kept + [k + b": " + v for k, v in add]) + b"\r\n\r\n"


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes], response: bool) -> tuple[bytes, bool]:
    """The raw body (chunked framing kept) and whether it ran to the end of the connection."""
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        parts = []
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("connection closed inside a chunked body")
            parts.append(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readline()
                    parts.append(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        return b"".join(parts), False
            parts.append(await reader.readexactly(size + 2))
    if b"content-length" in headers:
        return await reader.readexactly(int(headers[b"content-length"])), False
    if response:
        return await reader.read(), True
    return b"", False


def _dechunk(buf: bytearray, pos: int) -> tuple[int, bytes] | None:
    """(end, decoded body) of a chunked body starting at `pos`, or None while it is incomplete."""
    parts = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailers, then the empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return pos + 2, b"".join(parts)
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos:pos + size]))
        pos += size + 2


def _frame(buf: bytearray, response: bool, head_request: bool = False) -> tuple[bytes, dict, bytes] | None | bool:
    """Take one whole request or answer off the front of `buf`: (head, headers, decoded body);
    None while it is incomplete; False when it cannot be framed (a body that runs to the close)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end + 4])
    headers = _headers(head)
    start = end + 4
    no_body = False
    if response:
        status = int(head.split(b" ", 2)[1])
        no_body = head_request or status in (204, 304) or 100 <= status < 200
    if no_body:
        stop, body = start, b""
    elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        got = _dechunk(buf, start)
        if got is None:
            return None
        stop, body = got
    elif b"content-length" in headers:
        stop = start + int(headers[b"content-length"])
        if len(buf) < stop:
            return None
        body = bytes(buf[start:stop])
    elif response:
        return False
    else:
        stop, body = start, b""
    del buf[:stop]
    return head, headers, body


def _time_at(marks: deque, offset: int) -> float:
    """The arrival time of the chunk holding byte `offset` of a stream (marks: (first offset, time) per chunk,
    oldest first; earlier chunks are dropped: offsets asked for only grow)."""
    while len(marks) > 1 and marks[1][0] <= offset:
        marks.popleft()
    return marks[0][1]


class _Tee:
    """A shadow rollout's copy of one piped connection. On the request path it only keeps the bytes and
    when each chunk came; `process` (run by the front every SHADOW_LINGER_S for all connections at
    once) frames them into requests and answers, pairs them in order and hands them to
    `Front.observed`, so the framing costs no request its turn: a request that arrives during a pass
    waits for it (the tail of the latency), the others never see it. A connection whose bytes cannot
    be framed stops being copied; it is still piped as before."""

    def __init__(self, front: "Front"):
        self.front = front
        self.req = bytearray()
        self.resp = bytearray()
        self.req_at = self.resp_at = 0  # the stream offsets of req[0] and resp[0]
        self.req_marks: deque = deque()  # (stream offset of a chunk's first byte, when it came)
        self.resp_marks: deque = deque()
        self.waiting: deque = deque()  # (method, path, headers, head, body, started) not answered yet
        self.off = False
        self.closed = False

    def client_bytes(self, data: bytes, now: float) -> None:
        self._keep(self.req, self.req_marks, self.req_at, data, now)

    def backend_bytes(self, data: bytes, now: float) -> None:
        self._keep(self.resp, self.resp_marks, self.resp_at, data, now)

    def _keep(self, buf: bytearray, marks: deque, at: int, data: bytes, now: float) -> None:
        if self.off:
            return
        marks.append((at + len(buf), now))  # the stream offset of this chunk's first byte
        buf += data
        self.front.tee_pending()

    def process(self) -> None:
        """Frame what came since the last pass; hand each answered request on."""
        if self.off:
            return
        try:
            while self.req:
                size = len(self.req)
                got = _frame(self.req, False)
                if not got:
                    break
                head, headers, body = got  # type: ignore[misc]
                method, target = head.split(b" ", 2)[:2]
                started = _time_at(self.req_marks, self.req_at)
                self.req_at += size - len(self.req)
                self.waiting.append((method, target.split(b"?")[0], headers, head, body, started))
            while self.resp:
                size = len(self.resp)
                got = _frame(self.resp, True, bool(self.waiting) and self.waiting[0][0] == b"HEAD")
                if got is None:
                    break
                if got is False:
                    self.stop()
                    return
                head, _, body = got  # type: ignore[misc]
                self.resp_at += size - len(self.resp)
                ended = _time_at(self.resp_marks, self.resp_at - 1)
                status = int(head.split(b" ", 2)[1])
                if 100 <= status < 200:
                    continue
                if not self.waiting:  # an answer to nothing we saw: stop guessing
                    self.stop()
                    return
                self.front.observed(self.waiting.popleft(), status, body, ended)
        except (ValueError, IndexError):
            self.stop()
            return
        if len(self.req) > TEE_MAX_BYTES or len(self.resp) > TEE_MAX_BYTES or len(self.waiting) > 1024:
            self.stop()

    def stop(self) -> None:
        self.off = True
        self.req.clear()
        self.resp.clear()
        self.waiting.clear()
        self.req_marks.clear()
        self.resp_marks.clear()


class _Batch:
    """Requests waiting to go as one: shadow copies for the candidate (`_Shadow`), or scoring requests
    for the model server (`_Merger`)."""

    def __init__(self, head: bytes):
        self.head = head  # the copies' request head; the Host of merged requests
        self.parts: list[tuple[bytes, Any, int]] = []  # (records without brackets, their ids or request, records)
        self.records = self.bytes = 0

    def add(self, inner: bytes, ids: Any, n: int) -> None:
        self.parts.append((inner, ids, n))
        self.records += n
        self.bytes += len(inner) + 1

    def full(self) -> bool:
        return self.records >= SHADOW_BATCH_RECORDS or self.bytes >= SHADOW_BATCH_BYTES


class _Shadow:
    """Sends shadow copies to the candidate: alone while it is idle, else merged in batches (see the
    module docstring), never on a request's path, never failing anything but themselves."""

    def __init__(self, front: "Front", port: int):
        self.front, self.port = front, port
        self.pool = _Upstream(port)
        self.inflight = 0
        self.batches: dict[tuple, _Batch] = {}
        self.pending = 0  # records in batches not sent yet
        self.last_single = 0.0

    def meter(self) -> _Meter:
        return self.front.meters.setdefault("candidate", _Meter())

    def drop(self) -> None:
        self.meter().dropped += 1
        self.front.dirty = True

    def add(self, path: bytes, head: bytes, headers: dict[bytes, bytes], body: bytes, answer: bytes) -> None:
        ids = _PREDICTION_ID.findall(answer)
        now = time.monotonic()
        if self.inflight == 0 and not self.batches and now - self.last_single >= SHADOW_SINGLE_EVERY_S:
            self.last_single = now
            self.send(head, body, ids, [], timed=True)
            return
        try:
            records = json.loads(body)
        except ValueError:
            records = None
        n = len(records) if isinstance(records, list) else 0
        if n == 0 or (ids and len(ids) != n) or len(body) >= SHADOW_BATCH_BYTES:  # cannot be merged
            if self.inflight >= MAX_SHADOW_INFLIGHT:
                self.drop()
            else:
                self.send(head, body, ids, [], timed=True)
            return
        key = (path, headers.get(b"authorization"), bool(ids))
        batch = self.batches.get(key)
        if self.pending + n > SHADOW_MAX_PENDING or (batch is not None and batch.full()):
            self.drop()  # the candidate is this far behind
            return
        if batch is None:
            batch = self.batches[key] = _Batch(head)
            asyncio.get_running_loop().call_later(SHADOW_LINGER_S, self.flush, key, batch)
        inner = body.strip()[1:-1].strip()
        batch.add(inner, ids, n)
        self.pending += n
        if batch.full():
            self.flush(key, batch)

    def flush(self, key: tuple, batch: _Batch) -> None:
        if self.batches.get(key) is not batch:
            return  # sent already (it filled up before its timer)
        if self.inflight >= MAX_SHADOW_INFLIGHT:
            asyncio.get_running_loop().call_later(SHADOW_LINGER_S, self.flush, key, batch)
            return
        del self.batches[key]
        self.pending -= batch.records
        body = b"[" + b",".join(inner for inner, _, _ in batch.parts) + b"]"
        ids = [i for _, part_ids, _ in batch.parts for i in part_ids]
        self.send(batch.head, body, ids, batch.parts, timed=False)

    def send(self, head: bytes, body: bytes, ids: list[bytes], parts: list, timed: bool) -> None:
        self.inflight += 1
        asyncio.ensure_future(self.exchange(head, body, ids, parts, timed))

    async def _exchange(self, head: bytes, body: bytes, ids: list[bytes]) -> tuple[int, bytes, bytes] | None:
        add = [(b"X-Sluice-Traffic", b"shadow"), (b"content-length", b"%d" % len(body))]
        if ids:
            add.append((b"X-Sluice-Prediction-Id", b",".join(ids)))
        copy = _rewrite(head, (TRAFFIC_HEADER, PREDICTION_ID_HEADER, b"connection", b"content-length",
                               b"transfer-encoding", b"expect"), add)
        return await self.pool.exchange(copy, body, SHADOW_TIMEOUT_S)

    def _count_batch(self, n: int, got: tuple[int, bytes, bytes] | None) -> None:
        if got is None:
            self.meter().add_batch(n, n, None)
        else:
            self.meter().add_batch(n, n if got[0] >= 500 else len(_RECORD_FAILED.findall(got[2])), got[0])
        self.front.dirty = True

    async def exchange(self, head: bytes, body: bytes, ids: list[bytes], parts: list, timed: bool) -> None:
        try:
            start = time.perf_counter()
            got = await self._exchange(head, body, ids)
            if timed:
                self.front._count("candidate", got, (time.perf_counter() - start) * 1000)
            elif got is not None and 400 <= got[0] < 500 and len(parts) > 1:
                # one copy the candidate refused sinks its batch: send them again one by one
                for inner, part_ids, _ in parts:
                    self._count_batch(1, await self._exchange(head, b"[" + inner + b"]", part_ids))
            else:
                self._count_batch(len(parts), got)
        except Exception:  # a shadow never fails anything but itself
            self.front._count("candidate", None, 0.0)
        finally:
            self.inflight -= 1


class _Upstream:
    """Keep-alive connections to one backend port, reused request after request."""

    def __init__(self, port: int):
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def exchange(self, head: bytes, body: bytes, timeout_s: float) -> tuple[int, bytes, bytes] | None:
        """Send one request; (status, response head, response body), or None when no answer came."""
        for attempt in range(2):  # a reused connection the backend closed meanwhile is retried once, fresh
            reused = bool(self.idle) and attempt == 0
            if attempt:
                self.close()  # the backend closed one idle connection: the others are as old
            try:
                if reused:
                    reader, writer = self.idle.pop()
                else:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=2 ** 20)
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                writer.write(head + body)
                await writer.drain()
                async with asyncio.timeout(timeout_s):  # no task per wait, as wait_for makes in 3.11
                    resp_head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                if reused and attempt == 0:
                    continue
                return None
            try:
                status = int(resp_head.split(b" ", 2)[1])
                headers = _headers(resp_head)
                async with asyncio.timeout(timeout_s):
                    resp_body, to_eof = await _read_body(reader, headers, True)
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                writer.close()
                return None
            if to_eof or headers.get(b"connection", b"").lower() == b"close":
                writer.close()
            else:
                self.idle.append((reader, writer))
            return status, resp_head, resp_body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def _status(head: bytes) -> int:
    """The status code of a response head (0 when it has none the front can read: passed on as it is)."""
    try:
        return int(head.split(b" ", 2)[1])
    except (ValueError, IndexError):
        return 0


class _Link(asyncio.Protocol):
    """One keep-alive connection of a `_Pool`: one request at a time; its whole answer, framed, goes to a callback
    as (status, response head, raw response bytes, decoded body, lower-cased head), or None when none came."""

    def __init__(self, pool: "_Pool"):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.done: Any = None  # the callback of the request in flight
        self.request = b""
        self.head_request = self.reused = self.heard = self.to_eof = False
        self.need = self.head_len = 0  # the answer's bytes in all and its head's, once its head said (Content-Length)
        self.low = b""  # its head, lower-cased

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)

    def send(self, data: bytes, head_request: bool, done: Any, reused: bool) -> None:
        self.done, self.request, self.head_request, self.reused, self.heard = done, data, head_request, reused, False
        self.need = 0
        self.buf.clear()
        self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.heard = True
        self.buf += data
        if self.done is None or self.to_eof or len(self.buf) < self.need:
            return
        if not self.need:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            low = bytes(self.buf[:end + 2]).lower()
            length, status = _value(low, _CL), low[9:12]
            if length is not None and length.isdigit() and not self.head_request \
                    and b"\r\ntransfer-encoding:" not in low and status not in (b"204", b"304") \
                    and not status.startswith(b"1"):
                self.need, self.head_len, self.low = end + 4 + int(length), end + 4, low
                if len(self.buf) < self.need:
                    return
        if self.need:  # the usual answer: a Content-Length, all of it here
            if len(self.buf) == self.need:
                raw = bytes(self.buf)
                self.buf.clear()
            else:
                raw = bytes(self.buf[:self.need])
                del self.buf[:self.need]
            head, low, body = raw[:self.head_len], self.low, raw[self.head_len:]
        else:  # chunked, no body, or no length
            raw = bytes(self.buf)
            try:
                got = _frame(self.buf, True, self.head_request)
            except (ValueError, IndexError):
                got = False
            if got is None:
                return
            if got is False:  # an answer without a length: it runs to the close
                self.buf[:] = raw
                self.to_eof = True
                return
            head, _, body = got
            low = head.lower()
            raw = raw[:len(raw) - len(self.buf)]
        done, self.done = self.done, None
        if not self.pool.merge and _MERGE_OK in low:
            self.pool.merge = True  # the backend says merging helps it (MERGE_OK_HEADER)
        if _value(low, _CONN) == b"close" or self.buf:
            self.transport.close()  # type: ignore[union-attr]
        else:
            self.pool.release(self)
        done((_status(head), head, raw, body, low))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        done, self.done = self.done, None
        if done is None:
            return
        if self.to_eof:
            raw = bytes(self.buf)
            head = raw[:raw.find(b"\r\n\r\n") + 4]
            done((_status(head), head, raw, raw[len(head):], head.lower()))
        elif self.reused and not self.heard:  # the server closed this idle connection as the request left: again, fresh
            self.pool.send(self.request, self.head_request, done, fresh=True)
        else:
            done(None)


class _Pool:
    """Keep-alive connections to one backend port, shared by every framed client connection (see `_Client`)."""

    def __init__(self, port: int):
        self.port = port
        self.idle: list[_Link] = []
        self.retired = False
        self.merge = False  # the backend said it scores each request as it comes (MERGE_OK_HEADER): merge for it
        self.opened = 0  # connections opened to it in all

    def send(self, data: bytes, head_request: bool, done: Any, fresh: bool = False) -> None:
        while self.idle and not fresh:
            link = self.idle.pop()
            if not link.transport.is_closing():  # type: ignore[union-attr]
                link.send(data, head_request, done, reused=True)
                return
        asyncio.ensure_future(self._open(data, head_request, done))

    async def _open(self, data: bytes, head_request: bool, done: Any) -> None:
        self.opened += 1
        try:
            _, link = await asyncio.get_running_loop().create_connection(lambda: _Link(self), "127.0.0.1", self.port)
        except OSError:
            done(None)
            return
        link.send(data, head_request, done, reused=False)  # type: ignore[attr-defined]

    def release(self, link: _Link) -> None:
        if self.retired:
            link.transport.close()  # type: ignore[union-attr]
        else:
            self.idle.append(link)

    def forget(self, link: _Link) -> None:
        if link in self.idle:
            self.idle.remove(link)

    def retire(self) -> None:
        """The front moved to another backend: close the idle connections, and the others once they answered."""
        self.retired = True
        for link in self.idle:
            link.transport.close()  # type: ignore[union-attr]
        self.idle.clear()


class _Merger:
    """Scoring requests that arrive while the model server is busy wait here and leave merged, one request per
    (path, authorization), as soon as the server has room (see the module docstring)."""

    def __init__(self, front: "Front"):
        self.front = front
        self.waiting: dict[tuple, _Batch] = {}
        self.requests = self.merged = 0  # requests answered from merged ones; merged requests sent

    def take(self, client: "_Client", data: bytes, body_at: int) -> bool:
        """Queue a request (`data`, its body from `body_at`) to be merged: True; False when it should go alone, now."""
        front = self.front
        if (front.inflight < MERGE_BUSY_AT and not self.waiting) or front.current is None or not front.current.merge:
            return False
        head, body = data[:body_at], data[body_at:]
        headers = _headers(head)
        if not head.startswith(b"POST ") or not head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.1") \
                or head.split(b" ", 2)[1].split(b"?")[0] not in SCORING_PATHS \
                or not set(headers) <= MERGE_HEADERS or headers.get(b"connection", b"").lower() == b"close" \
                or not headers.get(b"content-type", b"").lower().startswith(b"application/json") \
                or len(body) >= MERGE_MAX_BYTES:
            return False
        try:
            records = _loads(body)
        except (ValueError, RecursionError):  # not JSON, NaN, nested past orjson's limit: alone, the server says why
            return False
        if not isinstance(records, list) or not records or len(records) > MERGE_SMALL_RECORDS \
                or not isinstance(records[0], dict):
            return False
        key = (head.split(b" ", 2)[1], headers.get(b"authorization"))
        batch = self.waiting.get(key)
        if batch is not None and (batch.records + len(records) > MERGE_MAX_RECORDS
                                  or batch.bytes + len(body) > MERGE_MAX_BYTES):
            del self.waiting[key]
            self.send(key, batch)  # full: it goes now, the server's room or not
            batch = None
        if batch is None:
            batch = self.waiting[key] = _Batch(headers.get(b"host", b"127.0.0.1"))
        batch.add(body.strip()[1:-1].strip(), (client, data), len(records))
        self.kick()
        return True

    def kick(self) -> None:
        """Send what waits while the server has room."""
        while self.waiting and self.front.inflight < MERGE_BUSY_AT:
            key = next(iter(self.waiting))
            self.send(key, self.waiting.pop(key))

    def send(self, key: tuple, batch: _Batch) -> None:
        if len(batch.parts) == 1:  # alone after all
            client, data = batch.parts[0][1]
            self.front.send_one(client, data, False)
            return
        path, auth = key
        body = b"[" + b",".join(inner for inner, _, _ in batch.parts) + b"]"
        head = b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
            path, batch.head, len(body))
        if auth is not None:
            head += b"authorization: " + auth + b"\r\n"
        self.front.inflight += 1
        self.merged += 1
        self.front.exchange(head + b"\r\n" + body, False, lambda got: self.answered(batch, got))

    def answered(self, batch: _Batch, got: tuple | None) -> None:
        front = self.front
        front.inflight -= 1
        outputs = None
        if got is not None and got[0] == 200 and b"\r\ncontent-encoding:" not in got[4]:
            try:
                outputs = _loads(got[3])
            except (ValueError, RecursionError):
                outputs = None
        if not isinstance(outputs, list) or len(outputs) != batch.records:
            # refused (one bad record sinks the whole), failed or not understood: each request again, alone
            for _, (client, data), _ in batch.parts:
                front.send_one(client, data, False)
        else:
            self.requests += len(batch.parts)
            head, at = _rewrite(got[1], (b"content-length", b"connection", b"transfer-encoding"), []), 0  # type: ignore[index]
            head = head[:-2]
            for _, (client, _), n in batch.parts:
                piece = _dumps(outputs[at:at + n])
                at += n
                client.respond(head + b"content-length: %d\r\n\r\n" % len(piece) + piece, False)
        self.kick()


class _Client(asyncio.Protocol):
    """One client connection. Its first line decides: the front's identity, request-by-request routing
    (a rollout is on: handed to `Front.routed` as streams), or piping. Piped bytes go from one transport
    to the other in the protocol callbacks, with no stream reader or task per chunk in between (each
    request crosses the front twice; at c=32 on 2 cores the front's CPU is the backend's lost CPU).
    """

    def __init__(self, front: "Front"):
        self.front = front
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: asyncio.Transport | None = None  # the backend connection, once open
        self.piping = False  # the first line said: pipe to the backend
        self.conn: _Conn | None = None
        self.tee: _Tee | None = None  # a shadow rollout: a copy of the bytes, framed after they passed
        self.first_at = 0.0
        self.framed = False  # no rollout: request by request through the front's pool, merged when busy
        self.busy = False  # a framed request waits for its answer
        self.eof = self.closing = False  # the client half-closed; it asked for `connection: close`

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)
        self.conn = _Conn(transport)  # type: ignore[arg-type]
        self.front.conns[self] = self.conn

    def data_received(self, data: bytes) -> None:
        if self.framed:
            self.buf += data
            if not self.busy:
                self.pump()
            return
        conn = self.conn
        if self.peer is not None:
            now = time.monotonic()
            conn.awaiting, conn.last_from, conn.last_at = True, "client", now  # type: ignore[union-attr]
            self.peer.write(data)
            if self.tee is not None:
                self.tee.client_bytes(data, now)
            return
        if not self.buf:
            self.first_at = time.monotonic()
        self.buf += data
        if self.piping:  # the backend connection is being opened (reading is paused meanwhile)
            return
        end = self.buf.find(b"\n")  # the request line: HTTP clients speak first
        if end < 0:
            if len(self.buf) > 2 ** 20:
                self.transport.close()  # type: ignore[union-attr]
            return
        self.decide(bytes(self.buf[:end + 1]))

    def decide(self, first: bytes) -> None:
        front, transport = self.front, self.transport
        if first.split(b" ")[:2] == [b"GET", IDENTITY_PATH.encode()]:
            transport.write(front.identity())  # type: ignore[union-attr]
            transport.close()  # type: ignore[union-attr]
            return
        routing = front.routing()
        if routing is not None and routing["mode"] == "shadow":
            self.tee = _Tee(front)  # piped, and copied
            front.tees.add(self.tee)
        elif routing is not None:  # a canary: request by request, on streams
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=2 ** 20, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport.set_protocol(protocol)  # type: ignore[union-attr]
            protocol.connection_made(transport)  # type: ignore[arg-type]
            rest = bytes(self.buf[len(first):])
            self.buf.clear()
            if rest:
                reader.feed_data(rest)
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)  # type: ignore[arg-type]
            front.start_routed(first, reader, writer, self.conn, self)  # type: ignore[arg-type]
            return
        if front.merging and self.tee is None:
            self.framed = True
            self.pump()
            return
        self.piping = True
        transport.pause_reading()  # type: ignore[union-attr]
        asyncio.ensure_future(self.connect())

    def pump(self) -> None:
        """Frame the connection's next request and send it: merged with others while the model server is
        busy, else alone. One request at a time: the next is read once this one is answered."""
        while self.framed and not self.busy and self.buf:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD_BYTES:
                    self.unframe()
                return
            low = bytes(self.buf[:end + 2]).lower()  # the head, for a few searches (no parse on this path)
            if not low[:low.find(b"\r\n")].endswith(b"http/1.1") or b"\r\ntransfer-encoding:" in low \
                    or b"\r\nexpect:" in low or b"\r\nupgrade:" in low:
                self.unframe()  # HTTP/1.0, chunked uploads, 100-continue, upgrades: piped as they come
                return
            try:
                stop = end + 4 + int(_value(low, _CL) or b"0")
            except ValueError:
                self.unframe()
                return
            if len(self.buf) < stop:
                return
            if len(self.buf) == stop:
                data = bytes(self.buf)
                self.buf.clear()
            else:
                data = bytes(self.buf[:stop])
                del self.buf[:stop]
            self.busy = True
            self.closing = _value(low, _CONN) == b"close"
            conn = self.conn
            conn.awaiting, conn.last_from, conn.last_at = True, "client", time.monotonic()  # type: ignore[union-attr]
            if not self.front.merger.take(self, data, end + 4):
                self.front.send_one(self, data, low.startswith(b"head "))

    def unframe(self) -> None:
        """Pipe the rest of this connection as it comes (a request the front does not frame)."""
        self.framed = False
        self.piping = True
        self.transport.pause_reading()  # type: ignore[union-attr]
        asyncio.ensure_future(self.connect())

    def respond(self, data: bytes, close: bool) -> None:
        """A framed request's whole answer; then the connection's next request."""
        self.busy = False
        transport = self.transport
        if transport.is_closing():  # type: ignore[union-attr]
            return
        if self.front.draining:
            data, close = _close_after(data), True
        transport.write(data)  # type: ignore[union-attr]
        conn = self.conn
        conn.awaiting, conn.last_from, conn.last_at = False, "backend", time.monotonic()  # type: ignore[union-attr]
        if close or self.closing or (self.eof and not self.buf):
            transport.close()  # type: ignore[union-attr]
        elif self.buf:
            self.pump()

    async def connect(self) -> None:
        try:
            peer, _ = await asyncio.get_running_loop().create_connection(
                lambda: _Backend(self), "127.0.0.1", self.front.backend())
        except (OSError, ValueError):
            self.transport.write(NO_BACKEND)  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
            return
        if self.transport.is_closing():  # type: ignore[union-attr]
            peer.close()
            return
        self.peer = peer  # type: ignore[assignment]
        self.conn.upstream = peer  # type: ignore[union-attr,assignment]
        self.conn.awaiting = True  # type: ignore[union-attr]
        peer.write(bytes(self.buf))
        if self.tee is not None:
            self.tee.client_bytes(bytes(self.buf), self.first_at)
        self.buf.clear()
        self.transport.resume_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self.framed:
            self.eof = True
            return self.busy  # open until the answer on its way is written
        if self.peer is not None and self.peer.can_write_eof():  # half-close: the answer may still come back
            self.peer.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.conns.pop(self, None)
        if self.peer is not None:
            self.peer.close()  # sends what is buffered, then closes
        if self.tee is not None:  # what it copied is still framed at the next pass, then it is dropped
            self.tee.closed = True
            self.front.tee_pending()

    def pause_writing(self) -> None:  # the client reads slower than the backend answers
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.is_closing():
            self.peer.resume_reading()


class _Backend(asyncio.Protocol):
    """The backend side of a piped connection: answers go straight to the client's transport."""

    def __init__(self, client: _Client):
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        conn = self.client.conn
        if conn.awaiting:  # type: ignore[union-attr]  # the first bytes of a response
            conn.awaiting = False  # type: ignore[union-attr]
            if self.client.front.draining:
                data = _close_after(data)
        now = time.monotonic()
        conn.last_from, conn.last_at = "backend", now  # type: ignore[union-attr]
        self.client.transport.write(data)  # type: ignore[union-attr]
        if self.client.tee is not None:
            self.client.tee.backend_bytes(data, now)

    def eof_received(self) -> bool:
        return False  # closes this side; connection_lost closes the client's after its buffer is sent

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()  # type: ignore[union-attr]

    def pause_writing(self) -> None:  # the backend reads slower than the client sends
        self.client.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        if not self.client.transport.is_closing():  # type: ignore[union-attr]
            self.client.transport.resume_reading()  # type: ignore[union-attr]


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Front:
    """The forwarding server and its graceful stop."""

    def __init__(self, host: str, port: int, backend_file: Path, token: str, drain_s: float):
        self.host, self.port, self.backend_file, self.token, self.drain_s = host, port, backend_file, token, drain_s
        self.cache: dict[str, Any] = {"mtime": None, "port": None, "checked": 0.0}
        self.backend_path = str(backend_file)
        self.conns: dict[Any, _Conn] = {}  # open client connections (by their protocol), for the drain
        self.draining = False
        self.routing_file = backend_file.parent / ROUTING_FILE
        self.stats_file = backend_file.parent / STATS_FILE
        self.route: dict[str, Any] = {"mtime": None, "routing": None}
        self.meters: dict[str, _Meter] = {}
        self.started_at: float | None = None
        self.shadow: _Shadow | None = None
        self.tees: set[_Tee] = set()  # the copied connections of a shadow rollout
        self.tee_pass_due = False
        self.breach: dict[str, Any] | None = None
        self.last_check = 0.0
        self.dirty = False
        self.merging = os.environ.get(MERGE_ENV, "").strip().lower() not in ("off", "0", "false", "no")
        self.inflight = 0  # framed requests at the model server (merged ones count once)
        self.merger = _Merger(self)
        self.pools: dict[int, _Pool] = {}
        self.current: _Pool | None = None  # the pool of the backend BACKEND_FILE named last

    def routing(self) -> dict[str, Any] | None:
        """The rollout in ROUTING_FILE (re-read when the file changes), or None: plain forwarding."""
        try:
            mtime = self.routing_file.stat().st_mtime_ns
        except OSError:
            mtime = None
        if mtime != self.route["mtime"]:
            found = None
            if mtime is not None:
                try:
                    found = json.loads(self.routing_file.read_text())
                except (OSError, ValueError):
                    found = self.route["routing"]  # half-written: keep the last good one
            self.route["mtime"], self.route["routing"] = mtime, found
            if found is not None and found.get("started_at") != self.started_at:  # a new rollout: fresh counters
                self.started_at = found.get("started_at")
                self.meters = {"champion": _Meter(), "candidate": _Meter()}
                self.breach = found.get("breach")
                self.shadow = None
        routing = self.route["routing"]
        return routing if routing and routing.get("mode") in ("shadow", "canary") else None

    def backend(self) -> int:
        """The backend port BACKEND_FILE names (looked at again at most every BACKEND_RECHECK_S: a framed
        connection asks per request, and a stat per request was ~3% of the front's time at c=1)."""
        now = time.monotonic()
        if now - self.cache["checked"] < BACKEND_RECHECK_S and self.cache["port"] is not None:
            return self.cache["port"]
        mtime = os.stat(self.backend_path).st_mtime_ns
        if mtime != self.cache["mtime"]:
            self.cache["port"], self.cache["mtime"] = int(self.backend_file.read_text().strip()), mtime
        self.cache["checked"] = now
        return self.cache["port"]

    def identity(self) -> bytes:
        body = json.dumps({"pid": os.getpid(), "token": self.token, "backend_port": self.cache["port"],
                           "merging": self.merging, "merged_requests": self.merger.requests,
                           "merged_sends": self.merger.merged,
                           "merge_waiting": sum(b.records for b in self.merger.waiting.values()),
                           "backend_connections": sum(p.opened for p in self.pools.values())}).encode()
        return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % len(body)) + body

    def pool(self) -> _Pool:
        """The connection pool to the current backend (a new one when the backend file names another port)."""
        port = self.backend()
        pool = self.pools.get(port)
        if pool is None:
            for old in self.pools.values():
                old.retire()
            pool = _Pool(port)
            self.pools = {port: pool}
        self.current = pool
        return pool

    def exchange(self, data: bytes, head_request: bool, done: Any) -> None:
        """Send one whole request to the backend; `done` gets its answer (see `_Link`), or None."""
        try:
            pool = self.pool()
        except (OSError, ValueError):
            done(None)
            return
        pool.send(data, head_request, done)

    def send_one(self, client: _Client, data: bytes, head_request: bool) -> None:
        """A framed request, alone."""
        self.inflight += 1
        self.exchange(data, head_request, lambda got: self._one_answered(client, got))

    def _one_answered(self, client: _Client, got: tuple | None) -> None:
        self.inflight -= 1
        if got is None:
            client.respond(NO_BACKEND, True)
        else:
            client.respond(got[2], _value(got[4], _CONN) == b"close")
        self.merger.kick()

    def accepted(self) -> asyncio.Protocol:
        """The protocol of a new client connection (see `_Client`)."""
        return _Client(self)

    def start_routed(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     conn: _Conn, key: Any) -> None:
        task = asyncio.ensure_future(self.routed(first, reader, writer, conn))
        task.add_done_callback(lambda _: self.conns.pop(key, None))

    # ------------------------------------------------------------ shadow and canary: request by request
    async def routed(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     conn: _Conn) -> None:
        """Answer a client connection request by request while a rollout is on (see the module docstring)."""
        ups: dict[int, _Upstream] = {}
        try:
            while first:
                conn.awaiting, conn.last_from, conn.last_at = True, "client", time.monotonic()
                lines = [first]
                while lines[-1] not in (b"\r\n", b"\n"):
                    line = await reader.readline()
                    if not line:
                        return
                    lines.append(line)
                head = b"".join(lines)
                headers = _headers(head)
                body, _ = await _read_body(reader, headers, False)
                mirror: list = []
                answer = await self.answer(head, headers, body, ups, mirror)
                if answer is None:
                    writer.write(NO_BACKEND)
                    await writer.drain()
                    return
                status, resp_head, resp_body = answer
                closing = self.draining or headers.get(b"connection", b"").lower() == b"close" \
                    or _headers(resp_head).get(b"connection", b"").lower() == b"close"
                if self.draining:
                    resp_head = _close_after(resp_head)
                writer.write(resp_head + resp_body)
                conn.awaiting, conn.last_from, conn.last_at = False, "backend", time.monotonic()
                for copy in mirror:  # the answer is on its way: only now is the shadow copy made and queued
                    self._mirror(*copy)
                await writer.drain()
                if closing:
                    return
                first = await reader.readline()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            for up in ups.values():
                up.close()
            try:
                writer.close()
            except Exception:
                pass

    async def answer(self, head: bytes, headers: dict[bytes, bytes], body: bytes, ups: dict[int, _Upstream],
                     mirror: list) -> tuple[int, bytes, bytes] | None:
        """Route one request and measure it; the answer for the client. A shadow copy to send once the
        answer is written is appended to `mirror` as the arguments of `_mirror`."""
        routing = self.routing()
        champion_port = self.backend()
        method, target = head.split(b" ", 2)[:2]
        path = target.split(b"?")[0]
        scoring = method == b"POST" and path in SCORING_PATHS \
            and headers.get(TRAFFIC_HEADER, b"live").strip().lower() in (b"", b"live")
        head = _rewrite(head, (PREDICTION_ID_HEADER,), []) if PREDICTION_ID_HEADER in headers else head
        if routing is None or not scoring:
            return await self._up(ups, champion_port).exchange(head, body, UPSTREAM_TIMEOUT_S)
        share = 0.0 if self.breach else float(routing.get("share", 0.0))
        cand_port = int(routing["candidate_port"])
        if routing["mode"] == "canary" and self._to_candidate(headers, share):
            got = await self._measured("candidate", self._up(ups, cand_port), head, body)
            if got is not None and got[0] < 500 and not _RECORD_ERROR.search(got[2]):
                return got
            # no answer, a 5xx, or a record it could not score: counted against it, answered by the champion
        got = await self._measured("champion", self._up(ups, champion_port), head, body)
        if routing["mode"] == "shadow" and got is not None and got[0] == 200 and share > 0 \
                and (share >= 1 or random.random() < share):
            mirror.append((cand_port, head, body, got[2]))
        return got

    @staticmethod
    def _to_candidate(headers: dict[bytes, bytes], share: float) -> bool:
        if share <= 0:
            return False
        client = headers.get(CLIENT_HEADER)
        if client:  # sticky: the same client id lands on the same side for a given share
            import zlib

            return (zlib.crc32(client) % 10_000) < share * 10_000
        return random.random() < share

    @staticmethod
    def _up(ups: dict[int, _Upstream], port: int) -> _Upstream:
        if port not in ups:
            ups[port] = _Upstream(port)
        return ups[port]

    async def _measured(self, side: str, up: _Upstream, head: bytes, body: bytes) -> tuple[int, bytes, bytes] | None:
        start = time.perf_counter()
        got = await up.exchange(head, body, UPSTREAM_TIMEOUT_S)
        took = (time.perf_counter() - start) * 1000
        self._count(side, got, took)
        return got

    def _count(self, side: str, got: tuple[int, bytes, bytes] | None, took_ms: float) -> None:
        meter = self.meters.setdefault(side, _Meter())
        if got is None:
            meter.add(None, True)
        else:
            meter.add(took_ms, got[0] >= 500 or bool(_RECORD_FAILED.search(got[2])), got[0])
        self.dirty = True

    def _mirror(self, port: int, head: bytes, body: bytes, answer: bytes,
                headers: dict[bytes, bytes] | None = None) -> None:
        """Send the candidate a copy of a request the champion answered (`answer`), without waiting for it."""
        if self.shadow is None or self.shadow.port != port:
            self.shadow = _Shadow(self, port)
        path = head.split(b" ", 2)[1].split(b"?")[0]
        self.shadow.add(path, head, headers if headers is not None else _headers(head), body, answer)

    def tee_pending(self) -> None:
        """Copied bytes wait: make sure a pass over the copied connections comes (once per SHADOW_LINGER_S)."""
        if not self.tee_pass_due:
            self.tee_pass_due = True
            asyncio.get_running_loop().call_later(SHADOW_LINGER_S, self.tee_pass)

    def tee_pass(self) -> None:
        self.tee_pass_due = False
        for tee in list(self.tees):
            try:
                tee.process()
            except Exception as exc:  # the copy never fails the connection it copies
                tee.stop()
                print(f"front: shadow copy failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if tee.closed or tee.off:
                self.tees.discard(tee)

    def observed(self, request: tuple, status: int, answer: bytes, now: float) -> None:
        """A piped request and its answer, framed by a `_Tee` after both passed: the champion's counters,
        and the shadow copy."""
        method, path, headers, head, body, started = request
        if method != b"POST" or path not in SCORING_PATHS \
                or headers.get(TRAFFIC_HEADER, b"live").strip().lower() not in (b"", b"live"):
            return
        routing = self.routing()
        if routing is None or routing.get("mode") != "shadow":
            return
        self._count("champion", (status, b"", answer), (now - started) * 1000)
        share = 0.0 if self.breach else float(routing.get("share", 0.0))
        if status == 200 and share > 0 and (share >= 1 or random.random() < share):
            self._mirror(int(routing["candidate_port"]), head, body, answer, headers)

    async def supervise(self) -> None:
        """Every second: write the counters; for a canary, roll back at once on a breach."""
        while True:
            await asyncio.sleep(0.25)
            try:
                routing = self.routing()
                if routing is None:
                    continue
                now = time.time()
                if routing["mode"] == "canary" and not self.breach \
                        and now - self.last_check >= float(routing.get("check_interval_s", 1.0)):
                    self.last_check = now
                    self.check_breach(routing, now)
                if self.dirty or now - self.last_check > 5:
                    self.dirty = False
                    self.write_stats(routing, now)
            except Exception as exc:  # the front keeps forwarding whatever happens to its bookkeeping
                print(f"front: rollout bookkeeping failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def stats(self, routing: dict[str, Any], now: float) -> dict[str, Any]:
        return {"mode": routing.get("mode"), "started_at": self.started_at, "updated_at": now,
                "share": 0.0 if self.breach else routing.get("share"), "breach": self.breach,
                "champion_version": routing.get("champion_version"),
                "candidate_version": routing.get("candidate_version"),
                "shadow_inflight": self.shadow.inflight if self.shadow is not None else 0,
                "shadow_pending": self.shadow.pending if self.shadow is not None else 0,
                **{side: m.snapshot() for side, m in self.meters.items()}}

    def write_stats(self, routing: dict[str, Any], now: float) -> None:
        tmp = self.stats_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats(routing, now)))
        os.replace(tmp, self.stats_file)

    def check_breach(self, routing: dict[str, Any], now: float) -> None:
        snap = {side: m.snapshot() for side, m in self.meters.items()}
        elapsed = (now - float(routing.get("started_at") or now)) / 60
        decision = decide_canary(SideStats.from_dict(snap.get("champion")), SideStats.from_dict(snap.get("candidate")),
                                 CanaryLimits.from_dict(routing.get("limits") or {}), elapsed_minutes=elapsed)
        if decision.verdict != BREACH:
            return
        self.breach = {"at": now, "reason": decision.reason, "decision": decision.to_dict(), "stats": snap}
        routed = {**routing, "share": 0.0, "breach": self.breach}
        tmp = self.routing_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(routed, indent=2))
        os.replace(tmp, self.routing_file)
        self.write_stats(routing, now)
        print(f"front: canary breached, share 0: {decision.reason}", file=sys.stderr, flush=True)
        self.finish_breach(routing)

    def finish_breach(self, routing: dict[str, Any]) -> None:
        """Start `sluice rollout check PROJECT`: it stops the candidate, emits the event, writes the audit."""
        project = routing.get("project") or self.backend_file.parent.name
        with open(self.backend_file.parent / "rollout.log", "ab") as out:
            subprocess.Popen([sys.executable, "-m", "sluicegate.cli", "rollout", "check", project],
                             cwd=routing.get("cwd") or None, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)

    async def serve(self) -> None:
        listener = socket.create_server((self.host, self.port), backlog=1024, reuse_port=False)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.accepted, sock=listener)
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        supervisor = asyncio.ensure_future(self.supervise())
        await stop
        supervisor.cancel()
        self.draining = True
        await self.stop_accepting(server)
        await self.drain()

    async def stop_accepting(self, server: asyncio.base_events.Server) -> None:
        """Close the listening socket without resetting connections the kernel already queued."""
        backlog = [socket.socket(fileno=os.dup(s.fileno())) for s in server.sockets]
        server.close()  # asyncio stops accepting; the dup keeps the socket listening a moment longer
        for sock in backlog:
            sock.setblocking(False)
            while True:
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                try:
                    await asyncio.get_running_loop().connect_accepted_socket(self.accepted, conn)
                except OSError:
                    conn.close()
            sock.close()
        await asyncio.sleep(0)  # the handlers just started register their connection before the drain looks

    async def drain(self) -> None:
        end = time.monotonic() + self.drain_s
        while self.conns and time.monotonic() < end:
            now = time.monotonic()
            for conn in list(self.conns.values()):
                if conn.idle(now):
                    conn.close()
            await asyncio.sleep(0.05)
        for conn in list(self.conns.values()):  # past the drain timeout
            conn.close()


def run_front(argv: list[str]) -> int:
    """Entry of the front process: HOST PORT BACKEND_FILE [DRAIN_S]."""
    host, port, backend_file = argv[0], int(argv[1]), Path(argv[2])
    drain_s = float(argv[3]) if len(argv) > 3 else DEFAULT_DRAIN_S
    try:
        import uvloop  # optional: a faster event loop when installed

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(Front(host, port, backend_file, os.environ.get(TOKEN_ENV, ""), drain_s).serve())
    return 0


def front_identity(host: str, port: int, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """What answers `GET /__sluice/front` on host:port ({"pid", "token"}), or None when not a front."""
    import http.client

    try:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            conn.request("GET", IDENTITY_PATH)
            resp = conn.getresponse()
            body = resp.read(4096)
        finally:
            conn.close()
        if resp.status != 200:
            return None
        found = json.loads(body)
        return found if isinstance(found, dict) and "pid" in found and "token" in found else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def is_our_front(host: str, port: int, pid: int, token: str) -> bool:
    found = front_identity(host, port)
    return bool(token) and found is not None and found.get("pid") == pid and found.get("token") == token


def start_front(host: str, port: int, folder: Path, token: str, drain_s: float = DEFAULT_DRAIN_S) -> subprocess.Popen:
    """Start the front process on the configured port and wait until it answers with its identity."""
    log_file = folder / "front.log"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluicegate.deploy.proxy", host, str(port), str(folder / BACKEND_FILE), str(drain_s)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", TOKEN_ENV: token},
        )
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise DeployError(f"the front process on {host}:{port} exited ({proc.returncode}){tail_log(log_file)}")
        if is_our_front(host, port, proc.pid, token):
            return proc
        time.sleep(0.1)
    stop_process_group(proc.pid)
    raise DeployError(f"the front process did not answer on {host}:{port} within 15s{tail_log(log_file)}")


def write_backend(folder: Path, port: int) -> None:
    """Point the front at a backend port (atomically: the front reads the file per connection)."""
    tmp = folder / f"{BACKEND_FILE}.tmp"
    tmp.write_text(str(port))
    os.replace(tmp, folder / BACKEND_FILE)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        print("usage: python -m sluicegate.deploy.proxy HOST PORT BACKEND_FILE [DRAIN_S]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_front(sys.argv[1:]))
