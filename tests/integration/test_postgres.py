"""The shared setup for real: a PostgreSQL server, a Prefect server and an MLflow server on it, a pipeline run against them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from sluicegate.deploy import free_port
from tests.helpers import PASSWORD, churn_frame, last_json, running_postgres, write_project

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def postgres():
    yield from running_postgres("prefect", "mlflow", "optuna")


class Server:
    """A server subprocess in its own process group, its output in a file, stopped by that group id."""

    def __init__(self, name: str, cmd: list[str], env: dict, health: str, log_dir: Path):
        self.name, self.health = name, health
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=log_dir,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"{self.name} not healthy at {self.health} after {START_TIMEOUT_S}s:\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # only the group this fixture started
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def _base_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SLUICE_"))}
    env.update({"SLUICE_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false",
                "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING"})
    return env


@pytest.fixture(scope="module")
def servers(postgres, tmp_path_factory):
    """A Prefect server and an MLflow tracking server, both on the PostgreSQL above, started side by side."""
    work = tmp_path_factory.mktemp("servers")
    prefect_port, mlflow_port = free_port(), free_port()
    prefect_env = {**_base_env(work / "prefect-server"),
                   "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url("prefect", "asyncpg"),
                   "PREFECT_SERVER_UI_ENABLED": "false"}
    mlflow_env = {**_base_env(work / "mlflow-server"), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    started = []
    try:
        started.append(Server("prefect", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                          "--port", str(prefect_port), "--no-ui"],
                              prefect_env, f"http://127.0.0.1:{prefect_port}/api/health", work))
        started.append(Server("mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri", postgres.url("mlflow"),
                                         "--artifacts-destination", str(work / "mlflow-artifacts"),
                                         "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
                              mlflow_env, f"http://127.0.0.1:{mlflow_port}/health", work))
        deadline = time.monotonic() + START_TIMEOUT_S
        for server in started:
            server.wait_healthy(deadline)
        yield {"prefect_api": f"http://127.0.0.1:{prefect_port}/api", "mlflow": f"http://127.0.0.1:{mlflow_port}",
               "artifacts": work / "mlflow-artifacts", "work": work}
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def client_env(servers, postgres, tmp_path_factory) -> dict:
    """What a laptop or worker sets to use the shared servers (artifacts proxied by the MLflow server)."""
    home = tmp_path_factory.mktemp("client")
    return {**_base_env(home / "home"), "PREFECT_API_URL": servers["prefect_api"],
            "MLFLOW_TRACKING_URI": servers["mlflow"],
            # no host: the client resolves it against MLFLOW_TRACKING_URI (a host is refused by the server)
            "SLUICE_ARTIFACT_ROOT": "mlflow-artifacts:///sluice",
            "SLUICE_OPTUNA_STORAGE": postgres.url("optuna")}


def _sluice(args: list[str], env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sluice"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_doctor_sees_every_shared_service_answer(client_env):
    out = _sluice(["doctor", "--json"], client_env, 120)
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    assert checks["prefect-api"]["status"] == "ok" and "answered 200" in checks["prefect-api"]["detail"]
    assert checks["mlflow-tracking"]["status"] == "ok"
    assert checks["optuna-storage"]["status"] == "ok" and "postgresql" in checks["optuna-storage"]["detail"]
    assert PASSWORD not in out.stdout  # URLs are printed with the password masked


def test_doctor_fails_when_a_configured_server_is_down(client_env):
    env = {**client_env, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    out = _sluice(["doctor"], env, 120)
    assert out.returncode == 10, out.stdout + out.stderr
    assert "FAIL prefect-api" in out.stdout and "prefect-api" in out.stderr


def test_training_against_prefect_and_mlflow_servers_on_postgres(client_env, servers, tmp_path):
    project = write_project(tmp_path, churn_frame(800, seed=3))
    out = _sluice(["run", str(project), "--reason", "postgres-test", "--json"], client_env, 300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = last_json(out.stdout)  # the flow's printed lines come first
    assert result["outcome"] == "promoted"

    # the champion, through the MLflow server only
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=servers["mlflow"], registry_uri=servers["mlflow"])
    champion = client.get_model_version_by_alias("churn", "champion")
    assert champion.version == str(result["version"])
    status = _sluice(["status", "churn", "--json"], client_env, 120)
    assert status.returncode == 0, status.stderr
    assert last_json(status.stdout)["champion"] == result["version"]
    # the model files went through the server's artifact proxy into its destination folder
    assert list(servers["artifacts"].rglob("MLmodel"))
    # so did the version's training snapshot and holdout: a drift check from another SLUICE_HOME (another
    # machine, none of the trainer's files) takes its reference from the server
    stored = {a.path for a in client.list_artifacts(champion.run_id, "data")}
    assert stored == {"data/snapshot.parquet", "data/holdout.parquet"}, stored
    batch = tmp_path / "batch.csv"
    churn_frame(300, seed=9).to_csv(batch, index=False)
    elsewhere = {**client_env, "SLUICE_HOME": str(tmp_path / "elsewhere")}
    checked = _sluice(["drift", str(project), "--current", str(batch), "--json"], elsewhere, 300)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert last_json(checked.stdout)["champion_version"] == str(result["version"])

    # the flow run and its task runs, through the Prefect server's REST API
    api = servers["prefect_api"]
    flows = httpx.post(f"{api}/flows/filter", json={"flows": {"name": {"any_": ["training-pipeline"]}}}).json()
    assert len(flows) == 1
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"id": {"any_": [flows[0]["id"]]}}}).json()
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    assert runs[0]["parameters"]["reason"] == "postgres-test"
    tasks = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [runs[0]["id"]]}}}).json()
    names = {t["name"].rsplit("-", 1)[0] for t in tasks}
    assert {"ingest-data", "validate-data", "train-model", "register-candidate"} <= names
    assert all(t["state_type"] == "COMPLETED" for t in tasks)


OPTIMIZE = textwrap.dedent("""
    import sys
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="shared", storage=optuna.storages.RDBStorage(sys.argv[1]),
                                direction="minimize", load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=int(sys.argv[2])))
    study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2, n_trials=int(sys.argv[3]))
""")


def test_one_optuna_study_on_postgres_from_two_processes_at_once(postgres):
    """Both create the study at once (load_if_exists) and write trials side by side, through both drivers."""
    import optuna

    postgres.create_databases("optuna_shared")
    urls = [postgres.url("optuna_shared"), postgres.url("optuna_shared", "psycopg2")]  # psycopg 3 and psycopg2
    # The coordinator creates the storage schema first, as the tuning step does: two processes
    # creating Optuna's tables on an empty database at the same instant race (duplicate CREATE TABLE).
    optuna.create_study(study_name="shared", storage=urls[1], direction="minimize", load_if_exists=True)
    procs = [subprocess.Popen([sys.executable, "-c", OPTIMIZE, url, str(seed), "15"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for seed, url in enumerate(urls)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=urls[0])
    assert len(study.trials) == 30
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert sorted(t.number for t in study.trials) == list(range(30))
