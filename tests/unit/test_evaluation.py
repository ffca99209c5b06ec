"""Metrics by task type, and their MLflow names."""

from __future__ import annotations

import numpy as np

from sluicegate.evaluation import EvaluationReport, compute_metrics


class _Const:
    classes_ = np.array([0, 1])

    def __init__(self, p):
        self.p = p

    def predict(self, X):
        return (np.asarray(self.p) > 0.5).astype(int)

    def predict_proba(self, X):
        return np.column_stack([1 - np.asarray(self.p), self.p])


def test_classification_metrics():
    y = np.array([0, 0, 1, 1])
    m = compute_metrics("classification", _Const([0.1, 0.4, 0.6, 0.9]), None, y)
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0 and m["f1"] == 1.0 and 0 < m["log_loss"] < 0.6


def test_slice_metrics_get_mlflow_safe_names_without_row_counts():
    report = EvaluationReport({}, {}, {"accuracy": 0.9},
                              {"plan": {"basic": {"accuracy": 0.8, "rows": 40.0}},
                               "tenure": {"(0.9, 18.0]": {"accuracy": 0.7, "rows": 30.0}}})
    assert report.flat_slices() == {"slice_plan_basic_accuracy": 0.8, "slice_tenure__0.9__18.0__accuracy": 0.7}
    assert report.flat() == {"test_accuracy": 0.9}


def test_small_or_missing_slices_are_reported_not_dropped():
    import pandas as pd

    from sluicegate.evaluation import slice_metrics, slice_warnings

    frame = pd.DataFrame({"plan": ["basic"] * 30 + ["pro"] * 5, "y": [0, 1] * 15 + [0, 1, 0, 1, 0], "p": [0.2] * 35})
    warnings = slice_warnings(frame, ["plan", "region"], min_rows=20)
    assert warnings == ["slice plan=pro: 5 holdout rows, fewer than evaluation.min_slice_rows (20); not evaluated",
                        "slice region: column not in the holdout data; not evaluated"]
    class _PerRow(_Const):
        def predict_proba(self, X):
            return np.column_stack([1 - X["p"].to_numpy(), X["p"].to_numpy()])

        def predict(self, X):
            return (X["p"].to_numpy() > 0.5).astype(int)

    evaluated = slice_metrics("classification", _PerRow(None), frame, "y", ["plan", "region"], 20)
    assert set(evaluated["plan"]) == {"basic"} and "region" not in evaluated
