"""The drift check flow: compare recent traffic with the champion's training data, alert on persistent drift."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by Prefect's loader: make `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow

from sluicegate import events
from sluicegate.config import load_config
from tasks.events import emit
from tasks.monitor import load_windows, record_drift, run_drift_check


def resolve_project(project: str) -> str:
    """A project name means configs/<name>.yaml in the checkout; a path is used as given."""
    if project.endswith((".yaml", ".yml")) or "/" in project:
        return project
    root = Path(__file__).resolve().parents[1]
    return str(root / "configs" / f"{project}.yaml")


@flow(name="drift-check", log_prints=True)
def drift_check(project: str, current_path: str | None = None) -> dict:
    """Check the champion for data and prediction drift.

    Reference is the champion's training snapshot; current is the recent prediction log
    (or `current_path`, a CSV/Parquet batch, with labels in the target column when they have
    arrived). Emits `sluicegate.drift.checked` every time and `sluicegate.drift.detected`
    only after drift in `monitoring.consecutive` checks in a row, outside the cooldown.

    Args:
        project: project name (configs/<name>.yaml) or a YAML path.
        current_path: a batch file to check instead of the prediction log.
    """
    cfg = load_config(resolve_project(project))
    windows = load_windows(cfg.project, cfg.data.target, cfg.data.id_column, cfg.monitoring, current_path)
    report = run_drift_check(cfg.project, windows, cfg.monitoring, cfg.task, cfg.data.target, cfg.seed)
    signal = record_drift(cfg.project, report, cfg.monitoring)
    payload = {
        "drift_share": report.drift_share, "drifted_columns": list(report.drifted_columns),
        "window": windows.window, "current_rows": report.current_rows, "report": report.html_path or report.json_path,
        "champion_version": windows.champion_version, "sufficient": report.sufficient,
        "performance": report.performance, "consecutive": signal.consecutive,
    }
    emit(cfg.project, events.DRIFT_CHECKED, events.drift_payload(cfg.project, {**payload, "drifted": report.drifted}))
    if signal.alert:
        emit(cfg.project, events.DRIFT_DETECTED, events.drift_payload(cfg.project, payload, report.reason, signal.reason),
             cfg.notifications)
    return {"project": cfg.project, "drifted": report.drifted, "alert": signal.alert, "signal": signal.reason, **payload}
