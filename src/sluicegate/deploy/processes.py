"""Local processes of a deployment: state.json, process groups, loopback ports, the model server."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from sluicegate.errors import DeployError
from sluicegate.files import write_json_atomic
from sluicegate.settings import Settings

if TYPE_CHECKING:
    from sluicegate.packaging import BentoResult

STATE_FILE = "state.json"
BACKEND_FILE = "backend"
ROUTING_FILE = "routing.json"  # a shadow or canary rollout the front applies (see `sluicegate.deploy.traffic`)
STATS_FILE = "traffic-stats.json"  # the front's counters per side during a rollout
LOCK_FILE = "deploy.lock"
CANDIDATE_FILE = "candidate.pid"  # a model server started by a deploy that has not finished
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
    front_token: str = ""  # what the front answers on GET /__sluice/front (empty in older state files)
    # a shadow or canary rollout beside this version: strategy, status (active, breached, aborted,
    # promoted), share, since, candidate version/pid/port (see `sluicegate.deploy.traffic`)
    rollout: dict | None = None
    # the container target: the backend is this container (backend_pid 0), run by `engine`
    backend_container: str = ""
    engine: str = ""
    image: str = ""


def backend_alive(state: ServingState) -> bool:
    """Whether the recorded backend (a model server process, or a container) still runs."""
    if state.backend_container:
        from sluicegate.deploy.engine import container_state

        return container_state(state.engine or "podman", state.backend_container) == "running"
    return pid_alive(state.backend_pid, BACKEND_MARKER)


def stop_backend(state: ServingState) -> None:
    """Stop the recorded backend gracefully: its process group, or its container (stopped and removed)."""
    if state.backend_container:
        from sluicegate.deploy.engine import remove_container

        remove_container(state.engine or "podman", state.backend_container)
    else:
        stop_process_group(state.backend_pid, BACKEND_MARKER)


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
    write_json_atomic(state_dir(settings, state.project) / STATE_FILE, asdict(state), indent=2)


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, start time) of a process from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


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
    stat = _proc_stat(pid)
    if stat is not None and stat[0] in ("Z", "X"):
        return False
    if marker is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True
    return marker in cmdline


def process_tree(pid: int) -> dict[int, int]:
    """Every live descendant of `pid` (pid -> start time), wherever its process group or session is."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[0] not in ("Z", "X"):
                children.setdefault(stat[1], []).append(int(entry.name))
                starts[int(entry.name)] = stat[3]
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def _signal_tree(pid: int, tree: dict[int, int], sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for child, start in tree.items():
        stat = _proc_stat(child)
        if stat is not None and stat[3] == start:  # the same process, not a recycled pid
            try:
                os.kill(child, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _tree_alive(tree: dict[int, int]) -> bool:
    return any((st := _proc_stat(p)) is not None and st[3] == start and st[0] not in ("Z", "X")
               for p, start in tree.items())


def stop_process_group(pid: int, marker: str | None = None, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group led by `pid` and every descendant (graceful: flushes the prediction
    log), SIGKILL what is left after a timeout. Descendants that left the group (their own session)
    are found through /proc and stopped too."""
    if not pid_alive(pid, marker):
        return
    tree = process_tree(pid)
    _signal_tree(pid, tree, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if pid_alive(pid):
            tree.update(process_tree(pid))  # children started while it was stopping
        elif not _tree_alive(tree):
            return
        time.sleep(0.1)
    _signal_tree(pid, tree, signal.SIGKILL)
    _reap(pid)


def stop_rollout_candidate(settings: Settings, state: ServingState) -> None:
    """Send a shadow or canary candidate nothing more (new connections) and stop it, if one runs."""
    rollout = state.rollout or {}
    (state_dir(settings, state.project) / ROUTING_FILE).unlink(missing_ok=True)
    if rollout.get("status") == "active":
        stop_candidate(state)


def stop_candidate(state: ServingState) -> None:
    """Stop a rollout's candidate: its process group, or its container (stopped and removed)."""
    rollout = state.rollout or {}
    name = rollout.get("candidate_container") or ""
    if name and name != state.backend_container:
        from sluicegate.deploy.engine import remove_container

        remove_container(rollout.get("candidate_engine") or "podman", name)
        return
    pid = int(rollout.get("candidate_pid") or 0)
    if pid and pid != state.backend_pid:
        stop_process_group(pid, BACKEND_MARKER)


def candidate_alive(rollout: dict) -> bool:
    """Whether a rollout's candidate still runs (a process, or a container)."""
    if rollout.get("candidate_container"):
        from sluicegate.deploy.engine import container_state

        return container_state(rollout.get("candidate_engine") or "podman", rollout["candidate_container"]) == "running"
    return pid_alive(int(rollout.get("candidate_pid") or 0), BACKEND_MARKER)


def renice_candidate(rollout: dict, niceness: int) -> bool:
    """Set the CPU niceness of a candidate's processes: its process tree, or its container's (rootful
    podman runs them as processes of this host); False where that is not allowed."""
    pid = int(rollout.get("candidate_pid") or 0)
    if rollout.get("candidate_container"):
        from sluicegate.deploy.engine import container_pid

        pid = container_pid(rollout.get("candidate_engine") or "podman", rollout["candidate_container"])
    return bool(pid) and renice_tree(pid, niceness)


def renice_tree(pid: int, niceness: int) -> bool:
    """Set the CPU niceness of `pid` and its descendants; False when not allowed (raising it back
    towards 0 needs privileges) or the process is gone."""
    ok = True
    for p in [pid, *process_tree(pid)]:
        try:
            os.setpriority(os.PRIO_PROCESS, p, niceness)
        except (ProcessLookupError, PermissionError, OSError):
            ok = False
    return ok


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------- one deploy at a time
@contextmanager
def project_lock(settings: Settings, project: str, timeout_s: float = 900.0) -> Iterator[None]:
    """Hold the project's deploy lock (an flock on SLUICE_HOME/deploy/<project>/deploy.lock).

    The kernel releases it when the holder exits, crashed or not, so a killed deploy never
    blocks the next one. The file holds the holder's pid, for the error message.

    Raises:
        DeployError: another deploy of the project still holds it after `timeout_s`.
    """
    folder = state_dir(settings, project)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the processes a deploy starts
    try:
        end = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    holder = path.read_text().strip() or "unknown"
                    raise DeployError(f"{project}: another deploy or stop (pid {holder}) still holds {path} after "
                                      f"{timeout_s:.0f}s; wait for it, or stop that process") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        reap_orphan_candidate(settings, project)
        yield
    finally:
        os.close(fd)


CONTAINER_PREFIX = "container:"  # a candidate container in CANDIDATE_FILE: container:<engine>:<name>


def record_candidate(settings: Settings, project: str, pid: int | str | None) -> None:
    """Remember (or forget, with None) the model server a deploy started and has not yet committed:
    a process id, or `container:<engine>:<name>` for a container."""
    path = state_dir(settings, project) / CANDIDATE_FILE
    if pid is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(str(pid))


def reap_orphan_candidate(settings: Settings, project: str) -> None:
    """Stop a candidate left behind by a deploy that died between starting it and committing."""
    path = state_dir(settings, project) / CANDIDATE_FILE
    try:
        text = path.read_text().strip()
    except OSError:
        return
    state = read_state(settings, project)
    if text.startswith(CONTAINER_PREFIX):
        engine, _, name = text.removeprefix(CONTAINER_PREFIX).partition(":")
        if state is None or state.backend_container != name:
            from sluicegate.deploy.engine import remove_container

            try:
                remove_container(engine, name)
            except DeployError as exc:  # never blocks the next deploy: said once, then forgotten
                print(f"{project}: the orphan candidate container {name} was not removed ({exc}); "
                      f"remove it with `{engine} rm -f {name}`", file=sys.stderr)
    else:
        try:
            pid = int(text)
        except ValueError:
            return
        if state is None or state.backend_pid != pid:
            stop_process_group(pid, BACKEND_MARKER)
    path.unlink(missing_ok=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now; sockets in TIME-WAIT do not count (SO_REUSEADDR,
    as every server we start sets it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
