"""Benchmark: wall time from a drift event to the retrained model answering, stage by stage.

Starts a Prefect server and the project's deployments (`deployments/build.py serve`) on
loopback, trains and deploys a champion, changes the data, emits one
`sluicegate.drift.detected` event and times: event -> retraining run created (trigger),
-> run started (worker pick-up and process start), training, gates, package, canary + switch,
-> the service's /metadata answering with the new version. Goal: under 120 s, debounce
excluded (the cooldown and hysteresis are policy, not latency). Bounded: gives up after 600 s.
Usage: python benchmarks/closed_loop.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml
from sluicegate.deploy import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def data(n: int, seed: int, flip: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1, n), rng.normal(0, 1, n)
    plan = rng.choice(["basic", "pro"], n)
    logit = (-1.5 if flip else 1.5) * x1 + 0.5 * x2 + np.where(plan == "basic", 0.5, -0.5)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"x1": x1 + (1.0 if flip else 0.0), "x2": x2, "plan": plan, "y": y})


def wait(pred, timeout, step=0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError


def post(url, body):
    r = httpx.post(url, json=body, timeout=15)
    r.raise_for_status()
    return r.json()


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="sluice-bench-loop-"))
    (base / "configs").mkdir()
    (base / "data").mkdir()
    data(3000, 0, flip=False).to_csv(base / "data" / "d.csv", index=False)
    serve_port = free_port()
    cfg = {"project": "loopbench", "task": "classification", "seed": 1,
           "data": {"source": {"kind": "csv", "path": "data/d.csv"}, "target": "y"},
           "validation": {"data_docs": False},
           "model": {"kind": "xgboost", "params": {"n_estimators": 100, "max_depth": 3}},
           "gates": {"primary_metric": "roc_auc", "min_improvement": 0.001},
           "deploy": {"enabled": True, "port": serve_port, "canary_rows": 20},
           "monitoring": {"consecutive": 1, "cooldown_minutes": 0}}
    config = base / "configs" / "loopbench.yaml"
    config.write_text(yaml.safe_dump(cfg))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({"SLUICE_HOME": str(base / ".sluice"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "BENTOML_HOME": str(base / "bentoml"), "BENTOML_DO_NOT_TRACK": "true", "PYTHONPATH": str(ROOT)})
    procs = []
    try:
        procs.append(subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env={**env, "PREFECT_HOME": str(base / "server")}, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        wait(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200 if _up(api) else None, 180, 1)
        client_env = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(base / "client")}
        print("training and deploying the champion ...", flush=True)
        subprocess.run([str(BIN / "sluice"), "run", str(config)], cwd=ROOT, env=client_env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        served = f"http://127.0.0.1:{serve_port}/metadata"
        print("  serving:", httpx.get(served, timeout=5).json().get("version"))
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "deployments" / "build.py"), "serve", str(config)],
                                      cwd=ROOT, env=client_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        wait(lambda: any(d["name"] == "loopbench-retraining" for d in post(f"{api}/deployments/filter", {})), 240, 1)
        time.sleep(5)  # let the serve process settle into its polling loop
        data(3000, 1, flip=True).to_csv(base / "data" / "d.csv", index=False)  # the world changed
        t0 = time.time()
        subprocess.run([sys.executable, "-c", (
            "from prefect.events import emit_event\nfrom prefect.events.worker import EventsWorker\n"
            "emit_event('sluicegate.drift.detected', resource={'prefect.resource.id': 'sluicegate.project.loopbench'}, "
            "payload={'reason': 'drift: benchmark'})\nEventsWorker.drain_all()\n")], env=client_env, check=True)
        t_emitted = time.time()
        dep = [d for d in post(f"{api}/deployments/filter", {}) if d["name"] == "loopbench-retraining"][0]

        def run():
            runs = post(f"{api}/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}})
            return runs[0] if runs else None

        wait(run, 120, 0.2)
        t_created = time.time()
        wait(lambda: (r := run()) and r["start_time"], 300, 0.5)
        t_started = time.time()

        def answering_v2():
            try:
                return httpx.get(served, timeout=2).json().get("version") == "2"
            except httpx.HTTPError:
                return False

        wait(answering_v2, 600, 0.5)
        t_answer = time.time()
        # task durations are final once the run is (the switch finishes just before it does)
        final = wait(lambda: (r := run()) and r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") and r, 120, 0.5)
        subs = post(f"{api}/flow_runs/filter", {"flows": {"name": {"any_": ["training-pipeline"]}}})
        sub = max(subs, key=lambda r: r["created"])
        tasks = post(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [sub["id"]]}}})
        dur = {}
        for t in tasks:
            name = t["name"].rsplit("-", 1)[0]
            dur[name] = dur.get(name, 0.0) + (t["total_run_time"] or 0.0)
        training = sum(dur.get(k, 0) for k in ("ingest-data", "validate-data", "split-data", "build-features",
                                               "train-model", "evaluate-model", "score-champion", "register-candidate"))
        print(f"closed loop on {len(data(3000, 1, True))} rows, xgboost (state {final['state_name']}):")
        print(f"  event sent                         {t_emitted - t0:6.1f} s")
        print(f"  event -> retraining run created    {t_created - t_emitted:6.1f} s   (trigger; debounce excluded)")
        print(f"  created -> started                 {t_started - t_created:6.1f} s   (serve poll + process start)")
        print(f"  training (ingest..register)        {training:6.1f} s")
        print(f"  gates (decide + promote)           {dur.get('decide-promotion', 0) + dur.get('promote-model', 0):6.1f} s")
        print(f"  release (package, canary, switch)  {dur.get('release-model', 0):6.1f} s")
        total = t_answer - t0
        print(f"TOTAL event -> new model answering   {total:6.1f} s (goal < 120 s): {'MET' if total < 120 else 'NOT MET'}")
    finally:
        subprocess.run([str(BIN / "sluice"), "stop", str(config)], cwd=ROOT, env={**env}, capture_output=True)
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


def _up(api: str) -> bool:
    try:
        httpx.get(f"{api}/health", timeout=2)
        return True
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
