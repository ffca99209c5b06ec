"""Small real datasets and project files for tests (no downloads), and the helpers several test modules share:
a loopback webhook receiver, a hand-built churn registry, served-model probes."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import yaml

NUMERIC = ["tenure", "monthly_charges", "support_calls"]
CATEGORICAL = ["plan", "region"]
DATES = ["signup_date"]
FEATURES = NUMERIC + CATEGORICAL + DATES  # churn_frame's model inputs


def churn_frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """A synthetic customer-churn table: numeric, categorical and datetime columns, learnable signal."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    monthly = rng.normal(70, 20, n).round(2)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    region = rng.choice(["north", "south", "east", "west"], n)
    support_calls = rng.poisson(1.5, n)
    signup = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    logit = 1.2 - 0.06 * tenure + 0.02 * (monthly - 70) + 0.5 * support_calls + np.where(plan == "basic", 0.8, -0.3)
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({
        "customer_id": np.arange(n), "tenure": tenure, "monthly_charges": monthly, "plan": plan,
        "region": region, "support_calls": support_calls, "signup_date": signup.strftime("%Y-%m-%d"),
        "churned": churned,
    })


def churn_config(root: Path, data_file: str = "data/churn.csv", **changes) -> dict:
    cfg = {
        "project": "churn",
        "task": "classification",
        "seed": 7,
        "data": {"source": {"kind": "csv", "path": data_file}, "target": "churned", "id_column": "customer_id"},
        "validation": {
            "min_rows": 100,
            "max_nan_share": 0.1,
            "data_docs": False,
            "columns": {
                "tenure": {"type": "int", "min": 0, "max": 120},
                "monthly_charges": {"type": "float", "min": 0},
                "plan": {"allowed": ["basic", "plus", "pro"]},
                "region": {"allowed": ["north", "south", "east", "west", "central"], "severity": "warn"},
            },
        },
        "features": {
            "numeric": {"columns": ["tenure", "monthly_charges", "support_calls"]},
            "categorical": {"columns": ["plan", "region"]},
            "datetime": {"columns": ["signup_date"], "parts": ["month", "dayofweek"]},
        },
        "model": {"kind": "sklearn", "estimator": "logistic_regression", "params": {"C": 1.0, "max_iter": 500}},
        "evaluation": {"slices": ["plan"]},
        "gates": {"primary_metric": "roc_auc", "thresholds": {"roc_auc": {"min": 0.6}}, "min_improvement": 0.001},
    }
    for dotted, value in changes.items():
        node = cfg
        parts = dotted.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


def write_project(root: Path, frame: pd.DataFrame | None = None, cfg: dict | None = None, name: str = "churn.yaml") -> Path:
    """Lay out root/configs/<name> and root/data/churn.csv like a real checkout."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    if frame is not None:
        frame.to_csv(root / "data" / "churn.csv", index=False)
    path = root / "configs" / name
    path.write_text(yaml.safe_dump(cfg if cfg is not None else churn_config(root), sort_keys=False))
    return path


def flow_run_artifact(key: str, flow_run_id):
    """The artifact this flow run made (other tests in the session make artifacts with the same key)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return found[-1] if found else None


def write_log(home: Path, project: str, events: list, schema, labels: list[dict], now: float | None = None):
    """Record `events` with the real prediction-log writer, register the label schema, and store `labels`
    (feedback items) with the feedback core; returns the feedback result (nothing stored without labels)."""
    from sluicegate.serving.feedback import parse_feedback, record_feedback
    from sluicegate.serving.predlog import PredictionLog, log_store, register_label_schema

    store = log_store(project, home)  # SQLite in `home`, or PostgreSQL when SLUICE_PREDICTION_LOG_URL is set
    plog = PredictionLog(store)
    plog.record(events)
    plog.close()
    conn = store.connect()
    try:
        register_label_schema(conn, schema)
        if not labels:
            return None
        return record_feedback(conn, parse_feedback(labels, schema.id_column), current=schema, **({"now": now} if now is not None else {}))
    finally:
        conn.close()


def log_labelled_predictions(home: Path, project: str, frame: pd.DataFrame, target: str, *, start: float,
                             step_s: float = 60.0, labelled_at: float | None = None, labels: bool | int = True,
                             version: str = "1", id_column: str | None = "customer_id", prefix: str = "p") -> list[str]:
    """Log `frame`'s rows as live predictions with the real writer, then label them with the feedback core.

    Row i is predicted at `start + i * step_s`; the model "predicted" 0 for every row. `labels`:
    True labels every row with its `target` value, an int only the first that many, False none.
    Labels are received at `labelled_at` (default: one hour after the last prediction).
    """
    from sluicegate.serving.predlog import LabelSchema, PredictionEvent

    ids, events = [], []
    for i, row in enumerate(frame.to_dict(orient="records")):
        pid = f"{prefix}{i}"
        inputs = {k: v for k, v in row.items() if k != target}
        events.append(PredictionEvent(start + i * step_s, project, version, "predict", "model", inputs, 0, None, pid,
                                      "live", str(row[id_column]) if id_column and id_column in row else None))
        ids.append(pid)
    n = len(ids) if labels is True else int(labels)
    body = [{"prediction_id": pid, "label": int(v)} for pid, v in zip(ids[:n], frame[target].iloc[:n])]
    when = labelled_at if labelled_at is not None else start + len(ids) * step_s + 3600
    result = write_log(home, project, events, LabelSchema("classification", target, (0, 1), id_column, version), body, when)
    if n:
        assert result.stored == n, result.summary()
    return ids


