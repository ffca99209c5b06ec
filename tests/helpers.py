"""Small real datasets and project files for tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def churn_frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """A synthetic customer-churn table: numeric, categorical and datetime columns, learnable signal."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    monthly = rng.normal(70, 20, n).round(2)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    region = rng.choice(["north", "south", "east", "west"], n)
    support_calls = rng.poisson(1.5, n)
    signup = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    logit = 1.2 - 0.06 * tenure + 0.02 * (monthly - 70) + 0.5 * support_calls + np.where(plan == "basic", 0.8, -0.3)
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({
        "customer_id": np.arange(n), "tenure": tenure, "monthly_charges": monthly, "plan": plan,
        "region": region, "support_calls": support_calls, "signup_date": signup.strftime("%Y-%m-%d"),
        "churned": churned,
    })


def churn_config(root: Path, data_file: str = "data/churn.csv", **changes) -> dict:
    cfg = {
        "project": "churn",
        "task": "classification",
        "seed": 7,
        "data": {"source": {"kind": "csv", "path": data_file}, "target": "churned", "id_column": "customer_id"},
        "validation": {
            "min_rows": 100,
            "max_nan_share": 0.1,
            "data_docs": False,
            "columns": {
                "tenure": {"type": "int", "min": 0, "max": 120},
                "monthly_charges": {"type": "float", "min": 0},
                "plan": {"allowed": ["basic", "plus", "pro"]},
                "region": {"allowed": ["north", "south", "east", "west", "central"], "severity": "warn"},
            },
        },
        "features": {
            "numeric": {"columns": ["tenure", "monthly_charges", "support_calls"]},
            "categorical": {"columns": ["plan", "region"]},
            "datetime": {"columns": ["signup_date"], "parts": ["month", "dayofweek"]},
        },
        "model": {"kind": "sklearn", "estimator": "logistic_regression", "params": {"C": 1.0, "max_iter": 500}},
        "evaluation": {"slices": ["plan"]},
        "gates": {"primary_metric": "roc_auc", "thresholds": {"roc_auc": {"min": 0.6}}, "min_improvement": 0.001},
    }
    for dotted, value in changes.items():
        node = cfg
        parts = dotted.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


def write_project(root: Path, frame: pd.DataFrame | None = None, cfg: dict | None = None, name: str = "churn.yaml") -> Path:
    """Lay out root/configs/<name> and root/data/churn.csv like a real checkout."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    if frame is not None:
        frame.to_csv(root / "data" / "churn.csv", index=False)
    path = root / "configs" / name
    path.write_text(yaml.safe_dump(cfg if cfg is not None else churn_config(root), sort_keys=False))
    return path


def flow_run_artifact(key: str, flow_run_id):
    """The artifact this flow run made (other tests in the session make artifacts with the same key)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return found[-1] if found else None


def log_labelled_predictions(home: Path, project: str, frame: pd.DataFrame, target: str, *, start: float,
                             step_s: float = 60.0, labelled_at: float | None = None, labels: bool | int = True,
                             version: str = "1", id_column: str | None = "customer_id", prefix: str = "p") -> list[str]:
    """Log `frame`'s rows as live predictions with the real writer, then label them with the feedback core.

    Row i is predicted at `start + i * step_s`; the model "predicted" 0 for every row. `labels`:
    True labels every row with its `target` value, an int only the first that many, False none.
    Labels are received at `labelled_at` (default: one hour after the last prediction).
    """
    from sluicegate.serving.feedback import parse_feedback, record_feedback
    from sluicegate.serving.predlog import (
        LabelSchema,
        PredictionEvent,
        PredictionLog,
        connect_log,
        log_path,
        register_label_schema,
    )

    ids, events = [], []
    for i, row in enumerate(frame.to_dict(orient="records")):
        pid = f"{prefix}{i}"
        inputs = {k: v for k, v in row.items() if k != target}
        events.append(PredictionEvent(start + i * step_s, project, version, "predict", "model", inputs, 0, None, pid,
                                      "live", str(row[id_column]) if id_column and id_column in row else None))
        ids.append(pid)
    plog = PredictionLog(log_path(home, project))
    plog.record(events)
    plog.close()
    conn = connect_log(log_path(home, project))
    try:
        register_label_schema(conn, LabelSchema("classification", target, (0, 1), id_column, version))
        n = len(ids) if labels is True else int(labels)
        if n:
            body = [{"prediction_id": pid, "label": int(v)} for pid, v in zip(ids[:n], frame[target].iloc[:n])]
            when = labelled_at if labelled_at is not None else start + len(ids) * step_s + 3600
            result = record_feedback(conn, parse_feedback(body), now=when)
            assert result.stored == n, result.summary()
    finally:
        conn.close()
    return ids
