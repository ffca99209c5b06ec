"""Tasks: load the windows, check drift and live performance, apply hysteresis."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from sluicegate import drift, monitoring
from sluicegate.config import MonitoringConfig
from sluicegate.drift import DriftReport, DriftSignal
from sluicegate.monitoring import PerformanceVerdict, Windows
from tasks._common import artifact_key, settings, tracker


@task(name="load-windows", retries=2, retry_delay_seconds=[2, 5])
def load_windows(project: str, target: str, id_column: str | None, spec: MonitoringConfig,
                 current_path: str | None = None, task_type: str = "classification", metric: str | None = None,
                 seed: int = 0) -> Windows:
    """Reference = the champion's training snapshot; current = a batch file or the live prediction log."""
    s = settings()
    out = s.runs_dir / project / "drift" / pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    return monitoring.load_windows(tracker(), project, target, id_column, spec, s.home, out, current_path,
                                   task=task_type, metric=metric, seed=seed)


@task(name="check-drift")
def check_drift(project: str, windows: Windows, spec: MonitoringConfig, seed: int = 0) -> DriftReport:
    """Evidently per-column and prediction drift, the importance-weighted verdict; the HTML report is linked."""
    reference, current = monitoring.read_windows(windows)
    report = drift.check_drift(reference, current, list(windows.columns), spec, Path(windows.current_path).parent, seed,
                               importance=windows.importance, reference_predictions=monitoring.reference_predictions(windows),
                               notes=windows.notes)
    create_markdown_artifact(report.to_markdown(), key=artifact_key(project, "drift"),
                             description=f"{project}: drift check on {windows.window}")
    if report.html_path:
        create_link_artifact(Path(report.html_path).resolve().as_uri(), link_text="Evidently drift report",
                             key=artifact_key(project, "drift-report"))
    return report


@task(name="check-performance")
def check_performance(project: str, windows: Windows, spec: MonitoringConfig, metric: str, task_type: str,
                      target: str) -> PerformanceVerdict:
    """The champion's live metric on the window's labelled predictions, against its floor and holdout value."""
    return monitoring.check_performance(windows, spec.performance, metric, task_type, target,
                                        lambda: tracker().load_model(f"models:/{project}/{windows.champion_version}"))


@task(name="record-drift")
def record_drift(project: str, report: DriftReport, spec: MonitoringConfig) -> DriftSignal:
    """Hysteresis and cooldown: alert only when drift persists."""
    return drift.record_drift(monitoring.drift_state_path(settings().home, project), report.drifted,
                              report.sufficient, spec.consecutive, spec.cooldown_minutes * 60)


@task(name="record-performance")
def record_performance(project: str, verdict: PerformanceVerdict, spec: MonitoringConfig) -> DriftSignal:
    """The same hysteresis and cooldown for degraded performance."""
    return drift.record_drift(monitoring.performance_state_path(settings().home, project), verdict.degraded,
                              verdict.sufficient, spec.consecutive, spec.cooldown_minutes * 60,
                              what="degraded performance")