def last_json(stdout: str) -> dict:
    """The JSON object a `--json` command printed last (the flow's own lines come first)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def task_states(flow_run_id) -> dict[str, str]:
    """{task name without its suffix: state name} of one flow run's task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    # task run states reach the API through Prefect's event recorder, a moment after the flow
    # returns (under load a run was read with no state yet): wait until every run has one
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if all(r.state is not None for r in runs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


@contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    """os.environ[name] = value inside the block; afterwards the old value, or none if it had none. For
    module-scoped fixtures, where monkeypatch (function-scoped) cannot be used."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def tiny_regressor():
    """(a linear regression, its 20 training rows): the smallest model worth registering."""
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    return LinearRegression().fit(X, 2 * X.a + X.b), X


def register_tiny(tracker, tags: dict | None = None) -> str:
    """Register tiny_regressor() as the next version of project "p" (test_r2 0.9); its version."""
    model, X = tiny_regressor()
    return tracker.register_candidate("p", model, X.head(2), {}, {"test_r2": 0.9}, tags or {}).version


# ---------------------------------------------------------------- a loopback webhook receiver
class Webhook:
    """What a loopback receiver got: `received`, each POSTed JSON body in order; `posts`, (path, body)."""

    def __init__(self):
        self.url = ""  # http://127.0.0.1:PORT, no path: any path is accepted
        self.received: list = []
        self.posts: list[tuple[str, object]] = []

    def events(self) -> list[str]:
        """The event names received since the last call (bodies as the emitter sends them)."""
        names = [m["event"] for m in self.received]
        self.received.clear()
        return names


@contextmanager
def loopback_webhook() -> Iterator[Webhook]:
    """An HTTP server on 127.0.0.1 that answers every POST 204 and records its JSON body, for the block."""
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            hook.received.append(body)
            hook.posts.append((self.path, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- churn models registered and served by hand
def churn_pipeline(frame: pd.DataFrame, c: float = 1.0, guard: bool = False):
    """The product's feature pipeline and a logistic regression, fitted on churn_frame's FEATURES.

    guard: first a step that raises on tests.faults.sentinel.SENTINEL (a model version that fails on one input).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from sluicegate.config import FeaturesConfig
    from sluicegate.features import FeatureColumns, FeaturePipeline, build_preprocessor

    cols = FeatureColumns(tuple(NUMERIC), tuple(CATEGORICAL), tuple(DATES))
    spec = FeaturesConfig(numeric={"columns": NUMERIC}, categorical={"columns": CATEGORICAL},
                          datetime={"columns": DATES, "parts": ["month", "dayofweek"]})
    X = frame[FEATURES]
    steps = []
    if guard:
        from tests.faults.sentinel import FailOnSentinel

        steps.append(("guard", FailOnSentinel()))
    steps += [("features", FeaturePipeline(build_preprocessor(spec, cols).fit(X), cols)),
              ("model", LogisticRegression(C=c, max_iter=500))]
    return Pipeline(steps).fit(X, frame["churned"])


class Registry:
    """Registry state built directly with the Tracker: versions of a churn model, promoted by hand."""

    def __init__(self, home: Path):
        from sluicegate.settings import load_settings
        from sluicegate.tracking import Tracker

        self.settings = load_settings()
        self.tracker = Tracker(self.settings)
        self.frame = churn_frame(600, seed=3)
        snap = home / "data" / "churn.parquet"
        snap.parent.mkdir(parents=True, exist_ok=True)
        self.frame.to_parquet(snap, index=False)
        self.snapshot = str(snap)
        # the project YAML the versions were "trained" with: packaging reads data.id_column from it
        self.config_path = str(write_project(home.parent / "project", self.frame))
        self.models: dict[str, object] = {}

    def register(self, c: float, guard: bool = False) -> str:
        """Register a churn_pipeline(C=c) as the next version; guard: one that raises on SENTINEL."""
        model = churn_pipeline(self.frame, c, guard)
        tags = {"sluice.task": "classification", "sluice.target": "churned", "sluice.data_snapshot": self.snapshot,
                "sluice.data_fingerprint": "fp-test", "sluice.git_sha": "test", "sluice.config_path": self.config_path}
        rec = self.tracker.register_candidate("churn", model, self.frame[FEATURES].head(3), {"C": c},
                                         {"test_roc_auc": 0.7}, tags)
        self.models[rec.version] = model
        return rec.version

    def promote(self, version: str) -> None:
        current = self.tracker.champion("churn")
        self.tracker.promote("churn", version, current.version if current else None)

    def champion(self) -> str:
        return self.tracker.champion("churn").version


def deploy_spec(port: int, **changes):
    """The deploy section the registry tests release with: a short canary, a generous readiness timeout."""
    from sluicegate.config import DeployConfig

    return DeployConfig(port=port, canary_rows=10, readiness_timeout_s=120, **changes)


def release(registry: Registry, port: int, version: str | None = None, **changes):
    """`release_version` of `version` (None: the champion) of the registry's churn model on `port`."""
    from sluicegate.config import PackagingConfig
    from sluicegate.deploy.release import release_version

    return release_version(registry.tracker, "churn", version, PackagingConfig(), deploy_spec(port, **changes),
                           "classification", registry.settings)


def feature_records(frame: pd.DataFrame, n: int) -> list[dict]:
    """The last n rows' FEATURES as the JSON records /predict takes."""
    return json.loads(frame[FEATURES].tail(n).to_json(orient="records"))


def served_version(url: str) -> str:
    """The model version the server at `url` answers with."""
    import httpx

    return str(httpx.get(f"{url}/metadata", timeout=10).json()["version"])


def wait_for_log(ids: set[str], home: Path | None = None, traffic=("live",), timeout_s: float = 15) -> pd.DataFrame:
    """The churn prediction log once it holds every id in `ids` (logging is asynchronous), or as it is at timeout_s."""
    from sluicegate.serving.predlog import read_prediction_log

    deadline = time.monotonic() + timeout_s
    while True:
        log = read_prediction_log("churn", home, traffic=traffic)
        if ids <= set(log["prediction_id"]) or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def drift_inputs(n: int, seed: int, plan_effect: float = 0.5) -> pd.DataFrame:
    """Seven numeric inputs and two categories; the target `y` depends mostly on x0, then x1 and plan
    (the drift tests' data, and benchmarks/drift.py's with a stronger plan effect)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(0, 1, n) for i in range(7)})
    frame["plan"] = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    frame["region"] = rng.choice(["north", "south", "east", "west"], n)
    logit = 2.0 * frame.x0 + 0.7 * frame.x1 + np.where(frame.plan == "basic", plan_effect, -plan_effect)
    frame["y"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


# ---------------------------------------------------------------- a real PostgreSQL server
PASSWORD = "sluice-test-only"


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def pg_unavailable(reason: str):
    """Skip (fail in CI) a test that needs PostgreSQL's server binaries."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run these tests (.ci/run installs PostgreSQL with apt-get)")
    pytest.skip(f"{reason} (install it with `apt-get install -y postgresql`; CI installs it)")


def running_postgres(*databases: str):
    """A started throwaway `Postgres` holding `databases`, stopped afterwards (the body of a pytest fixture:
    `yield from running_postgres("a", "b")`); skipped (failed in CI) without PostgreSQL's binaries."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pg_unavailable("no PostgreSQL server binaries (initdb, pg_ctl) found")
    server = Postgres(bin_dir)
    try:
        server.start()
        server.create_databases(*databases)
        yield server
    except subprocess.CalledProcessError as exc:
        log = server.dir / "server.log"
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r} {log.read_text() if log.exists() else ''}") from exc
    finally:
        server.stop()


class Postgres:
    """A throwaway PostgreSQL cluster in a temporary folder on a free loopback port."""

    def __init__(self, bin_dir: Path, port: int | None = None):
        from sluicegate.deploy import free_port

        self.bin = bin_dir
        # SLUICE_TEST_PG_PORT: a fixed port where a machine's shared loopback ports are handed out by range
        self.port = port or int(os.environ.get("SLUICE_TEST_PG_PORT") or 0) or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
        self.data = self.dir / "data"
        self.user = "sluice"
        # initdb refuses to run as root: run the server as the `postgres` account the package creates
        self.run_as = None
        if os.geteuid() == 0:
            try:
                self.run_as = pwd.getpwnam("postgres")
            except KeyError:
                pg_unavailable("running as root and there is no `postgres` account to run the server")
            os.chown(self.dir, self.run_as.pw_uid, self.run_as.pw_gid)

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.run_as else cmd

    def start(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD)
        if self.run_as:
            os.chown(pwfile, self.run_as.pw_uid, self.run_as.pw_gid)
        subprocess.run(self._cmd("initdb", "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
                                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"),
                       check=True, capture_output=True, timeout=120)
        self.restart()

    def url(self, db: str, driver: str = "") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def create_databases(self, *names: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for name in names:
                conn.execute(f'CREATE DATABASE "{name}"')

    def halt(self) -> None:
        """Stop the server and keep its data (`restart` brings it back on the same port)."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"),
                           capture_output=True, timeout=60)

    def restart(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off -c max_connections=200"
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "server.log"),
                                 "-w", "-t", "60", "start"), check=True, capture_output=True, timeout=90)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)
