"""A local Prefect server that outlives one command: started once in the background, reused after.

Each Prefect-backed command otherwise starts Prefect's temporary API (13 s idle, 25-37 s under load on
2 cores). The first command that needs Prefect starts `prefect server start` on loopback with its
database under SLUICE_HOME; later commands find it through a small state file and only check that it
answers. A set `PREFECT_API_URL` always wins; `SLUICE_PREFECT_SERVER=off` keeps the temporary API.
This module starts processes only; it never imports Prefect.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping, MutableMapping

from sluicegate.errors import SluiceError
from sluicegate.files import write_json_atomic

DEFAULT_PORT = 4200
START_TIMEOUT_S = 150.0  # the first start migrates the database: ~25 s idle on 2 cores, more under load
PROBE_TIMEOUT_S = 2.0


class ServerStartError(SluiceError):
    """The local Prefect server could not be started (the caller may fall back to a temporary API)."""

    exit_code = 10


@dataclass(frozen=True)
class ServerInfo:
    """What `server.json` records about a running local server."""

    pid: int
    port: int
    url: str
    prefect_home: str
    log_file: str
    started_at: float

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


@dataclass(frozen=True)
class ServerStatus:
    """Whether the recorded server answers; `info` is None when none was ever started."""

    running: bool
    info: ServerInfo | None
    detail: str


def server_dir(home: Path) -> Path:
    return home / "prefect-server"


def configured_port(env: Mapping[str, str]) -> int:
    """The port from `SLUICE_PREFECT_PORT` (default 4200)."""
    raw = env.get("SLUICE_PREFECT_PORT") or str(DEFAULT_PORT)
    try:
        port = int(raw)
    except ValueError:
        raise SluiceError(f"SLUICE_PREFECT_PORT: not a port number (got {raw!r})") from None
    if not 0 < port < 65536:
        raise SluiceError(f"SLUICE_PREFECT_PORT: must be 1-65535 (got {port})")
    return port


def _read(home: Path) -> ServerInfo | None:
    try:
        return ServerInfo(**json.loads((server_dir(home) / "server.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write(home: Path, info: ServerInfo) -> None:
    write_json_atomic(server_dir(home) / "server.json", asdict(info), indent=2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process counts as dead
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _healthy(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    """Two commands starting at once start one server: the second waits, then finds it."""
    folder = server_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "start.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the OS if this process dies
        yield


def server_status(home: Path) -> ServerStatus:
    """Is the server recorded under `home` running and answering?"""
    info = _read(home)
    if info is None:
        return ServerStatus(False, None, "not started")
    if not _alive(info.pid):
        return ServerStatus(False, info, f"not running (pid {info.pid} has exited)")
    if not _healthy(info.url):
        return ServerStatus(False, info, f"pid {info.pid} runs but {info.url} does not answer /api/health")
    return ServerStatus(True, info, f"{info.url} (pid {info.pid})")


def _prefect_bin() -> str:
    exe = Path(sys.executable).parent / "prefect"
    return str(exe) if exe.exists() else "prefect"


def start_server(home: Path, port: int, prefect_home: Path, timeout_s: float = START_TIMEOUT_S) -> ServerInfo:
    """Start (or find) the local server; returns once `/api/health` answers.

    Raises:
        ServerStartError: the port is taken by another process, or the server did not answer in time.
    """
    with _start_lock(home):
        status = server_status(home)
        if status.running and status.info is not None:
            return status.info
        if status.info is not None and _alive(status.info.pid):  # alive but not answering: replace it
            stop_server(home)
        if _port_taken(port):
            raise ServerStartError(f"port {port} on 127.0.0.1 is in use by another process; "
                                   f"set SLUICE_PREFECT_PORT to a free port (or PREFECT_API_URL to that server)")
        prefect_home.mkdir(parents=True, exist_ok=True)
        log_file = server_dir(home) / "server.log"
        env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true")}
        env.pop("PREFECT_API_URL", None)
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                [_prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)  # its own process group: Ctrl-C on this command does not stop it
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerStartError(f"prefect server exited with {proc.returncode} while starting: "
                                       f"{_tail(log_file)} (log: {log_file})")
            if _healthy(url, timeout=1.0):
                info = ServerInfo(proc.pid, port, url, str(prefect_home), str(log_file), time.time())
                _write(home, info)
                return info
            time.sleep(0.5)
        _kill_group(proc.pid)
        raise ServerStartError(f"prefect server did not answer on {url} within {timeout_s:.0f} s (log: {log_file})")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _kill_group(pid: int, timeout_s: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _alive(pid):
                return
            time.sleep(0.2)


def stop_server(home: Path) -> ServerInfo | None:
    """Stop the recorded server and its process group; returns what was stopped (None: nothing)."""
    info = _read(home)
    if info is None:
        return None
    if _alive(info.pid):
        _kill_group(info.pid)
    with contextlib.suppress(OSError):
        (server_dir(home) / "server.json").unlink()
    return info


def ensure_server(env: MutableMapping[str, str], home: Path, *, announce=None) -> str:
    """Point this process at a Prefect API: a configured one, the local server, or a temporary one.

    Sets `PREFECT_API_URL` in `env` when the local server is used. Returns a one-line description of
    the choice. Failing to start the server is not an error: the temporary API is used instead and the
    reason is passed to `announce` (one line).
    """
    if env.get("PREFECT_API_URL"):
        return f"Prefect API {env['PREFECT_API_URL']} (PREFECT_API_URL)"
    mode = (env.get("SLUICE_PREFECT_SERVER") or "auto").strip().lower()
    if mode in ("off", "ephemeral", "temporary", "0", "false"):
        return "temporary Prefect API (SLUICE_PREFECT_SERVER=off)"
    prefect_home = Path(env.get("PREFECT_HOME") or home / "prefect")
    try:
        status = server_status(home)
        if status.running and status.info is not None:
            info = status.info
        else:
            if announce:
                announce(f"starting the local Prefect server on 127.0.0.1:{configured_port(env)} "
                         f"(once; `sluice server stop` stops it)")
            info = start_server(home, configured_port(env), prefect_home)
    except SluiceError as exc:
        if announce:
            announce(f"local Prefect server unavailable ({exc}); using a temporary API for this command")
        return "temporary Prefect API (local server unavailable)"
    env["PREFECT_API_URL"] = info.api_url
    return f"local Prefect server {info.url} (pid {info.pid})"
