"""The front process: owns a project's port and forwards each connection to the backend named in a file.

Runs as `python -m sluicegate.deploy.proxy HOST PORT BACKEND_FILE [DRAIN_S]` with its identity
token in `SLUICE_FRONT_TOKEN`; imports only the standard library (and uvloop when installed),
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
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sluicegate.deploy.processes import BACKEND_FILE, stop_process_group, tail_log
from sluicegate.errors import DeployError

IDENTITY_PATH = "/__sluice/front"
TOKEN_ENV = "SLUICE_FRONT_TOKEN"
DEFAULT_DRAIN_S = 30.0
IDLE_AFTER_RESPONSE_S = 0.5  # a connection quiet this long after the backend last spoke is between requests
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


class Front:
    """The forwarding server and its graceful stop."""

    def __init__(self, host: str, port: int, backend_file: Path, token: str, drain_s: float):
        self.host, self.port, self.backend_file, self.token, self.drain_s = host, port, backend_file, token, drain_s
        self.cache: dict[str, Any] = {"mtime": None, "port": None}
        self.conns: dict[asyncio.Task, _Conn] = {}
        self.draining = False

    def backend(self) -> int:
        mtime = self.backend_file.stat().st_mtime_ns
        if mtime != self.cache["mtime"]:
            self.cache["port"], self.cache["mtime"] = int(self.backend_file.read_text().strip()), mtime
        return self.cache["port"]

    def identity(self) -> bytes:
        body = json.dumps({"pid": os.getpid(), "token": self.token, "backend_port": self.cache["port"]}).encode()
        return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % len(body)) + body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        conn = _Conn(writer)
        self.conns[task] = conn  # type: ignore[index]
        try:
            try:
                first = await reader.readline()  # the request line: HTTP clients speak first
            except (ConnectionError, ValueError):
                first = b""
            if not first:
                writer.close()
                return
            if first.split(b" ")[:2] == [b"GET", IDENTITY_PATH.encode()]:
                writer.write(self.identity())
                await writer.drain()
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend())
            except (OSError, ValueError):
                writer.write(NO_BACKEND)
                await writer.drain()
                writer.close()
                return
            conn.upstream = up_writer
            sock = up_writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up_writer.write(first)
            conn.awaiting = True
            await asyncio.gather(self.pipe(reader, up_writer, conn, "client"), self.pipe(up_reader, writer, conn, "backend"))
        except ConnectionError:
            pass
        finally:
            self.conns.pop(task, None)  # type: ignore[arg-type]

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn, side: str) -> None:
        try:
            while data := await reader.read(65536):
                if side == "client":
                    conn.awaiting = True
                elif conn.awaiting:  # the first bytes of a response
                    conn.awaiting = False
                    if self.draining:
                        data = _close_after(data)
                conn.last_from, conn.last_at = side, time.monotonic()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def serve(self) -> None:
        listener = socket.create_server((self.host, self.port), backlog=1024, reuse_port=False)
        server = await asyncio.start_server(self.handle, sock=listener, limit=2 ** 20)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        await stop
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
                reader, writer = await asyncio.open_connection(sock=conn, limit=2 ** 20)
                asyncio.ensure_future(self.handle(reader, writer))
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
