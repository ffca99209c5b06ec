"""Monitoring steps: the retrain cooldown (atomic state), drift columns, performance on labelled rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from sluicegate.config import MonitoringConfig
from sluicegate.drift import DriftReport
from sluicegate.monitoring import (
    add_performance, drift_columns, finish_retrain, retrain_state_path, start_retrain,
)


def test_retrain_cooldown_allows_then_refuses_then_allows(tmp_path):
    path = retrain_state_path(tmp_path, "churn")
    assert start_retrain(path, 10, "drift", now=1000).allowed
    refused = start_retrain(path, 10, "drift again", now=1000 + 60)
    assert not refused.allowed and "cooldown 10 min" in refused.reason
    assert json.loads(path.read_text())["reason"] == "drift"  # a refusal leaves the state alone
    finish_retrain(path, "promoted", now=1100)
    assert json.loads(path.read_text())["outcome"] == "promoted"
    assert start_retrain(path, 10, "later", now=1000 + 601).allowed
    assert [p.name for p in path.parent.iterdir()] == ["retrain_state.json"]  # no temporary file left


def test_auto_drift_columns_skip_ids_log_columns_and_free_text():
    ref = pd.DataFrame({"id": range(100), "x": np.arange(100.0), "plan": ["a", "b"] * 50,
                        "note": [f"t{i}" for i in range(100)], "prediction": [0] * 100, "y": [0, 1] * 50})
    assert drift_columns(ref, MonitoringConfig(), {"id", "y", "prediction"}) == ["x", "plan"]
    assert drift_columns(ref, MonitoringConfig(columns=["note"]), set()) == ["note"]


class _Majority:
    classes_ = np.array([0, 1])

    def predict(self, X):
        return np.ones(len(X), dtype=int)


def _report(sufficient=True):
    return DriftReport(False, 0.0, (), (), 10, 10, sufficient, "r")


def test_performance_only_on_labelled_rows_and_only_when_there_are_labels():
    current = pd.DataFrame({"x": [1, 2, 3, 4], "y": [1, 1, 0, None]})
    loads = []

    def load():
        loads.append(1)
        return _Majority()

    scored = add_performance(_report(), current, "y", "classification", load)
    assert scored.performance["accuracy"] == 2 / 3 and loads == [1]
    unlabelled = current.assign(y=None)
    assert add_performance(_report(), unlabelled, "y", "classification", load).performance == {}
    assert add_performance(_report(False), current, "y", "classification", load).performance == {}
    assert loads == [1]  # the champion is loaded only when there is something to score
