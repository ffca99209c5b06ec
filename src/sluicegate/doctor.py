"""`sluice doctor`: the runtime settings this process would use, and whether each configured service answers."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

from sluicegate.errors import ConfigError
from sluicegate.settings import Settings, load_settings, redact

OK, FAIL, SKIP = "ok", "fail", "skip"
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    """One setting: where it points (passwords masked), and whether that answered."""

    name: str
    target: str
    status: str
    detail: str
    env: str

    def line(self) -> str:
        mark = {OK: "ok  ", FAIL: "FAIL", SKIP: "--  "}[self.status]
        return f"{mark} {self.name:<16} {self.target}\n       {self.detail}  [{self.env}]"


@dataclass(frozen=True)
class DoctorReport:
    """Every check, and the overall verdict (False when something configured does not answer)."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def to_text(self) -> str:
        lines = [c.line() for c in self.checks]
        verdict = "all configured services answer" if self.ok else \
            f"{len(self.failed)} configured service(s) do not answer: {', '.join(c.name for c in self.failed)}"
        return "\n".join([*lines, "", verdict])


# ---------------------------------------------------------------- probes
def _writable(path: Path) -> tuple[bool, str]:
    """Whether `path` (existing, or to be created under its nearest existing folder) can be written."""
    if path.exists():
        ok = os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0))
        return ok, f"{'writable' if ok else 'not writable'}: {path}"
    probe = path.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    ok = os.access(probe, os.W_OK | os.X_OK)
    return ok, f"{'writable' if ok else 'not writable'} (will be created under {probe})"


def _path_check(name: str, path: Path, env: str, note: str) -> Check:
    ok, detail = _writable(path)
    return Check(name, str(path), OK if ok else FAIL, f"{note}; {detail}", env)


