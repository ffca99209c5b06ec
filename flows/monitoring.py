"""The drift check flow: compare recent traffic with the champion's training data and labels, alert on persistent
drift or degradation, and advance an open shadow or canary rollout."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by Prefect's loader: make `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow

from sluicegate import events, monitoring
from sluicegate.config import load_config
from sluicegate.projects import resolve_project
from tasks.events import emit
from tasks.monitor import check_drift, check_performance, load_windows, record_drift, record_performance
from tasks.rollout import advance_rollout

ROOT = Path(__file__).resolve().parents[1]


def config_for(project: str) -> str:
    """The YAML of a project name (the file under configs/ declaring it) or of a YAML path."""
    return str(resolve_project(project, ROOT)[1])


@flow(name="drift-check", log_prints=True)
def drift_check(project: str, current_path: str | None = None) -> dict:
    """Check the champion for data drift, prediction drift and degraded live performance.

    Reference is the champion's training snapshot (and its predictions on its holdout); current
    is the recent live prediction log (canary, shadow and health traffic excluded) or
    `current_path`, a CSV/Parquet batch. Each input is tested with K-S (numbers) or chi-square
    (categories) unless configured otherwise; the verdict weighs inputs by the champion's
    importance (see the README). Labels sent through /feedback (or a batch's target column)
    give the live metric. Emits `sluicegate.drift.checked` every time,
    `sluicegate.drift.detected` after drift in `monitoring.consecutive` checks in a row, and
    `sluicegate.performance.degraded` after as many degraded checks, outside the cooldown.
    With `monitoring.retrain: false` these are alerts only: no retraining starts.

    An open rollout (`deploy.strategy` shadow or canary) is checked first, as `sluice rollout
    check` does: a canary that held for its window is promoted (or waits for approval under
    `gates.approval`), a breach is rolled back and recorded; a shadow only reports. The
    `<project>-rollout` artifact shows the result; a failed promotion fails this run after the
    drift check.

    Args:
        project: project name (the YAML under configs/ declaring it) or a YAML path.
        current_path: a batch file to check instead of the prediction log.
    """
    cfg = load_config(config_for(project))
    mon = cfg.monitoring
    rollout_state = advance_rollout(cfg.project, cfg.packaging, cfg.task, cfg.gates.approval, cfg.notifications,
                                    return_state=True)  # a drift check that fails on its data holds no canary back
    metric = monitoring.performance_metric(mon.performance, cfg.gates.primary_metric)
    windows = load_windows(cfg.project, cfg.data.target, cfg.data.id_column, mon, current_path, cfg.task,
                           cfg.gates.primary_metric, cfg.seed)
    report = check_drift(cfg.project, windows, mon, cfg.seed)
    perf = check_performance(cfg.project, windows, mon, metric, cfg.task, cfg.data.target)
    signal = record_drift(cfg.project, report, mon)
    perf_signal = record_performance(cfg.project, perf, mon)
    text = monitoring.check_summary(cfg.project, windows, report, perf, signal, perf_signal)
    print(text)
    payload = {
        "drift_share": report.drift_share, "drifted_columns": list(report.drifted_columns),
        "weighted_share": report.verdict.weighted_share if report.verdict else None, "rule": report.rule,
        "columns": [{"column": c.column, "method": c.method, "statistic": c.score, "threshold": c.threshold,
                     "drifted": c.drifted, "importance_rank": c.rank} for c in report.columns],
        "prediction_drifted": bool(report.prediction and report.prediction.drifted),
        "window": windows.window, "current_rows": report.current_rows, "report": report.html_path or report.json_path,
        "champion_version": windows.champion_version, "sufficient": report.sufficient,
        "performance": perf.metrics, "performance_metric": metric, "performance_value": perf.value,
        "performance_rows": perf.rows, "performance_degraded": perf.degraded, "performance_reason": perf.reason,
        "consecutive": signal.consecutive,
    }
    emit(cfg.project, events.DRIFT_CHECKED, events.drift_payload(cfg.project, {**payload, "drifted": report.drifted}))
    if signal.alert:
        emit(cfg.project, events.DRIFT_DETECTED, events.drift_payload(cfg.project, payload, report.reason, signal.reason),
             cfg.notifications)
    if perf_signal.alert:
        emit(cfg.project, events.PERFORMANCE_DEGRADED,
             events.performance_payload(cfg.project, payload, perf.reason, perf_signal.reason), cfg.notifications)
    rollout = rollout_state.result()  # raises the rollout step's failure, now that the drift check is done
    if rollout is not None:
        text += f"\nrollout: {rollout.action}: {rollout.message}"
        print(f"rollout: {rollout.action}: {rollout.message}")
    return {"project": cfg.project, "drifted": report.drifted, "alert": signal.alert, "signal": signal.reason,
            "performance_alert": perf_signal.alert, "performance_signal": perf_signal.reason, "text": text,
            "rollout": None if rollout is None else {"action": rollout.action, "strategy": rollout.strategy,
                                                     "message": rollout.message,
                                                     "verdict": rollout.decision.verdict if rollout.decision else None},
            **payload}
