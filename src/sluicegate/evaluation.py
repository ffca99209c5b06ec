"""Metrics by task type, on the train, validation and holdout splits, and per slice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from sluicegate.config import LOWER_IS_BETTER


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics of one model on each split, plus holdout metrics per slice value."""

    train: dict[str, float]
    valid: dict[str, float]
    test: dict[str, float]
    slices: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    test_rows: int = 0
    holdout: str = ""  # what the holdout is, in words (`SplitResult.holdout`)
    slice_warnings: tuple[str, ...] = ()  # slices not evaluated (missing column, too few holdout rows), and why

    def flat(self) -> dict[str, float]:
        """`test_roc_auc`-style names for MLflow."""
        out = {}
        for split in ("train", "valid", "test"):
            out.update({f"{split}_{k}": v for k, v in getattr(self, split).items()})
        return out

    def flat_slices(self) -> dict[str, float]:
        """`slice_plan_basic_roc_auc`-style names for MLflow (characters MLflow refuses become `_`)."""
        out = {}
        for col, groups in self.slices.items():
            for value, m in groups.items():
                safe = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in f"{col}_{value}")
                out.update({f"slice_{safe}_{k}": v for k, v in m.items() if k != "rows"})
        return out


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def compute_metrics(task: str, model: Any, X: Any, y: np.ndarray) -> dict[str, float]:
    """Metrics of `model` on (X, y): accuracy, F1, ROC AUC, log loss; or RMSE, MAE, R2.

    Args:
        task: `classification` or `regression`.
        model: anything with `predict` (and `predict_proba` for classifiers).
        X: features the model accepts (raw frame for a full pipeline).
        y: true labels or values.

    Returns:
        Metric name to value; a metric that is undefined here (one class in y) is left out.
    """
    y = np.asarray(y)
    pred = np.asarray(model.predict(X))
    if task == "regression":
        pred = pred.astype(float)
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
            "mae": float(skm.mean_absolute_error(y, pred)),
            "r2": float(skm.r2_score(y, pred)) if len(y) > 1 else float("nan"),
        }
    classes = list(getattr(model, "classes_", np.unique(y)))
    y_cmp, pred_cmp = y, pred
    out = {"accuracy": float(skm.accuracy_score(y_cmp, pred_cmp))}
    average = "binary" if len(classes) == 2 else "macro"
    pos = classes[-1] if average == "binary" else None
    out["f1"] = float(skm.f1_score(y_cmp, pred_cmp, average=average, pos_label=pos, zero_division=0))
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        proba = np.clip(proba, 1e-15, 1 - 1e-15)
        proba = proba / proba.sum(axis=1, keepdims=True)
        if len(np.unique(y_cmp)) > 1:
            if len(classes) == 2:
                out["roc_auc"] = float(skm.roc_auc_score(y_cmp == pos, proba[:, 1]))
            else:
                out["roc_auc"] = float(skm.roc_auc_score(y_cmp, proba, multi_class="ovr", labels=classes))
        out["log_loss"] = float(skm.log_loss(y_cmp, proba, labels=classes))
    return out


def _slice_keys(frame: pd.DataFrame, col: str) -> pd.Series:
    key = frame[col]
    if pd.api.types.is_numeric_dtype(key) and key.nunique() > 10:
        key = pd.qcut(key, 4, duplicates="drop").astype(str)
    return key.astype(str)


def slice_warnings(frame: pd.DataFrame, columns: list[str], min_rows: int) -> list[str]:
    """One line per configured slice that `slice_metrics` cannot evaluate: its column is not in
    the holdout, or a value has fewer holdout rows than `min_rows` (`evaluation.min_slice_rows`)."""
    out = []
    for col in columns:
        if col not in frame.columns:
            out.append(f"slice {col}: column not in the holdout data; not evaluated")
            continue
        sizes = _slice_keys(frame, col).value_counts()
        for value, n in sizes[sizes < min_rows].sort_index().items():
            out.append(f"slice {col}={value}: {int(n)} holdout rows, fewer than evaluation.min_slice_rows "
                       f"({min_rows}); not evaluated")
    return out


def slice_metrics(
    task: str, model: Any, frame: pd.DataFrame, target: str, columns: list[str], min_rows: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Holdout metrics for each value of each slice column (numeric columns in quartiles).

    Slices smaller than `min_rows` are skipped: their metrics would be noise. `slice_warnings`
    says which, so that they are reported rather than silently dropped.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for col in columns:
        if col not in frame.columns:
            continue
        groups: dict[str, dict[str, float]] = {}
        for value, part in frame.groupby(_slice_keys(frame, col), observed=True):
            if len(part) < min_rows:
                continue
            m = compute_metrics(task, model, part, part[target].to_numpy())
            m["rows"] = float(len(part))
            groups[str(value)] = m
        out[col] = groups
    return out