def http_health(url: str, headers: Mapping[str, str] | None = None, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """GET a health URL; any 2xx answer is healthy."""
    import httpx

    started = time.perf_counter()
    try:
        resp = httpx.get(url, headers=dict(headers or {}), timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        return False, f"no answer from {redact(url)}: {type(exc).__name__}: {exc}"
    ms = (time.perf_counter() - started) * 1000
    if 200 <= resp.status_code < 300:
        return True, f"{redact(url)} answered {resp.status_code} in {ms:.0f} ms"
    return False, f"{redact(url)} answered {resp.status_code}: {resp.text[:200]!r}"


def sql_ping(url: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """Connect with SQLAlchemy and run `SELECT 1` (server databases; SQLite is checked as a file)."""
    from sqlalchemy import create_engine, text

    kwargs: dict = {}
    if url.startswith(("postgresql", "postgres")):
        kwargs["connect_args"] = {"connect_timeout": int(max(1, timeout))}
    try:
        engine = create_engine(url, **kwargs)
    except Exception as exc:  # unknown dialect or a missing driver
        return False, f"cannot build an engine for {redact(url)}: {type(exc).__name__}: {exc}"
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True, f"connected ({engine.dialect.name}, driver {engine.dialect.driver})"
    except Exception as exc:
        return False, f"cannot connect: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    finally:
        engine.dispose()


def tcp_reach(host: str, port: int, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} accepts connections"
    except OSError as exc:
        return False, f"{host}:{port} refuses or does not answer: {exc}"


def dask_scheduler(address: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """Reach a Dask scheduler and count its workers (a scheduler with none cannot run anything)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if not parts.hostname or not parts.port:
        return False, f"not a scheduler address (want tcp://host:port): {address!r}"
    ok, detail = tcp_reach(parts.hostname, parts.port, timeout)
    if not ok:
        return ok, detail
    try:
        from distributed import Client
    except ImportError:
        return True, f"{detail} (install `distributed` to count workers)"
    try:
        with Client(address, timeout=timeout) as client:
            workers = client.scheduler_info(n_workers=-1).get("workers", {})
    except TypeError:  # older distributed: no n_workers argument
        with Client(address, timeout=timeout) as client:
            workers = client.scheduler_info().get("workers", {})
    except Exception as exc:
        return False, f"{detail}, but the Dask handshake failed: {type(exc).__name__}: {exc}"
    if not workers:
        return False, f"scheduler {address} answers but has no workers; start `dask worker {address}`"
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return True, f"scheduler answers: {len(workers)} worker(s), {threads} thread(s)"


# ---------------------------------------------------------------- checks
def _store_check(name: str, uri: str, env: str, sqlite_note: str) -> Check:
    scheme = uri.split(":", 1)[0].lower()
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):].split("?")[0]) if uri.startswith("sqlite:///") else None
        if path is None or not path.is_absolute():
            return Check(name, uri, FAIL, "use an absolute SQLite URI: sqlite:////abs/path.db", env)
        return _path_check(name, path, env, sqlite_note)
    if scheme in ("http", "https"):
        ok, detail = http_health(uri.rstrip("/") + "/health")
        return Check(name, redact(uri), OK if ok else FAIL, f"MLflow server: {detail}", env)
    if scheme.startswith(("postgresql", "postgres", "mysql", "mssql")):
        ok, detail = sql_ping(uri)
        return Check(name, redact(uri), OK if ok else FAIL, detail, env)
    if scheme in ("file", "") or uri.startswith("/"):
        return _path_check(name, Path(uri.removeprefix("file://")), env, "local folder")
    return Check(name, redact(uri), SKIP, f"not checked ({scheme} stores are not probed)", env)


def check_prefect(env: Mapping[str, str], settings: Settings) -> Check:
    url = env.get("PREFECT_API_URL")
    if not url:
        home = env.get("PREFECT_HOME") or str(settings.home / "prefect")
        return Check("prefect-api", "ephemeral", OK,
                     f"no PREFECT_API_URL: each `sluice run` starts a temporary local API (state in {home})",
                     "PREFECT_API_URL")
    headers = {"Authorization": f"Bearer {env['PREFECT_API_KEY']}"} if env.get("PREFECT_API_KEY") else {}
    ok, detail = http_health(url.rstrip("/") + "/health", headers)
    return Check("prefect-api", redact(url), OK if ok else FAIL, detail, "PREFECT_API_URL")


def check_artifacts(settings: Settings, env: Mapping[str, str]) -> Check:
    root = settings.artifact_root
    name, var = "artifact-root", "SLUICE_ARTIFACT_ROOT"
    if root.startswith("s3://"):
        endpoint = env.get("MLFLOW_S3_ENDPOINT_URL")
        if not endpoint:
            return Check(name, root, SKIP, "AWS S3 (not probed; credentials come from the AWS environment)", var)
        ok, detail = http_health(endpoint.rstrip("/") + "/minio/health/live")
        if not ok:  # not MinIO: any answer from the endpoint shows it is up
            parts = urlsplit(endpoint)
            ok, detail = tcp_reach(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        return Check(name, root, OK if ok else FAIL, f"S3 endpoint {endpoint}: {detail}", var)
    if root.startswith("mlflow-artifacts:"):
        return Check(name, root, OK, "proxied by the MLflow tracking server (checked above)", var)
    if "://" in root and not root.startswith("file://"):
        return Check(name, redact(root), SKIP, "not checked (remote store)", var)
    return _path_check(name, Path(root.removeprefix("file://")), var, "local folder")


def check_runner(settings: Settings, env: Mapping[str, str]) -> Check:
    var = "SLUICE_TASK_RUNNER, SLUICE_DASK_ADDRESS"
    # tasks on Dask workers report to the Prefect API of their own process: without a server,
    # each worker process starts a temporary one (~15 s) on the same local database
    caveat = "" if env.get("PREFECT_API_URL") else "; set PREFECT_API_URL too, or each Dask worker starts its own temporary Prefect API"
    if settings.task_runner == "threads":
        return Check("task-runner", "threads", OK, "trials and partitions run in threads of the flow's process", var)
    if settings.task_runner != "dask":
        return Check("task-runner", settings.task_runner, FAIL, "SLUICE_TASK_RUNNER must be threads or dask", var)
    if not settings.dask_address:
        try:
            import distributed  # noqa: F401
        except ImportError:
            return Check("task-runner", "dask (local cluster)", FAIL, "`distributed` is not installed", var)
        return Check("task-runner", "dask (local cluster)", OK,
                     "no SLUICE_DASK_ADDRESS: each flow run starts a local cluster of worker processes" + caveat, var)
    ok, detail = dask_scheduler(settings.dask_address)
    return Check("task-runner", f"dask {settings.dask_address}", OK if ok else FAIL, detail + (caveat if ok else ""), var)


def check_prediction_log(settings: Settings) -> Check:
    """Where served models log predictions and labels: one SQLite file per project, or a shared PostgreSQL."""
    from sluicegate.serving.logstore import URL_ENV, normalize_url

    if not settings.prediction_log_url:
        return _path_check("prediction-log", settings.home / "predictions", URL_ENV,
                           "a local SQLite file per project (not shared between hosts or containers)")
    try:
        url = normalize_url(settings.prediction_log_url)
    except ConfigError as exc:
        return Check("prediction-log", redact(settings.prediction_log_url), FAIL, exc.problems[0], URL_ENV)
    ok, detail = sql_ping("postgresql+psycopg://" + url.split("://", 1)[1])  # psycopg 3, the driver the log uses
    return Check("prediction-log", redact(url), OK if ok else FAIL,
                 detail + ("; shared by every server and flow run that has this URL" if ok else ""), URL_ENV)


def run_checks(env: Mapping[str, str] | None = None) -> DoctorReport:
    """Resolve the settings from `env` (default: the process environment) and probe each one.

    Probes read only: HTTP GETs of health routes, `SELECT 1`, TCP connects, and file
    permission checks (SQLite files are not created).
    """
    env = os.environ if env is None else env
    s = load_settings(env)
    checks: list[Callable[[], Check]] = [
        lambda: check_prefect(env, s),
        lambda: _store_check("mlflow-tracking", s.tracking_uri, "MLFLOW_TRACKING_URI", "local SQLite file"),
        lambda: (_store_check("mlflow-registry", s.registry_uri, "MLFLOW_REGISTRY_URI", "local SQLite file")
                 if s.registry_uri != s.tracking_uri else
                 Check("mlflow-registry", redact(s.registry_uri), OK, "same store as tracking", "MLFLOW_REGISTRY_URI")),
        lambda: check_artifacts(s, env),
        lambda: _store_check("optuna-storage", s.optuna_storage, "SLUICE_OPTUNA_STORAGE", "local SQLite file"),
        lambda: check_runner(s, env),
        lambda: _path_check("bentoml-home", s.bentoml_home, "BENTOML_HOME", "local model and bento store"),
        lambda: check_prediction_log(s),
    ]
    out = []
    for i, make in enumerate(checks):
        try:
            out.append(make())
        except Exception as exc:  # a probe must never hide the others
            out.append(Check(f"check-{i}", "-", FAIL, f"the probe itself failed: {type(exc).__name__}: {exc}", "-"))
    return DoctorReport(tuple(out))
