"""The closed loop against a real Prefect server started here: drift event -> retraining deployment.

The server, the `serve` process that runs the deployments, and the processes that emit events
are real subprocesses on loopback; the test reads state back through the server's REST API
and MLflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from sluicegate.deploy import free_port as _free_port
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import churn_config, churn_frame, env_var, write_project
from tests.journey import TERMINAL, stop_group, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_harness):
    """Two projects with champions, a Prefect server, and a serve process running their deployments."""
    base = tmp_path_factory.mktemp("loop")
    home = base / ".sluice"
    with env_var("SLUICE_HOME", str(home)):
        configs = {}
        for name, cooldown in (("loop", 0.0), ("storm", 30.0)):
            cfg = churn_config(base, data_file=f"data/{name}.csv")
            cfg["project"] = name
            cfg["monitoring"] = {"consecutive": 1, "cooldown_minutes": cooldown, "min_rows": 100, "window_rows": 300}
            if name == "loop":  # the loop project serves its champion, so drift is measured on real traffic
                cfg["deploy"] = {"enabled": True, "port": _free_port(), "readiness_timeout_s": 180}
                cfg["packaging"] = {"max_latency_ms": 2000}
            path = write_project(base, None, cfg, name=f"{name}.yaml")
            churn_frame(900, seed=11).to_csv(base / "data" / f"{name}.csv", index=False)
            configs[name] = path
        from flows.training import training_pipeline

        for path in configs.values():  # champions, trained in-process under the session harness
            assert training_pipeline(str(path), None, "setup").outcome == "promoted"

        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({"SLUICE_HOME": str(home), "PREFECT_HOME": str(base / "prefect-client"),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO",
                    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])})
        server_env = {**env, "PREFECT_HOME": str(base / "prefect-server")}
        logs = base / "logs"
        logs.mkdir()
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=server_env, stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        procs = [server]
        try:
            wait_for(lambda: _get(f"{url}/health"), 180, what="the Prefect server")
            client_env = {**env, "PREFECT_API_URL": url}
            serve_env = {**client_env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}  # pick triggered runs up quickly
            serve = subprocess.Popen([sys.executable, str(ROOT / "deployments" / "build.py"), "serve", *map(str, configs.values())],
                                     cwd=ROOT, env=serve_env, stdout=open(logs / "serve.log", "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
            procs.append(serve)
            names = {f"{p}-{kind}" for p in configs for kind in ("training", "drift-check", "retraining")}
            wait_for(lambda: names <= {d["name"] for d in _post(f"{url}/deployments/filter", {})}, 240, what="deployments")
            yield {"url": url, "env": client_env, "configs": configs, "base": base, "logs": logs, "home": home}
        finally:
            from sluicegate.deploy import stop_local

            stop_local(load_settings(), "loop")
            for proc in reversed(procs):
                stop_group(proc)


def _get(url):
    try:
        r = httpx.get(url, timeout=5)
        return r.status_code == 200 and r.json()
    except httpx.HTTPError:
        return None


def _post(url, body):
    r = httpx.post(url, json=body, timeout=15)
    r.raise_for_status()
    return r.json()


def _runs(url: str, deployment: str) -> list[dict]:
    deps = [d for d in _post(f"{url}/deployments/filter", {}) if d["name"] == deployment]
    return _post(f"{url}/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deps[0]["id"]]}}})


def _training_subflows(url: str, project: str, after: float) -> list[dict]:
    runs = _post(f"{url}/flow_runs/filter", {"flows": {"name": {"any_": ["training-pipeline"]}}})
    return [r for r in runs if project in str(r["parameters"].get("config_path"))
            and pd.Timestamp(r["created"]).timestamp() >= after]


def _python(env: dict, code: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_deployments_have_schedules_and_a_drift_trigger(loop):
    deps = {d["name"]: d for d in _post(f"{loop['url']}/deployments/filter", {})}
    retrain = deps["storm-retraining"]
    assert retrain["concurrency_limit"] == 1 or retrain.get("global_concurrency_limit")
    automations = _post(f"{loop['url']}/automations/filter", {})
    triggers = [a for a in automations if a["name"] == "storm-on-drift"]
    assert triggers and "sluicegate.drift.detected" in triggers[0]["trigger"]["expect"]


def test_drifted_traffic_starts_retraining_that_ends_in_a_verdict(loop):
    """Serve the champion, send drifted traffic through it, check drift on the prediction log."""
    base, url = loop["base"], loop["url"]
    port = yaml.safe_load(loop["configs"]["loop"].read_text())["deploy"]["port"]
    served = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{served}/metadata", timeout=10).json()["version"] == "1"
    fresh = churn_frame(900, seed=21)
    fresh = fresh.assign(tenure=(fresh.tenure + 30).clip(upper=119), monthly_charges=fresh.monthly_charges * 1.4,
                         plan=fresh.plan.where(fresh.index % 5 == 0, "basic"))
    fresh.to_csv(base / "data" / "loop.csv", index=False)  # new labelled data has arrived too
    features = ["tenure", "monthly_charges", "support_calls", "plan", "region", "signup_date"]
    records = fresh[features].head(300).to_dict(orient="records")
    for i in range(0, len(records), 50):
        answer = httpx.post(f"{served}/predict", json=records[i:i + 50], timeout=60)
        assert answer.status_code == 200, answer.text
    started = time.time()
    out = _python(loop["env"], f"""
        import json, time
        from sluicegate.serving.predlog import read_prediction_log
        for _ in range(60):  # the service writes its log off the request path
            if len(read_prediction_log("loop")) >= 300:
                break
            time.sleep(1)
        from flows.monitoring import drift_check
        print("RESULT", json.dumps(drift_check({str(loop['configs']['loop'])!r}), default=str))
    """)
    result = json.loads(out.split("RESULT", 1)[1])
    assert result["current_rows"] == 300 and result["window"].startswith("last 300 logged predictions"), result
    assert result["drifted"] and result["alert"], result
    assert "tenure" in result["drifted_columns"]
    runs = wait_for(lambda: [r for r in _runs(url, "loop-retraining") if r["state_type"] in TERMINAL], 600, 5,
                    what="the retraining run to finish")
    assert runs[0]["state_type"] == "COMPLETED", runs[0]["state"]
    assert runs[0]["parameters"]["reason"].startswith("drift:")
    assert len(_training_subflows(url, "loop", started)) == 1
    tracker = Tracker(load_settings())
    latest = tracker.versions("loop")[-1]
    assert latest.version == "2" and latest.tags["sluice.reason"].startswith("retrain: drift:")
    verdict = latest.tags["sluice.verdict"]
    assert verdict in ("promoted", "rejected")  # a new champion, or a recorded rejection
    champion = tracker.champion("loop").version
    assert champion == ("2" if verdict == "promoted" else "1")
    assert httpx.get(f"{served}/metadata", timeout=10).json()["version"] == champion  # and it is what serves


def test_alert_storm_starts_exactly_one_retraining(loop):
    url = loop["url"]
    started = time.time()
    _python(loop["env"], """
        import time
        from prefect.events import emit_event
        from prefect.events.worker import EventsWorker
        for i in range(50):
            emit_event("sluicegate.drift.detected", resource={"prefect.resource.id": "sluicegate.project.storm"},
                       payload={"reason": f"drift: storm {i}", "drift_share": 0.9})
        EventsWorker.drain_all()
    """)
    # every triggered run reaches a final state (most are cancelled or skipped)
    def settled():
        try:
            runs = _runs(url, "storm-retraining")
        except httpx.TransportError:  # the server busy with the storm answered one query late: ask again
            return None
        return runs if len(runs) >= 2 and all(r["state_type"] in TERMINAL for r in runs) else None

    runs = wait_for(settled, 480, 5, what="the storm's runs to settle")
    trained = _training_subflows(url, "storm", started)
    assert len(trained) == 1, [r["name"] for r in trained]
    states = [r["state_name"] for r in runs]
    assert states.count("Cancelled") + states.count("Completed") == len(runs), states


def test_deployments_apply_registers_on_a_process_work_pool(loop):
    env = {**loop["env"], "SLUICE_HOME": str(loop["home"])}
    done = subprocess.run([str(BIN / "sluice"), "deployments", "apply", "--pool", "sluice-test", str(loop["configs"]["loop"])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "registered 3 deployments" in done.stdout
    deps = [d for d in _post(f"{loop['url']}/deployments/filter", {}) if d.get("work_pool_name") == "sluice-test"]
    assert {d["name"] for d in deps} == {"loop-training", "loop-drift-check", "loop-retraining"}
    assert all(d["job_variables"]["working_dir"] == str(ROOT) for d in deps)
