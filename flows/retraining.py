"""Retraining on a drift or performance alert: the same gated training pipeline, with a cooldown between retrains."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by Prefect's loader: make `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow

from flows.monitoring import config_for
from flows.training import training_pipeline
from sluicegate.config import load_config
from tasks.retrain import finish_retrain, start_retrain


@flow(name="retraining", log_prints=True)
def retraining_pipeline(project: str, reason: str = "drift detected", force: bool = False) -> dict:
    """Retrain a project because its data drifted or its live performance degraded.

    Started by a `sluicegate.drift.detected` or `sluicegate.performance.degraded` event. Runs
    the same training pipeline as a subflow: same validation, same gates, same canary deploy,
    so the new model serves only if it is better. Skips, with the reason recorded, when
    `monitoring.retrain` is false (alerts only) or the last retrain started less than
    `monitoring.cooldown_minutes` ago (the cooldown debounces alerts; `force` lifts it for a run a
    person starts from the UI or `prefect deployment run`).

    Args:
        project: project name (the YAML under configs/ declaring it) or a YAML path.
        reason: why (the event's summary); stored with the MLflow run.
        force: retrain now even within the cooldown (never when monitoring.retrain is false).
    """
    config_path = config_for(project)
    cfg = load_config(config_path)
    allowed = start_retrain(cfg.project, cfg.monitoring.cooldown_minutes, reason, cfg.monitoring.retrain, force)
    if not allowed.allowed:
        return {"project": cfg.project, "outcome": "skipped", "summary": allowed.reason}
    result = training_pipeline(config_path, None, f"retrain: {reason}")
    finish_retrain(cfg.project, result.outcome)
    if result.outcome == "unchanged" and not cfg.data.production.enabled:
        print(f"{cfg.project}: retrained on the same source rows, so nothing changed; with data.production.enabled "
              "the retrain also learns from live predictions that got a label (POST /feedback)")
    return result.to_dict()
