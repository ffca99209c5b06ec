"""Shared helpers for benchmarks: synthetic tables and a timer."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def wide_frame(n: int, n_numeric: int = 16, seed: int = 0) -> pd.DataFrame:
    """n rows: numeric features, 3 categoricals, an id and a learnable binary target."""
    rng = np.random.default_rng(seed)
    data = {f"x{i}": rng.normal(i, 1 + i / 10, n) for i in range(n_numeric)}
    data["plan"] = rng.choice(["basic", "plus", "pro"], n)
    data["region"] = rng.choice(["north", "south", "east", "west"], n)
    data["channel"] = rng.choice(["web", "store", "phone"], n)
    data["customer_id"] = np.arange(n)
    logit = 0.8 * data["x0"] - 0.5 * (data["x1"] - 1) + np.where(data["plan"] == "basic", 0.7, -0.4)
    data["churned"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(data)


@contextmanager
def timed(label: str, sink: dict):
    start = time.perf_counter()
    yield
    sink[label] = time.perf_counter() - start
    print(f"  {label}: {sink[label]:.2f} s", flush=True)


def quiet_env(home: Path) -> None:
    os.environ.update({
        "SLUICE_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "GX_ANALYTICS_ENABLED": "false",
    })
    (home / "prefect").mkdir(parents=True, exist_ok=True)


def feature_set(folder: Path, n: int, n_features: int = 20, seed: int = 0):
    """Already-transformed arrays with a non-linear signal, as a FeatureSet the tuner accepts."""
    from sluicegate.features import FeatureColumns, FeatureSet

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    logit = X[:, 0] - 0.8 * X[:, 1] + 0.6 * X[:, 2] * X[:, 3] + 0.4 * np.sin(2 * X[:, 4])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    a, b = int(n * 0.6), int(n * 0.8)
    path = folder / f"arrays-{n}.npz"
    np.savez(path, X_train=X[:a], y_train=y[:a], X_valid=X[a:b], y_valid=y[a:b], X_test=X[b:], y_test=y[b:])
    names = tuple(f"x{i}" for i in range(n_features))
    return FeatureSet("unused", str(path), FeatureColumns(names, (), ()), names, n_features)
