"""The compose stack for real, under podman: Postgres, the Prefect and MLflow servers and a Prefect worker in containers.

From the host, `sluice run` trains against the stack's published loopback ports; the champion is
deployed from the stack's registry into a model container (`deploy.target: container`) and
answers as offline, its predictions and labels going to the stack's Postgres, where `sluice drift` in the worker
container reads them; then a deployment registered from inside the worker container runs there,
pulled from the work pool; `down` leaves no container, pod or network. Needs podman, podman-compose and the images of infra/podman/setup.sh
(.ci/run runs it, so CI always has them); elsewhere it skips with one line saying so.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sluicegate.deploy import free_port
from tests.helpers import last_json
from tests.journey import TERMINAL

pytestmark = [pytest.mark.containers, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONF = ROOT / "infra" / "podman" / "containers.conf"
PROJECT = f"sluicetest{os.getpid()}"
RUN_TIMEOUT_S = 900


def _podman(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env={**os.environ, "CONTAINERS_CONF": str(CONF)},
                          capture_output=True, text=True, timeout=timeout)


def _port() -> int:
    """A free loopback port: from SLUICE_TEST_PORT_BASE upwards where a machine hands ports out by range."""
    base = int(os.environ.get("SLUICE_TEST_PORT_BASE") or 0)
    if not base:
        return free_port()
    port = next((p for p in range(base + _port.taken, base + 100) if _port_free(p)), None)
    assert port is not None, f"no free port in {base}-{base + 99}"
    _port.taken = port - base + 1
    return port


_port.taken = 0  # type: ignore[attr-defined]


def _missing() -> str | None:
    """Why the stack cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed"
    from infra.podman.stack import StackError, podman_compose

    try:
        podman_compose()
    except StackError:
        return "podman-compose is not installed"
    for image in ("localhost/sluicegate-python:lock", "localhost/sluicegate-postgres:15"):
        if _podman("image", "exists", image).returncode != 0:
            return f"image {image} is missing"
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the container tests (.ci/run runs infra/podman/setup.sh)")
        pytest.skip(f"{reason} (run infra/podman/setup.sh; CI does)")
    from infra.podman.stack import Stack

    # the worker image from this checkout (layer cache: seconds when only sources changed)
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    built = _podman("build", "--pull=never", "--network=host", "-q", "-f", str(ROOT / "infra" / "Dockerfile.worker"),
                    "--ignorefile", str(ROOT / "infra" / "Dockerfile.worker.dockerignore"),
                    "-t", f"localhost/sluicegate-worker:{version}", str(ROOT), timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]

    work = tmp_path_factory.mktemp("stack")
    ports = {"PREFECT_PORT": _port(), "MLFLOW_PORT": _port()}
    env_lines = (ROOT / "infra" / ".env.example").read_text().splitlines()
    values = {line.partition("=")[0]: line.partition("=")[2] for line in env_lines if "=" in line and not line.startswith("#")}
    values.update({k: str(v) for k, v in ports.items()}, SLUICE_VERSION=version,
                  POSTGRES_PASSWORD=secrets.token_hex(12), MINIO_ROOT_PASSWORD=secrets.token_hex(12),
                  MINIO_CONSOLE_PORT=str(_port()), DASK_DASHBOARD_PORT=str(_port()), MODEL_PORT=str(_port()),
                  MLFLOW_ALLOWED_HOSTS=f"mlflow,mlflow:5000,127.0.0.1,127.0.0.1:{ports['MLFLOW_PORT']}")
    env_file = work / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    s = Stack(PROJECT, env_file, [])
    t0 = time.monotonic()
    try:
        s.up()
        yield {"stack": s, "up_s": time.monotonic() - t0, "work": work, "network": f"{PROJECT}_default",
               "prediction_log_url": f"postgresql://{values['POSTGRES_USER']}:{values['POSTGRES_PASSWORD']}@postgres:5432/"
                                     "predictions",
               "prefect_api": f"http://127.0.0.1:{ports['PREFECT_PORT']}/api",
               "mlflow": f"http://127.0.0.1:{ports['MLFLOW_PORT']}"}
    finally:
        s.down(volumes=True)  # a second time after the test of `down` costs nothing


