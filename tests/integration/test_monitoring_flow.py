"""The drift-check flow under the Prefect harness: no false alarms, hysteresis, prediction-log windows,
live performance from feedback labels."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from tests.helpers import churn_config, churn_frame, env_var, loopback_webhook, write_log, write_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hook():
    """A loopback webhook receiver: what the emitter sends for alerts."""
    with loopback_webhook() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, prefect_harness, hook):
    root = tmp_path_factory.mktemp("monitored")
    with env_var("SLUICE_HOME", str(root / ".sluice")):
        cfg = churn_config(root)
        cfg["monitoring"] = {"consecutive": 3, "cooldown_minutes": 0, "min_rows": 100,
                             "performance": {"min_labelled_rows": 40}}
        cfg["notifications"] = {"webhook_url": f"{hook.url}/hook", "timeout_s": 5}
        path = write_project(root, churn_frame(1000, seed=3), cfg)
        from flows.training import training_pipeline

        assert training_pipeline(str(path), None, "setup").outcome == "promoted"
        yield root, path


def _check(path, frame, root, name):
    from flows.monitoring import drift_check

    batch = root / "data" / f"{name}.csv"
    frame.to_csv(batch, index=False)
    return drift_check(str(path), str(batch))


def _drifted(seed):
    f = churn_frame(400, seed=seed)
    return f.assign(tenure=(f.tenure + 30).clip(upper=119), monthly_charges=f.monthly_charges * 1.5, plan="basic")


def test_identical_data_does_not_cry_wolf(monitored):
    root, path = monitored
    result = _check(path, churn_frame(1000, seed=3), root, "same")
    assert not result["drifted"] and not result["alert"] and result["drifted_columns"] == []


def test_labels_in_the_batch_give_performance(monitored):
    root, path = monitored
    result = _check(path, churn_frame(500, seed=9), root, "labelled")
    assert 0.5 < result["performance"]["roc_auc"] <= 1.0


def test_hysteresis_drift_drift_clean_drift_with_k3_never_alerts(monitored):
    root, path = monitored
    results = [_check(path, frame, root, f"h{i}") for i, frame in
               enumerate([_drifted(1), _drifted(2), churn_frame(400, seed=4), _drifted(5)])]
    assert [r["drifted"] for r in results] == [True, True, False, True]
    assert not any(r["alert"] for r in results)
    third = _check(path, _drifted(6), root, "h4")
    fourth = _check(path, _drifted(7), root, "h5")
    assert not third["alert"] and fourth["alert"]  # the 3rd consecutive drifted check alerts


def test_too_small_a_window_gives_no_verdict(monitored):
    root, path = monitored
    result = _check(path, _drifted(8).head(20), root, "tiny")
    assert not result["sufficient"] and not result["alert"]


def _write_log(root, frame, wrong_labels: bool):
    """Live /predict and /predict_proba rows, canary rows, and feedback labels, through the real writers."""
    from sluicegate.serving.predlog import LabelSchema, PredictionEvent
    from tasks._common import tracker

    champ = tracker().champion("churn")
    model = tracker().load_model(champ.registry_uri)
    X = frame.drop(columns=["churned"])
    pred, proba = model.predict(X), model.predict_proba(X)
    schema = LabelSchema("classification", "churned", (0, 1), "customer_id", champ.version)
    events, labels, now = [], [], time.time()
    for i, record in enumerate(X.to_dict("records")):
        canary = i % 5 == 4  # every fifth row is canary traffic: never a user
        endpoint = "/predict_proba" if i % 2 else "/predict"
        pid = uuid.uuid4().hex
        events.append(PredictionEvent(
            now - 60 + i * 0.01, "churn", champ.version, endpoint, "model",
            {**record, "tenure": 119} if canary else record, int(pred[i]),
            {"0": float(proba[i, 0]), "1": float(proba[i, 1])} if endpoint == "/predict_proba" else None,
            pid, "canary" if canary else "live"))
        truth = int(frame.churned.iloc[i])
        labels.append({"prediction_id": pid, "label": 1 - int(pred[i]) if wrong_labels else truth})
    result = write_log(root / ".sluice", "churn", events, schema, labels)
    assert result.counts["accepted"] == len(labels)
    return sum(1 for i in range(len(X)) if i % 5 != 4)


def test_log_check_counts_live_rows_and_alerts_on_degraded_performance(monitored, hook):
    from flows.monitoring import drift_check

    root, path = monitored
    live = _write_log(root, churn_frame(250, seed=11), wrong_labels=True)
    results = [drift_check(str(path)) for _ in range(3)]
    first = results[0]
    assert first["current_rows"] == live == 200  # canary rows are not in the window
    assert "tenure" not in first["drifted_columns"]  # the canary rows' tenure=119 was not counted
    # every label contradicts the logged prediction: accuracy 0, from the 200 labelled live rows only
    assert first["performance"]["accuracy"] == 0.0 and first["performance_rows"] == 100  # roc_auc: /predict_proba rows
    assert first["performance_metric"] == "roc_auc" and first["performance_value"] < 0.5
    assert first["performance_degraded"] and "max_relative_drop" in first["performance_reason"]
    assert [r["performance_alert"] for r in results] == [False, False, True]  # consecutive: 3
    sent = [h for h in hook.received if h["event"] == "sluicegate.performance.degraded"]
    assert len(sent) == 1 and sent[0]["payload"]["reason"].startswith("performance: degraded on 100 labelled rows")
    text = results[-1]["text"]
    assert "performance: DEGRADED" in text and "drift: " in text and "report: " in text


def test_sluice_drift_names_the_rule_the_columns_and_the_report(monitored, capsys):
    from sluicegate.cli import main

    root, path = monitored
    batch = root / "data" / "cli.csv"
    shifted = churn_frame(300, seed=12)
    shifted.assign(tenure=(shifted.tenure + 20).clip(upper=119)).drop(columns=["churned"]).to_csv(batch, index=False)
    capsys.readouterr()
    assert main(["drift", str(path), "--current", str(batch)]) == 0
    out = capsys.readouterr().out
    assert "drift: DRIFT (rule: " in out and "top_k" in out
    assert "tenure: ks p=" in out and "< 0.001 (importance rank 1" in out
    report = next(line.split("report: ", 1)[1] for line in out.splitlines() if line.strip().startswith("report: "))
    assert report.endswith("drift.html") and os.path.exists(report)


def test_retraining_is_skipped_with_its_reason_when_monitoring_retrain_is_false(monitored):
    import yaml

    from flows.retraining import retraining_pipeline

    root, path = monitored
    cfg = yaml.safe_load(path.read_text())
    cfg["monitoring"]["retrain"] = False
    alerts_only = path.with_name("churn_alerts_only.yaml")
    alerts_only.write_text(yaml.safe_dump(cfg))
    result = retraining_pipeline(str(alerts_only), "drift: tenure")
    assert result["outcome"] == "skipped" and "monitoring.retrain is false" in result["summary"]
