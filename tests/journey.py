"""A served project driven from outside, as its user drives it: `sluice` commands, the local Prefect
server's REST API, traffic to /predict and /predict_proba, labels to /feedback.

Shared by tests/acceptance/test_feedback_loop_journey.py and benchmarks/closed_loop.py (which runs
the same journey against a clock); tests/integration/test_closed_loop.py waits and stops with it.
A failed step raises AssertionError with what was being waited for or what the server answered.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SLUICE = str(Path(sys.executable).parent / "sluice")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}  # flow run state types that end a run
T = TypeVar("T")


def lay_out_project(base: Path) -> None:
    """base/configs with the checkout's base.yaml (what a project YAML `extends`), and base/data."""
    (base / "configs").mkdir()
    (base / "data").mkdir()
    shutil.copy(ROOT / "configs" / "base.yaml", base / "configs" / "base.yaml")


def user_env(home: Path, prefect_port: int) -> dict[str, str]:
    """A user's shell: none of this process's Prefect, Sluicegate, MLflow or BentoML settings; SLUICE_HOME
    `home`, and the local Prefect server (started by the first command) on `prefect_port`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLUICE_", "MLFLOW_", "BENTOML_"))}
    env.update({"SLUICE_HOME": str(home), "SLUICE_PREFECT_SERVER": "auto",
                "SLUICE_PREFECT_PORT": str(prefect_port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_RUNNER_POLL_FREQUENCY": "2", "GX_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "true"})
    return env


def sluice(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """`sluice ARGS` from the checkout's root, output captured."""
    return subprocess.run([SLUICE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def serve_deployments(config: Path, env: dict, log: Path) -> subprocess.Popen:
    """`sluice deployments serve CONFIG` in the background, in its own process group (see stop_group)."""
    return subprocess.Popen([SLUICE, "deployments", "serve", str(config)], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM a process group started with start_new_session, SIGKILL it after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_for(predicate: Callable[[], T], timeout: float, step: float = 2.0, what: str = "") -> T:
    """predicate()'s first truthy value, polled every `step` s.

    Raises:
        AssertionError: none within `timeout` s (naming `what`).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def post_json(url: str, body: dict) -> list | dict:
    """POST a JSON body, the JSON answer; an HTTP error status raises."""
    r = httpx.post(url, json=body, timeout=20)
    r.raise_for_status()
    return r.json()


def prefect_api(home: Path) -> str:
    """The REST API of the local Prefect server that `sluice` started for SLUICE_HOME `home`."""
    return json.loads((home / "prefect-server" / "server.json").read_text())["url"] + "/api"


def deployments(api: str) -> dict[str, dict]:
    """{name: deployment} on the server."""
    return {d["name"]: d for d in post_json(f"{api}/deployments/filter", {})}


def send_traffic(served: str, rows: pd.DataFrame, features: list[str]) -> tuple[list[str], list[str]]:
    """Half the rows through /predict, half through /predict_proba, 50 a request: (prediction ids, predicted labels)."""
    ids, labels = [], []
    records = rows[features].to_dict(orient="records")
    for i in range(0, len(records), 50):
        route = "predict" if (i // 50) % 2 == 0 else "predict_proba"
        answer = httpx.post(f"{served}/{route}", json=records[i:i + 50], timeout=60)
        assert answer.status_code == 200, answer.text[:500]
        for item in answer.json():
            ids.append(item["prediction_id"])
            labels.append(item["prediction"] if route == "predict"
                          else max(item["probabilities"], key=item["probabilities"].get))
    return ids, labels


def send_feedback(served: str, ids: list[str], labels: list) -> dict:
    """The true labels of those predictions through POST /feedback; the answer's summary (counts by outcome)."""
    answer = httpx.post(f"{served}/feedback", json=[{"prediction_id": i, "label": y} for i, y in zip(ids, labels)],
                        timeout=60)
    assert answer.status_code == 200, answer.text[:500]
    return answer.json()["summary"]


def accuracy(predicted: list, truth: pd.Series) -> float:
    return float(np.mean(np.array(predicted) == truth.to_numpy()))