def _client_env(stack, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SLUICE_"))}
    env.update({"SLUICE_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
                "PREFECT_API_URL": stack["prefect_api"], "MLFLOW_TRACKING_URI": stack["mlflow"],
                "SLUICE_ARTIFACT_ROOT": "mlflow-artifacts:///sluice",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false",
                "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING"})
    return env


def _container(stack, service: str) -> str:
    names = stack["stack"].containers(service)
    assert len(names) == 1, names
    return names[0]


def test_sluice_run_from_the_host_against_the_stack(stack, tmp_path):
    env = _client_env(stack, tmp_path / "home")
    out = subprocess.run([str(BIN / "sluice"), "run", "configs/breast_cancer.yaml", "--set", "deploy.enabled=false",
                          "--reason", "container-e2e", "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = last_json(out.stdout)
    assert result["outcome"] == "promoted"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=stack["mlflow"], registry_uri=stack["mlflow"])
    assert client.get_model_version_by_alias("breast_cancer", "champion").version == str(result["version"])
    # the model files went through the server's artifact proxy onto the MLflow container's volume
    found = _podman("exec", _container(stack, "mlflow"), "find", "/data/mlflow-artifacts", "-name", "MLmodel")
    assert found.returncode == 0 and "MLmodel" in found.stdout, found.stdout + found.stderr
    runs = httpx.post(f"{stack['prefect_api']}/flow_runs/filter",
                      json={}, timeout=30).json()
    assert [r["state_type"] for r in runs if r["parameters"].get("reason") == "container-e2e"] == ["COMPLETED"]


def test_the_champion_serves_from_a_model_container(stack, tmp_path):
    """Packaged from the stack's registry (artifacts through the MLflow server), run by podman, switched
    behind the front; answers equal the registry model's offline predictions; the worker container reads
    them from the stack's Postgres (what its drift check reads); `sluice stop` removes it."""
    home = tmp_path / "home"
    # the model container joins the stack's network too, where `postgres` resolves; the URL goes in by name
    env = {**_client_env(stack, home), "SLUICE_CONTAINER_NETWORK": stack["network"],
           "SLUICE_PREDICTION_LOG_URL": stack["prediction_log_url"]}
    port = _port() if os.environ.get("SLUICE_TEST_PORT_BASE") else next((p for p in range(3500, 3600) if _port_free(p)),
                                                                         None)
    if port is None:
        pytest.skip("no free port in 3500-3599")
    sluice = [str(BIN / "sluice")]
    try:
        out = subprocess.run([*sluice, "deploy", "configs/breast_cancer.yaml", "--target", "container", "--port",
                              str(port)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert re.search(r"from container sluicegate-breast_cancer-v\d+-\w+ \(image localhost/sluicegate-"
                         r"breast_cancer:v\d+-\w+\)", out.stdout), out.stdout

        from mlflow.tracking import MlflowClient

        from sluicegate.data import load_bundled

        client = MlflowClient(tracking_uri=stack["mlflow"], registry_uri=stack["mlflow"])
        champion = client.get_model_version_by_alias("breast_cancer", "champion")
        import mlflow.sklearn

        # set_tracking_uri also sets MLFLOW_TRACKING_URI in this process: put both back, or every later
        # test module in this session talks to the stack's (by then stopped) MLflow server
        before, before_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(stack["mlflow"])
        try:
            model = mlflow.sklearn.load_model(f"models:/breast_cancer/{champion.version}")
        finally:
            mlflow.set_tracking_uri(before)
            if before_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before_env
        labelled = load_bundled("sklearn.breast_cancer").head(120)  # past the drift check's min_rows (100)
        frame = labelled.drop(columns=["target"])
        rows = json.loads(frame.to_json(orient="records"))
        answers = httpx.post(f"http://127.0.0.1:{port}/predict", json=rows, timeout=60).json()
        assert [a["prediction"] for a in answers] == model.predict(frame).tolist()
        assert {a["model_version"] for a in answers} == {str(champion.version)}
        # the same rows for probabilities (the live roc_auc needs them), labelled through the container
        proba = httpx.post(f"http://127.0.0.1:{port}/predict_proba", json=rows, timeout=60).json()
        proba_ids = [a["prediction_id"] for a in proba]
        fed = httpx.post(f"http://127.0.0.1:{port}/feedback", timeout=60,
                         json=[{"prediction_id": i, "label": int(y)} for i, y in zip(proba_ids, labelled["target"])])
        assert fed.status_code == 200 and fed.json()["summary"]["accepted"] == len(proba_ids), fed.text
        ids = [a["prediction_id"] for a in answers] + proba_ids

        # the drift check, on the worker container, reads what this container logged: the stack's Postgres
        worker = _container(stack, "prefect-worker")
        read = ("import json; from sluicegate.serving.predlog import read_prediction_log; "
                "print(json.dumps(list(read_prediction_log('breast_cancer')['prediction_id'])))")
        deadline, logged = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            out_log = _podman("exec", worker, "python", "-c", read, timeout=120)
            assert out_log.returncode == 0, out_log.stderr[-2000:]
            logged = json.loads(out_log.stdout.strip().splitlines()[-1])
            if set(ids) <= set(logged):
                break
            time.sleep(2)
        assert set(ids) <= set(logged), (ids, logged)
        assert not (home / "predictions" / "breast_cancer" / "predictions.sqlite").exists()
        # The champion was trained on the host: its training snapshot (the drift check's reference) and
        # holdout are files there, and copies went with the version to the stack's MLflow server
        snapshot = champion.tags["sluice.data_snapshot"]
        assert _podman("exec", worker, "test", "-e", snapshot).returncode != 0  # not a file of the worker
        checked = _podman("exec", worker, "sluice", "drift", "configs/breast_cancer.yaml", "--json", timeout=600)
        assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
        result = last_json(checked.stdout)
        assert result["champion_version"] == str(champion.version)
        assert result["current_rows"] == len(ids) and result["sufficient"], result["text"]
        assert result["performance_rows"] == len(proba_ids), result["text"]  # the labels sent to the model container
    finally:
        stopped = subprocess.run([*sluice, "stop", "configs/breast_cancer.yaml"], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    left = _podman("ps", "-a", "--filter", f"label=sluicegate.home={home.resolve()}", "--format", "{{.Names}}")
    assert left.stdout.split() == []
    for image in re.findall(r"\(image (localhost/sluicegate-breast_cancer:[\w.-]+)\)", out.stdout):
        _podman("rmi", image)  # never -f: an image another session's container uses stays


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_deployment_runs_on_the_worker_container(stack):
    worker = _container(stack, "prefect-worker")
    applied = _podman("exec", worker, "sluice", "deployments", "apply", "--pool", "sluicegate",
                      "configs/breast_cancer.yaml", timeout=600)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    assert "registered 3 deployments on work pool 'sluicegate'" in applied.stdout
    api = stack["prefect_api"]
    # only the run this test starts: the scheduled drift check would compete for the two cores
    for dep in httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json():
        if dep["name"] != "breast_cancer-training":
            assert httpx.patch(f"{api}/deployments/{dep['id']}", json={"paused": True}, timeout=30).status_code == 204

    env = _client_env(stack, stack["work"] / "client")
    run = _run_deployment(env, api, "training-pipeline/breast_cancer-training",
                          {"overrides": ["deploy.enabled=false"], "reason": "worker-e2e"})
    run_id = run["id"]
    worker_log = _podman("logs", "--tail", "60", worker)
    worker_log = worker_log.stdout + worker_log.stderr
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}: {run['state']}\n{worker_log}"
    # it ran from the pool, with the parameters given, submitted by the worker in that container
    assert run["work_pool_name"] == "sluicegate" and run["parameters"]["reason"] == "worker-e2e"
    worker_name = re.search(r"Worker '([^']+)' started", worker_log).group(1)
    run_logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200},
                          timeout=30).json()
    assert any(f"Worker '{worker_name}' submitting flow run '{run_id}'" in log["message"] for log in run_logs)

    # the drift-check deployment (what its schedule starts), run by the worker from the pool: it reads the
    # predictions and labels the model container logged to the stack's Postgres, and the champion's
    # training snapshot through the MLflow server (the champion was trained on the host)
    drift = next(d for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
                 if d["name"] == "breast_cancer-drift-check")
    assert httpx.patch(f"{api}/deployments/{drift['id']}", json={"paused": False}, timeout=30).status_code == 204
    run = _run_deployment(env, api, "drift-check/breast_cancer-drift-check")
    drift_run = run["id"]
    logs_until = time.monotonic() + 60  # a run's log lines reach the server in batches, after its state
    while True:
        logs = [log["message"] for log in httpx.post(
            f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [drift_run]}}, "limit": 200},
            timeout=30).json()]
        if any("logged predictions of v" in m for m in logs) or time.monotonic() > logs_until:
            break
        time.sleep(2)
    assert run["state_type"] == "COMPLETED", f"{run['state_type']}: {run['state']}\n" + "\n".join(logs[-20:])
    assert run["work_pool_name"] == "sluicegate"
    windows = [m for m in logs if "logged predictions of v" in m]
    assert windows and re.search(r"\((\d+) rows\)", windows[0]) and \
        int(re.search(r"\((\d+) rows\)", windows[0]).group(1)) >= 240, "\n".join(logs[-20:])


def _run_deployment(env: dict, api: str, name: str, params: dict | None = None) -> dict:
    """Start a run of deployment `name` from the host; the flow run once it ended (or as it is after RUN_TIMEOUT_S)."""
    cmd = [str(BIN / "prefect"), "deployment", "run", name, *(["--params", json.dumps(params)] if params else [])]
    started = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", started.stdout).group(1)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
        if run["state_type"] in TERMINAL or time.monotonic() > deadline:
            return run
        time.sleep(3)


def test_down_leaves_nothing_running(stack):
    left = stack["stack"].down(volumes=True)
    assert left == []
    assert _podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "-q").stdout.strip() == ""
    volumes = _podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [v for v in volumes if v.startswith(f"{PROJECT}_")]
