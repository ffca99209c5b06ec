"""The front process: owns a project's port and forwards each connection to the backend named in a file.

Runs as `python -m sluicegate.deploy.proxy HOST PORT BACKEND_FILE`; imports only the standard
library (and uvloop when installed), so it starts fast and never loads a model.
"""

from __future__ import annotations

import asyncio
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

NO_BACKEND = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
              b"content-length: 33\r\nconnection: close\r\n\r\n{\"error\": \"no backend available\"}")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def _front(host: str, port: int, backend_file: Path) -> None:
    cache: dict[str, Any] = {"mtime": None, "port": None}

    def backend() -> int:
        mtime = backend_file.stat().st_mtime_ns
        if mtime != cache["mtime"]:
            cache["port"], cache["mtime"] = int(backend_file.read_text().strip()), mtime
        return cache["port"]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend())
        except (OSError, ValueError):
            writer.write(NO_BACKEND)
            await writer.drain()
            writer.close()
            return
        sock = up_writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, host, port, backlog=1024)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with server:
        await stop


def run_front(argv: list[str]) -> int:
    """Entry of the front process: HOST PORT BACKEND_FILE."""
    host, port, backend_file = argv[0], int(argv[1]), Path(argv[2])
    try:
        import uvloop  # optional: a faster event loop when installed

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_front(host, port, backend_file))
    return 0


def start_front(host: str, port: int, folder: Path) -> subprocess.Popen:
    """Start the front process on the configured port and wait until it accepts connections."""
    log_file = folder / "front.log"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluicegate.deploy.proxy", host, str(port), str(folder / BACKEND_FILE)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise DeployError(f"the front process on {host}:{port} exited ({proc.returncode}){tail_log(log_file)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    stop_process_group(proc.pid)
    raise DeployError(f"the front process did not listen on {host}:{port} within 15s")


def write_backend(folder: Path, port: int) -> None:
    """Point the front at a backend port (atomically: the front reads the file per connection)."""
    tmp = folder / f"{BACKEND_FILE}.tmp"
    tmp.write_text(str(port))
    os.replace(tmp, folder / BACKEND_FILE)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: python -m sluicegate.deploy.proxy HOST PORT BACKEND_FILE", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_front(sys.argv[1:]))
