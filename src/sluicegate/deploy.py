"""Deploy a Bento: a canaried local process behind a stable port, a container image, or Kubernetes manifests."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.errors import DeployError
from sluicegate.packaging import BentoResult, bentoml_env, canary_data, safe_name, verify_model_artifact
from sluicegate.settings import Settings

STATE_FILE = "state.json"
BACKEND_FILE = "backend"


@dataclass(frozen=True)
class DeployResult:
    """What a deploy did: the target, the version now serving (or packaged), where, and what to run next."""

    target: str
    project: str
    version: str
    bento_tag: str
    url: str | None = None
    files: tuple[str, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class CanaryReport:
    """Served answers compared with the offline predictions stored in the Bento."""

    rows: int
    mismatches: int
    max_abs_diff: float
    examples: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


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


# ---------------------------------------------------------------- small process helpers
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


def _write_state(settings: Settings, state: ServingState) -> None:
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


def _serve_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **bentoml_env(settings), "SLUICE_HOME": str(settings.home)}


def start_backend(bento: BentoResult, host: str, port: int, settings: Settings, log_file: Path) -> subprocess.Popen:
    """`bentoml serve TAG` in its own process group (so it can be stopped with all its workers)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", bento.bento_tag, "--host", host, "--port", str(port)],
            env=_serve_env(settings), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
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
            raise DeployError(f"candidate exited with code {proc.returncode} before it was ready{_tail(log_file)}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise DeployError(f"candidate not ready at {url}/readyz within {deadline_s:.0f}s{_tail(log_file)}")


def _tail(log_file: Path | None, lines: int = 6) -> str:
    if log_file is None or not log_file.exists():
        return ""
    text = log_file.read_text(errors="replace").strip().splitlines()
    wanted = [ln for ln in text if "Error" in ln or "error" in ln] or text
    return "; log: " + " | ".join(wanted[-lines:])[-1500:]


# ---------------------------------------------------------------- canary
def auth_headers(packaging: PackagingConfig) -> dict[str, str]:
    """The bearer header the service expects, from the environment variable the config names."""
    if packaging.auth_token is None:
        return {}
    token = os.environ.get(packaging.auth_token.env or "", "")
    if not token:
        raise DeployError(f"packaging.auth_token: environment variable {packaging.auth_token.env} is not set; "
                          "the service would refuse every request")
    return {"Authorization": f"Bearer {token}"}


def compare_predictions(served: list[Any], offline: list[Any], tolerance: float) -> CanaryReport:
    """Compare served and offline values: labels exactly, numbers and probabilities within `tolerance`."""
    mismatches, worst, examples = 0, 0.0, []
    if len(served) != len(offline):
        return CanaryReport(len(offline), len(offline), math.inf, (f"got {len(served)} answers for {len(offline)} rows",))
    for i, (a, b) in enumerate(zip(served, offline)):
        diff = _difference(a, b)
        worst = max(worst, diff)
        if diff > tolerance:
            mismatches += 1
            if len(examples) < 3:
                examples.append(f"row {i}: served {a!r}, offline {b!r}")
    return CanaryReport(len(offline), mismatches, worst, tuple(examples))


def _difference(a: Any, b: Any) -> float:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return math.inf
        return max((_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return 0.0 if a == b else math.inf
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) and math.isnan(b):
            return 0.0
        return abs(float(a) - float(b)) / max(1.0, abs(float(b)))
    return 0.0 if a == b else math.inf


def run_canary(url: str, bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig,
               settings: Settings) -> CanaryReport:
    """Replay the held-out rows stored in the Bento against a served candidate and compare.

    Raises:
        DeployError: a request failed or an answer disagrees with the offline prediction.
    """
    import httpx

    data = canary_data(bento, settings)
    headers = auth_headers(packaging)
    records = data["records"][: spec.canary_rows]
    checks = [("predict", "prediction", data["predictions"][: len(records)])]
    if "probabilities" in data:
        checks.append(("predict_proba", "probabilities", data["probabilities"][: len(records)]))
    worst: CanaryReport | None = None
    for route, key, expected in checks:
        try:
            resp = httpx.post(f"{url}/{route}", json=records, headers=headers, timeout=60)
        except httpx.HTTPError as exc:
            raise DeployError(f"canary: POST /{route} failed: {exc}") from exc
        if resp.status_code != 200:
            raise DeployError(f"canary: POST /{route} answered {resp.status_code}: {resp.text[:300]}")
        answers = resp.json()
        errors = [a.get("error") for a in answers if a.get("error") or a.get("fallback")]
        if errors:
            raise DeployError(f"canary: the candidate failed on {len(errors)} of {len(records)} rows: {errors[0]}")
        report = compare_predictions([a[key] for a in answers], expected, spec.canary_tolerance)
        if not report.passed:
            raise DeployError(
                f"canary: {report.mismatches} of {report.rows} /{route} answers differ from the offline "
                f"predictions (max relative difference {report.max_abs_diff:.3g} > {spec.canary_tolerance}): "
                + "; ".join(report.examples))
        worst = report if worst is None or report.max_abs_diff > worst.max_abs_diff else worst
    assert worst is not None
    return worst


# ---------------------------------------------------------------- local target
def deploy_local(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, settings: Settings) -> DeployResult:
    """Canary a Bento on a free loopback port, then switch the configured port to it.

    A small front process owns the configured port and forwards each new connection to the
    backend named in a file. A candidate starts on a free port, must answer /readyz before
    the deadline and reproduce the offline predictions of the held-out rows; only then is
    the backend file switched and the old backend stopped. On any failure the candidate is
    stopped and the old backend keeps serving.

    Args:
        bento: the Bento to serve.
        spec: the `deploy` section (host, port, canary rows, tolerance, readiness deadline).
        packaging: the `packaging` section (auth token reference).
        settings: runtime locations; state lives in SLUICE_HOME/deploy/<project>/.

    Returns:
        A `DeployResult` with the URL now serving the new version.

    Raises:
        DeployError: corrupted artifact, port taken by another process, candidate not ready,
            or canary mismatch. Nothing that was serving is touched.
    """
    verify_model_artifact(bento, settings)
    folder = state_dir(settings, bento.project)
    folder.mkdir(parents=True, exist_ok=True)
    state = read_state(settings, bento.project)
    front_ok = state is not None and pid_alive(state.front_pid, "sluicegate.deploy") \
        and (state.host, state.port) == (spec.host, spec.port)
    if not front_ok and not port_is_free(spec.host, spec.port):
        raise DeployError(f"port {spec.port} on {spec.host} is in use by another process; stop it or set "
                          f"deploy.port to a free port")
    old_backend = state.backend_pid if state is not None and pid_alive(state.backend_pid, "bentoml") else None
    if front_ok and old_backend and state.bento_tag == bento.bento_tag:
        url = f"http://{spec.host}:{spec.port}"
        return DeployResult("local", bento.project, bento.version, bento.bento_tag, url,
                            message=f"{bento.project} v{bento.version} already serving at {url}; nothing to do")

    cand_port = free_port("127.0.0.1")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    log_file = folder / f"backend-v{bento.version}-{stamp}.log"
    cand_url = f"http://127.0.0.1:{cand_port}"
    proc = start_backend(bento, "127.0.0.1", cand_port, settings, log_file)
    try:
        wait_ready(proc, cand_url, spec.readiness_timeout_s, log_file)
        report = run_canary(cand_url, bento, spec, packaging, settings)
    except BaseException:
        stop_process_group(proc.pid)
        raise

    _write_backend(folder, cand_port)
    try:
        if front_ok:
            front_pid = state.front_pid  # type: ignore[union-attr]
        else:
            if state is not None and pid_alive(state.front_pid, "sluicegate.deploy"):
                stop_process_group(state.front_pid, "sluicegate.deploy")
            front_pid = start_front(spec.host, spec.port, folder, settings).pid
        url = f"http://{spec.host}:{spec.port}"
        wait_serving_version(url, bento.version, packaging, deadline_s=30)
    except BaseException:
        if old_backend is not None and state is not None:
            _write_backend(folder, state.backend_port)
        stop_process_group(proc.pid)
        raise
    new_state = ServingState(bento.project, bento.version, bento.bento_tag, spec.host, spec.port, front_pid,
                             proc.pid, cand_port, datetime.now(timezone.utc).isoformat())
    _write_state(settings, new_state)
    if old_backend is not None and old_backend != proc.pid:
        time.sleep(0.5)  # let requests already forwarded to the old backend finish
        stop_process_group(old_backend, "bentoml")
    was = f" (was v{state.version})" if state is not None and old_backend is not None else ""
    return DeployResult("local", bento.project, bento.version, bento.bento_tag, url, (str(folder / STATE_FILE),),
                        f"{bento.project} v{bento.version} serving at {url}{was}; canary {report.rows} rows "
                        f"matched (max difference {report.max_abs_diff:.2g})")


def wait_serving_version(url: str, version: str, packaging: PackagingConfig, deadline_s: float) -> None:
    """Wait until the front answers GET /metadata with `version`."""
    import httpx

    headers = auth_headers(packaging)
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        try:
            resp = httpx.get(f"{url}/metadata", headers=headers, timeout=5)
            if resp.status_code == 200 and str(resp.json().get("version")) == str(version):
                return
            last = f"{resp.status_code} {resp.text[:200]}"
        except (httpx.HTTPError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise DeployError(f"{url} did not switch to v{version} within {deadline_s:.0f}s (last answer: {last})")


def _write_backend(folder: Path, port: int) -> None:
    tmp = folder / f"{BACKEND_FILE}.tmp"
    tmp.write_text(str(port))
    os.replace(tmp, folder / BACKEND_FILE)


def start_front(host: str, port: int, folder: Path, settings: Settings) -> subprocess.Popen:
    """Start the front process on the configured port and wait until it accepts connections."""
    log_file = folder / "front.log"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluicegate.deploy", "front", host, str(port), str(folder / BACKEND_FILE)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise DeployError(f"the front process on {host}:{port} exited ({proc.returncode}){_tail(log_file)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    stop_process_group(proc.pid)
    raise DeployError(f"the front process did not listen on {host}:{port} within 15s")


def stop_local(settings: Settings, project: str) -> ServingState | None:
    """Stop a project's local deployment (front and backend) and forget its state."""
    state = read_state(settings, project)
    if state is None:
        return None
    stop_process_group(state.backend_pid, "bentoml")
    stop_process_group(state.front_pid, "sluicegate.deploy")
    (state_dir(settings, project) / STATE_FILE).unlink(missing_ok=True)
    return state


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
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                         b"content-length: 33\r\nconnection: close\r\n\r\n{\"error\": \"no backend available\"}")
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
    """Entry of the front process: `python -m sluicegate.deploy front HOST PORT BACKEND_FILE`."""
    host, port, backend_file = argv[0], int(argv[1]), Path(argv[2])
    try:
        import uvloop  # optional: a faster event loop when installed

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_front(host, port, backend_file))
    return 0


# ---------------------------------------------------------------- docker target
def docker_available() -> bool:
    """True only when a docker engine answers `docker info`."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def deploy_docker(bento: BentoResult, spec: DeployConfig, settings: Settings) -> DeployResult:
    """Build the container image with `bentoml containerize` when a docker engine answers; else say how.

    Raises:
        DeployError: the Bento has no Dockerfile, or containerize failed.
    """
    verify_model_artifact(bento, settings)
    dockerfile = Path(bento.dockerfile)
    if not dockerfile.exists():
        raise DeployError(f"{bento.bento_tag}: no Dockerfile at {dockerfile}; rebuild the bento")
    image = spec.image or bento.bento_tag
    command = f"BENTOML_HOME={settings.bentoml_home} bentoml containerize {bento.bento_tag} -t {image}"
    run = f"docker run --rm -p 127.0.0.1:{spec.port}:3000 -e BENTOML_HOST=0.0.0.0 {image}"
    if not docker_available():
        return DeployResult("docker", bento.project, bento.version, bento.bento_tag, None, (str(dockerfile),),
                            f"no docker engine answered `docker info`, so no image was built. Dockerfile: "
                            f"{dockerfile}. On a machine with docker run: {command} ; then: {run}")
    proc = subprocess.run([sys.executable, "-m", "bentoml", "containerize", bento.bento_tag, "-t", image],
                          env=_serve_env(settings), capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise DeployError(f"bentoml containerize {bento.bento_tag} failed ({proc.returncode}): "
                          f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    return DeployResult("docker", bento.project, bento.version, bento.bento_tag, None, (str(dockerfile),),
                        f"built image {image}; run it with: {run}")


# ---------------------------------------------------------------- kubernetes target
def kubernetes_manifests(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig) -> list[dict[str, Any]]:
    """Deployment (probes on /readyz and /livez), Service and HorizontalPodAutoscaler for the Bento's image."""
    name = safe_name(bento.project).replace("_", "-").replace(".", "-")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "sluicegate"}
    image = spec.image or bento.bento_tag
    env: list[dict[str, Any]] = [
        {"name": "BENTOML_HOST", "value": "0.0.0.0"},  # inside the pod; exposure is the Service's job
        {"name": "BENTOML_PORT", "value": "3000"},
        {"name": "SLUICE_HOME", "value": "/home/bentoml/sluice"},
    ]
    if packaging.auth_token is not None:
        env.append({"name": packaging.auth_token.env, "valueFrom": {
            "secretKeyRef": {"name": f"{name}-auth", "key": "token"}}})
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**labels, "sluicegate/model-version": bento.version}},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {**labels, "sluicegate/model-version": bento.version}},
                "spec": {"containers": [{
                    "name": "bento",
                    "image": image,
                    "args": ["serve"],
                    "ports": [{"name": "http", "containerPort": 3000}],
                    "env": env,
                    "readinessProbe": {**probe, "initialDelaySeconds": 5, "failureThreshold": 3},
                    "livenessProbe": {**probe, "httpGet": {"path": "/livez", "port": "http"},
                                      "initialDelaySeconds": 30, "failureThreshold": 6},
                    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                                  "limits": {"memory": "2Gi"}},
                }]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": labels,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.hpa.min_replicas,
            "maxReplicas": spec.hpa.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": spec.hpa.cpu_target_percent}}}],
        },
    }
    return [deployment, service, hpa]


