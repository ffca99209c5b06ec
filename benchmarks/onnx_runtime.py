"""Benchmark: the native pipeline against its ONNX export under ONNX Runtime (one thread), same rows on both sides.

Prints, per model kind, the median latency of predict_proba (predict for regression) on 1 and on
100 request records (native: the records as a DataFrame, as the service scores them; ONNX: inputs
built from the records directly), and batch scoring rows/s on 100,000 rows from a DataFrame,
with native/ONNX ratios (> 1: ONNX is faster). Parity is checked on the batch rows first.
Usage: python benchmarks/onnx_runtime.py [kinds, default logistic_regression,random_forest,xgboost,torch] [repeats]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd
from _common import ROOT  # noqa: F401  (puts the checkout on sys.path)

KINDS = (sys.argv[1] if len(sys.argv) > 1 else "logistic_regression,random_forest,xgboost,torch").split(",")
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
BATCH_ROWS = 100_000
NUMERIC, CATEGORICAL, DATES = ("tenure", "monthly_charges", "support_calls"), ("plan", "region"), ("signup_date",)


def train(kind: str, frame: pd.DataFrame):
    """The trainer's Pipeline(features, model) on 4,000 churn rows (missing values included)."""
    from sklearn.pipeline import Pipeline

    from sluicegate.config import FeaturesConfig, SklearnModelConfig, TorchModelConfig, XGBoostModelConfig
    from sluicegate.features import FeatureColumns, FeaturePipeline, _as_str, build_preprocessor
    from sluicegate.trainers import registry

    cols = FeatureColumns(NUMERIC, CATEGORICAL, DATES)
    spec_features = FeaturesConfig(datetime={"columns": list(DATES), "parts": ["month", "dayofweek"]})
    pre = build_preprocessor(spec_features, cols)
    X, y = frame[[*NUMERIC, *CATEGORICAL, *DATES]].iloc[:4000], frame["churned"].to_numpy()[:4000]
    pre.fit(_as_str(X, cols))
    fp = FeaturePipeline(pre, cols)
    xt = fp.transform(X)
    if kind == "xgboost":
        spec = XGBoostModelConfig(kind="xgboost", params={"n_estimators": 100, "max_depth": 5, "n_jobs": 1})
    elif kind == "torch":
        spec = TorchModelConfig(kind="torch", hidden_layers=[64, 32], epochs=5, num_threads=1)
    else:
        spec = SklearnModelConfig(kind="sklearn", estimator=kind,
                                  params={"n_estimators": 100, "n_jobs": 1} if kind == "random_forest" else {})
    est = registry.get_trainer(spec.kind).fit(spec, "classification", xt[:3200], y[:3200], xt[3200:], y[3200:], 1)
    return Pipeline([("features", fp), ("model", est)])


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    warnings.filterwarnings("ignore")
    from sluicegate.onnx_export import check_parity, export_onnx
    from sluicegate.onnx_runtime import OnnxPredictor
    from tests.helpers import churn_frame

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    frame = churn_frame(4000 + BATCH_ROWS, seed=11)
    rng = np.random.default_rng(2)
    frame.loc[rng.random(len(frame)) < 0.05, "plan"] = np.nan
    frame.loc[rng.random(len(frame)) < 0.05, "tenure"] = np.nan
    batch = frame.iloc[4000:].drop(columns=["churned", "customer_id"]).reset_index(drop=True)
    records = json.loads(batch.head(100).to_json(orient="records"))
    results = {}
    for kind in KINDS:
        model = train(kind, frame)
        export = export_onnx(model, batch.head(50), "classification")
        if not export.ok:
            print(f"{kind}: no ONNX export ({export.reason})")
            continue
        parity = check_parity(model, export, batch, "classification")
        predictor = OnnxPredictor(export, threads=1)
        print(f"{kind}: parity on {parity.rows} rows: passed={parity.passed}, labels equal {parity.labels_equal:.4f}, "
              f"max |dp| {parity.max_abs_diff:.2e} (limit {parity.limit:.0e})", flush=True)
        row = {}
        for n in (1, 100):
            recs = records[:n]
            native = median_seconds(lambda: model.predict_proba(pd.DataFrame(recs)), REPEATS)
            onnx_s = median_seconds(lambda: predictor.predict_proba(recs), REPEATS)
            row[n] = (native, onnx_s)
            print(f"  {n:>3} record(s): native {native * 1e6:9.0f} us   onnx {onnx_s * 1e6:7.0f} us   "
                  f"ratio native/onnx {native / onnx_s:6.1f}x", flush=True)
        start = time.perf_counter()
        model.predict_proba(batch)
        native_batch = time.perf_counter() - start
        start = time.perf_counter()
        predictor.predict_proba_frame(batch)
        onnx_batch = time.perf_counter() - start
        print(f"  batch {len(batch):,} rows from a DataFrame: native {len(batch) / native_batch:11,.0f} rows/s   "
              f"onnx {len(batch) / onnx_batch:11,.0f} rows/s   ratio {native_batch / onnx_batch:5.1f}x", flush=True)
        results[kind] = row
    if not results:
        sys.exit("no kind exported")


if __name__ == "__main__":
    main()
