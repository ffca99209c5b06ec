"""The drift-check flow under the Prefect harness: no false alarms, hysteresis, prediction-log windows."""

from __future__ import annotations

import os

import pytest

from tests.helpers import churn_config, churn_frame, write_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("monitored")
    old = os.environ.get("SLUICE_HOME")
    os.environ["SLUICE_HOME"] = str(root / ".sluice")
    cfg = churn_config(root)
    cfg["monitoring"] = {"consecutive": 3, "cooldown_minutes": 0, "min_rows": 100}
    path = write_project(root, churn_frame(1000, seed=3), cfg)
    from flows.training import training_pipeline

    assert training_pipeline(str(path), None, "setup").outcome == "promoted"
    yield root, path
    if old is None:
        os.environ.pop("SLUICE_HOME", None)
    else:
        os.environ["SLUICE_HOME"] = old


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