def deploy_kubernetes(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, out_dir: Path,
                      settings: Settings) -> DeployResult:
    """Write the Kubernetes manifests of the Bento's image into `out_dir` (applying them is `kubectl`'s job)."""
    import yaml

    verify_model_artifact(bento, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    docs = kubernetes_manifests(bento, spec, packaging)
    files = []
    for doc in docs:
        path = out_dir / f"{doc['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(str(path))
    image = spec.image or bento.bento_tag
    return DeployResult("kubernetes", bento.project, bento.version, bento.bento_tag, None, tuple(files),
                        f"wrote {len(files)} manifests to {out_dir} for image {image}; build it with "
                        f"`bentoml containerize {bento.bento_tag} -t {image}`, push it, then `kubectl apply -f {out_dir}`")


def deploy_bento(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, settings: Settings,
                 out_dir: Path | None = None) -> DeployResult:
    """Deploy to the configured target (`local`, `docker` or `kubernetes`).

    Raises:
        DeployError: the deploy failed; whatever was serving keeps serving.
    """
    if spec.target == "local":
        return deploy_local(bento, spec, packaging, settings)
    if spec.target == "docker":
        return deploy_docker(bento, spec, settings)
    return deploy_kubernetes(bento, spec, packaging, out_dir or state_dir(settings, bento.project) / "kubernetes",
                             settings)


def restore_champion(tracker: Any, project: str, version: str | None) -> str | None:
    """Point `champion` back at `version` after a failed deploy; returns the version it left."""
    current = tracker.champion(project)
    if version is None or (current is not None and current.version == str(version)):
        return None
    tracker.set_alias(project, "champion", str(version))
    return current.version if current is not None else None


def release_version(tracker: Any, project: str, version: str | None, packaging: PackagingConfig,
                    spec: DeployConfig, task: str, settings: Settings, out_dir: Path | None = None,
                    restore_to: str | None = None) -> DeployResult:
    """Package a version (default: the champion) and deploy it; on failure move `champion` back.

    The CLI's counterpart of the training flow's release transaction.

    Args:
        restore_to: the version `champion` returns to if packaging or deploying fails
            (default: the version the local deployment is serving, if any).

    Raises:
        DeployError: the deploy failed; the old model keeps serving and the alias was restored.
    """
    from sluicegate.packaging import package_model

    if restore_to is None and spec.target == "local":
        state = read_state(settings, project)
        restore_to = state.version if state is not None else None
    try:
        bento = package_model(tracker, project, version, packaging, spec, task, settings)
        return deploy_bento(bento, spec, packaging, settings, out_dir)
    except DeployError as exc:
        left = restore_champion(tracker, project, restore_to)
        note = f"; champion moved back to v{restore_to} (from v{left})" if left else ""
        raise DeployError(f"{exc}{note}") from exc



def rollback_release(tracker: Any, project: str, packaging: PackagingConfig, spec: DeployConfig, task: str,
                     settings: Settings, out_dir: Path | None = None) -> tuple[str, str | None, DeployResult]:
    """Make `previous-champion` the champion again and deploy it; swap the two aliases.

    Returns:
        (version rolled back to, version rolled back from, the deploy result).

    Raises:
        RegistryError: there is no previous champion.
        DeployError: the redeploy failed; `champion` and `previous-champion` are as they were.
    """
    from sluicegate.errors import RegistryError, SluiceError
    from sluicegate.tracking import CHAMPION, PREVIOUS

    previous, current = tracker.alias(project, PREVIOUS), tracker.champion(project)
    if previous is None or (current is not None and previous.version == current.version):
        raise RegistryError(f"{project}: no previous champion to roll back to")
    tracker.set_alias(project, CHAMPION, previous.version)
    restore = current.version if current is not None else None
    if restore is not None:
        tracker.set_alias(project, PREVIOUS, restore)
    try:
        result = release_version(tracker, project, previous.version, packaging, spec, task, settings, out_dir,
                                 restore_to=restore)
    except SluiceError:
        tracker.set_alias(project, PREVIOUS, previous.version)
        raise
    return previous.version, restore, result

if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "front":
        sys.exit(run_front(sys.argv[2:]))
    print("usage: python -m sluicegate.deploy front HOST PORT BACKEND_FILE", file=sys.stderr)
    sys.exit(2)
