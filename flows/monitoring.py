"""The drift check flow: compare recent traffic with the champion's training data, alert on persistent drift."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by Prefect's loader: make `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow

from sluicegate import events
from sluicegate.config import load_config
from sluicegate.projects import resolve_project
from tasks.events import emit
from tasks.monitor import check_drift, load_windows, record_drift


ROOT = Path(__file__).resolve().parents[1]


def config_for(project: str) -> str:
    """The YAML of a project name (the file under configs/ declaring it) or of a YAML path."""
    return str(resolve_project(project, ROOT)[1])


@flow(name="drift-check", log_prints=True)
def drift_check(project: str, current_path: str | None = None) -> dict:
    """Check the champion for data and prediction drift.

    Reference is the champion's training snapshot; current is the recent prediction log
    (or `current_path`, a CSV/Parquet batch, with labels in the target column when they have
    arrived). Emits `sluicegate.drift.checked` every time and `sluicegate.drift.detected`
    only after drift in `monitoring.consecutive` checks in a row, outside the cooldown.

    Args:
        project: project name (the YAML under configs/ declaring it) or a YAML path.
        current_path: a batch file to check instead of the prediction log.
    """
    cfg = load_config(config_for(project))
    windows = load_windows(cfg.project, cfg.data.target, cfg.data.id_column, cfg.monitoring, current_path)
    report = check_drift(cfg.project, windows, cfg.monitoring, cfg.task, cfg.data.target, cfg.seed)
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
