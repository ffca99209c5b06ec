"""The user's journey through the feedback loop, on data no other test uses (statsmodels' `fair`).

README -> a project YAML -> `sluice config check` / `sluice run` (the local Prefect server starts
once) -> the champion serves on loopback -> shifted traffic on both endpoints -> labels through
`POST /feedback` -> the drift-check deployment, run by `sluice deployments serve` on that server
-> an alert -> the retraining deployment -> a model trained with the labelled production rows,
compared on recent data -> promoted and answering. Then the opposite: a retrain on labels with no
signal is rejected with its reason, and the champion keeps serving.

Everything runs as the user would run it: CLI subprocesses, a real Prefect server, a real served
Bento, MLflow on SQLite. Only the data is prepared here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from sluicegate.deploy import free_port
from tests.journey import (
    TERMINAL,
    accuracy,
    deployments,
    lay_out_project,
    post_json,
    prefect_api,
    send_feedback,
    send_traffic,
    serve_deployments,
    sluice,
    stop_group,
    user_env,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
FEATURES = ["rate_marriage", "age", "yrs_married", "children", "religious", "educ", "occupation"]

PROJECT_YAML = """\
# written from the README's "Add your own project"
extends: base.yaml
project: fair
description: Extramarital affairs (statsmodels' fair data), a yes/no target with categorical inputs.
task: classification
data:
  source: {kind: csv, path: data/fair.csv}
  target: affair
  production: {enabled: true, window_days: 30, max_share: 0.5}
validation:
  columns:
    rate_marriage: {type: int, min: 1, max: 5}
    religious: {allowed: [not, mildly, fairly, strongly]}
    occupation: {allowed: [student, farming, white_collar, teacher, managerial, professional]}
features:
  numeric: {columns: [rate_marriage, age, yrs_married, children, educ]}
  categorical: {columns: [religious, occupation], encode: onehot}
model:
  kind: xgboost
  params: {n_estimators: 150, max_depth: 4, learning_rate: 0.1}
evaluation:
  slices: [religious]
gates:
  primary_metric: roc_auc
  thresholds: {roc_auc: {min: 0.6}}
  min_improvement: 0.02            # a retrain must beat the champion clearly on the same holdout
deploy:
  enabled: true
  port: {port}
monitoring:
  window_rows: 600
  min_rows: 100
  consecutive: 1
  cooldown_minutes: 0
"""


def fair_frames(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(source rows for training, a pool of unseen rows for production traffic)."""
    import statsmodels.api as sm

    d = sm.datasets.fair.load_pandas().data.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame = pd.DataFrame({
        "rate_marriage": d.rate_marriage.astype(int),
        "age": d.age.astype(float),
        "yrs_married": d.yrs_married.astype(float),
        "children": d.children.astype(float),
        "religious": d.religious.map({1: "not", 2: "mildly", 3: "fairly", 4: "strongly"}),
        "educ": d.educ.astype(int),
        "occupation": d.occupation.map({1: "student", 2: "farming", 3: "white_collar", 4: "teacher",
                                        5: "managerial", 6: "professional"}),
        "affair": np.where(d.affairs > 0, "yes", "no"),
    })
    return frame.iloc[:4000].reset_index(drop=True), frame.iloc[4000:].reset_index(drop=True)


def shifted_traffic(pool: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Production after a change: traffic comes mostly from the non-religious, and among them an
    affair now follows the years married, not the marriage rating the old model relies on."""
    rng = np.random.default_rng(seed)
    segment = pool[pool.religious.isin(["not", "mildly"])]
    rows = segment.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    rows["yrs_married"] = (rows.yrs_married + rng.normal(0, 0.5, n)).clip(0.5, 23).round(1)
    rows["affair"] = np.where(rows.yrs_married >= 9, "yes", "no")
    return rows


def _deployment_runs(api: str, name: str) -> list[dict]:
    deps = [d for d in post_json(f"{api}/deployments/filter", {}) if d["name"] == name]
    if not deps:
        return []
    return post_json(f"{api}/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deps[0]["id"]]}}})


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    base = tmp_path_factory.mktemp("fair")
    lay_out_project(base)
    source, pool = fair_frames()
    source.to_csv(base / "data" / "fair.csv", index=False)
    port = free_port()
    config = base / "configs" / "fair.yaml"
    config.write_text(PROJECT_YAML.replace("{port}", str(port)))
    env = user_env(base / ".sluice", free_port())
    logs = base / "logs"
    logs.mkdir()
    serve = None
    try:
        checked = sluice(["config", "check", str(config)], env, 120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        first = sluice(["run", str(config), "--reason", "first model"], env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "fair: promoted (version 1" in first.stdout, first.stdout
        api = prefect_api(base / ".sluice")
        serve = serve_deployments(config, env, logs / "serve.log")
        names = {"fair-training", "fair-drift-check", "fair-retraining"}
        wait_for(lambda: names <= deployments(api).keys(), 300, what="deployments")
        yield {"base": base, "config": config, "env": env, "api": api, "served": f"http://127.0.0.1:{port}",
               "pool": pool, "logs": logs}
    finally:
        if serve is not None:
            stop_group(serve)
        sluice(["stop", str(config)], env, 120)
        sluice(["server", "stop"], env, 120)


def test_drift_on_served_traffic_retrains_on_production_labels_and_the_new_model_answers(journey):
    served, api, env = journey["served"], journey["api"], journey["env"]
    assert httpx.get(f"{served}/metadata", timeout=10).json()["version"] == "1"

    traffic = shifted_traffic(journey["pool"], 600, seed=1)
    ids, predicted = send_traffic(served, traffic, FEATURES)
    old_accuracy = accuracy(predicted, traffic.affair)
    summary = send_feedback(served, ids, traffic.affair.tolist())
    assert summary["accepted"] == 600, summary

    # the scheduled check, started as its schedule would: a run of the drift-check deployment
    started = time.time()
    dep = deployments(api)["fair-drift-check"]
    post_json(f"{api}/deployments/{dep['id']}/create_flow_run", {"parameters": {}})
    check = wait_for(lambda: [r for r in _deployment_runs(api, "fair-drift-check") if r["state_type"] in TERMINAL],
                     400, 3, what="the drift check to finish")[0]
    assert check["state_type"] == "COMPLETED", (check["state"], (journey["logs"] / "serve.log").read_text()[-3000:])

    retrain = wait_for(lambda: [r for r in _deployment_runs(api, "fair-retraining") if r["state_type"] in TERMINAL],
                       900, 5, what="the retraining run started by the alert")[0]
    assert retrain["state_type"] == "COMPLETED", (retrain["state"], (journey["logs"] / "serve.log").read_text()[-3000:])
    assert pd.Timestamp(retrain["created"]).timestamp() >= started - 5

    status = sluice(["status", str(journey["config"]), "--json"], env, 120)
    info = json.loads(status.stdout)
    assert info["champion"] == 2, info
    verdict = info["last_verdict"]["summary"]
    assert "production" in verdict.lower(), verdict  # compared on a holdout with recent production rows

    # the new version answers, and it is right where the old one was wrong
    wait_for(lambda: httpx.get(f"{served}/metadata", timeout=10).json()["version"] == "2", 120, what="v2 serving")
    fresh = shifted_traffic(journey["pool"], 300, seed=2)
    _, now_predicted = send_traffic(served, fresh, FEATURES)
    new_accuracy = accuracy(now_predicted, fresh.affair)
    assert new_accuracy > old_accuracy + 0.1, (old_accuracy, new_accuracy)

    # canary replays are in the log but never in a monitoring window
    from sluicegate.serving.predlog import read_prediction_log

    home = Path(env["SLUICE_HOME"])
    everything = read_prediction_log("fair", home, traffic=None)
    assert (everything.traffic == "canary").sum() > 0
    assert set(read_prediction_log("fair", home).traffic) == {"live"}


def test_a_retrain_with_nothing_new_to_learn_is_rejected_and_the_champion_keeps_serving(journey):
    served, env = journey["served"], journey["env"]
    before = httpx.get(f"{served}/metadata", timeout=10).json()["version"]
    more = shifted_traffic(journey["pool"], 400, seed=5)  # more of what the champion already learned
    ids, _ = send_traffic(served, more, FEATURES)
    send_feedback(served, ids, more.affair.tolist())
    done = sluice(["run", str(journey["config"]), "--reason", "retrain: more of the same"], env)
    assert done.returncode == 6, done.stdout[-2000:] + done.stderr[-2000:]
    line = [x for x in done.stderr.splitlines() if x.startswith("error:")][-1]
    assert "rejected" in line and f"champion stays v{before}" in line, line
    assert "margin" in done.stdout or "min_improvement" in done.stdout, done.stdout[-2000:]
    assert httpx.get(f"{served}/metadata", timeout=10).json()["version"] == before
