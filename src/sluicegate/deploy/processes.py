"""Local processes of a deployment: state.json, process groups, loopback ports, the model server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sluicegate.errors import DeployError
from sluicegate.settings import Settings

if TYPE_CHECKING:
    from sluicegate.packaging import BentoResult

STATE_FILE = "state.json"
BACKEND_FILE = "backend"
FRONT_MARKER = "sluicegate.deploy"  # in the front process's command line
BACKEND_MARKER = "bentoml"  # in the model server's command line
# sent with every request the deploy code makes to a model server, so the service can keep
# canary and probe rows out of the prediction log's monitoring windows
CANARY_HEADERS = {"X-Sluice-Traffic": "canary"}


@dataclass(frozen=True)
class ServingState:
    """The local deployment of a project: a front process owning the port, forwarding to one backend."""

    project: str
    version: str
    bento_tag: str
    host: str
    port: int
    front_pid: int
    backend_pid: int
    backend_port: int
    started_at: str


def state_dir(settings: Settings, project: str) -> Path:
    return settings.home / "deploy" / project


def read_state(settings: Settings, project: str) -> ServingState | None:
    """The recorded local deployment, or None when there is none."""
    path = state_dir(settings, project) / STATE_FILE
    if not path.exists():
        return None
    try:
        return ServingState(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def write_state(settings: Settings, state: ServingState) -> None:
    path = state_dir(settings, state.project) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path)


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """Whether `pid` runs, and (when given) its command line contains `marker`, so a recycled pid is not ours."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    if marker is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists() and ") Z" in stat.read_text():
        return False
    return marker in cmdline


def stop_process_group(pid: int, marker: str | None = None, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group led by `pid` (graceful: flushes the prediction log), SIGKILL after a timeout."""
    if not pid_alive(pid, marker):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def serve_env(settings: Settings) -> dict[str, str]:
    from sluicegate.packaging import bentoml_env

    return {**os.environ, **bentoml_env(settings), "SLUICE_HOME": str(settings.home)}


def start_backend(bento: BentoResult, host: str, port: int, settings: Settings, log_file: Path) -> subprocess.Popen:
    """`bentoml serve TAG` in its own process group (so it can be stopped with all its workers)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", bento.bento_tag, "--host", host, "--port", str(port)],
            env=serve_env(settings), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=str(settings.home),
        )


def wait_ready(proc: subprocess.Popen | None, url: str, deadline_s: float, log_file: Path | None = None) -> None:
    """Poll `url/readyz` until it answers 200.

    Raises:
        DeployError: the process exited, or the deadline passed (with the end of its log).
    """
    import httpx

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise DeployError(f"candidate exited with code {proc.returncode} before it was ready{tail_log(log_file)}")
        try:
            if httpx.get(f"{url}/readyz", headers=CANARY_HEADERS, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise DeployError(f"candidate not ready at {url}/readyz within {deadline_s:.0f}s{tail_log(log_file)}")


def tail_log(log_file: Path | None, lines: int = 6) -> str:
    """The end of a process log (its error lines first), for an error message."""
    if log_file is None or not log_file.exists():
        return ""
    text = log_file.read_text(errors="replace").strip().splitlines()
    wanted = [ln for ln in text if "Error" in ln or "error" in ln] or text
    return "; log: " + " | ".join(wanted[-lines:])[-1500:]
