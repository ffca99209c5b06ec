"""Tasks: load the reference and current windows, check drift, apply hysteresis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from sluicegate.config import MonitoringConfig
from sluicegate.drift import DriftReport, DriftSignal, check_drift, update_drift_state
from sluicegate.errors import RegistryError
from sluicegate.evaluation import compute_metrics
from sluicegate.serving.predlog import read_prediction_log
from tasks._common import artifact_key, settings, tracker


@dataclass(frozen=True)
class Windows:
    """Reference and current frames written to Parquet, with the columns to test."""

    reference_path: str
    current_path: str
    columns: tuple[str, ...]
    champion_version: str
    current_rows: int
    window: str


@task(name="load-windows", retries=2, retry_delay_seconds=[2, 5])
def load_windows(project: str, target: str, id_column: str | None, spec: MonitoringConfig,
                 current_path: str | None = None) -> Windows:
    """Reference = the champion's training snapshot; current = a batch file or the prediction log."""
    tr = tracker()
    champ = tr.champion(project)
    if champ is None:
        raise RegistryError(f"{project}: no champion yet; train one before checking drift")
    reference = pd.read_parquet(champ.tags["sluice.data_snapshot"])
    if current_path:
        p = Path(current_path)
        current = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        window = f"file {p.name}"
    else:
        since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=spec.window_hours) if spec.window_hours else None
        current = read_prediction_log(project, last_n=spec.window_rows, since=since, home=settings().home)
        window = f"last {spec.window_rows} logged predictions" + (f" within {spec.window_hours} h" if since is not None else "")
    excluded = {target, id_column, "ts", "model_version", "endpoint", "source", "prediction"}
    if spec.columns == "auto":  # ids, dates and free text as categories would always look drifted
        columns = [c for c in reference.columns if c not in excluded
                   and (pd.api.types.is_numeric_dtype(reference[c]) or reference[c].nunique() <= 50)]
    else:
        columns = list(spec.columns)
    if "prediction" in current.columns and len(current):
        model = tr.load_model(champ.registry_uri)
        reference = reference.assign(prediction=model.predict(reference[[c for c in reference.columns if c != target]]))
        current = current.assign(prediction=current["prediction"].map(lambda v: v[0] if isinstance(v, list) and len(v) == 1 else v))
        columns.append("prediction")
    out = settings().runs_dir / project / "drift" / pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%f")
    out.mkdir(parents=True, exist_ok=True)
    ref_path, cur_path = out / "reference.parquet", out / "current.parquet"
    reference.to_parquet(ref_path, index=False)
    current.drop(columns=[c for c in ("ts",) if c in current.columns]).to_parquet(cur_path, index=False)
    return Windows(str(ref_path), str(cur_path), tuple(columns), champ.version, len(current), window)


@task(name="check-drift")
def run_drift_check(project: str, windows: Windows, spec: MonitoringConfig, task_type: str, target: str,
                    seed: int = 0) -> DriftReport:
    """Evidently per-column and dataset drift; the HTML report is linked from the run."""
    reference = pd.read_parquet(windows.reference_path)
    current = pd.read_parquet(windows.current_path)
    report = check_drift(reference, current, list(windows.columns), spec, Path(windows.current_path).parent, seed)
    if report.sufficient and target in current.columns and current[target].notna().any():
        labelled = current[current[target].notna()]
        model = tracker().load_model(f"models:/{project}/{windows.champion_version}")
        perf = compute_metrics(task_type, model, labelled, labelled[target].to_numpy())
        report = DriftReport(**{**report.__dict__, "performance": perf})
    create_markdown_artifact(report.to_markdown(), key=artifact_key(project, "drift"),
                             description=f"{project}: drift check on {windows.window}")
    if report.html_path:
        create_link_artifact(Path(report.html_path).resolve().as_uri(), link_text="Evidently drift report",
                             key=artifact_key(project, "drift-report"))
    print(report.reason)
    return report


@task(name="record-drift")
def record_drift(project: str, report: DriftReport, spec: MonitoringConfig) -> DriftSignal:
    """Hysteresis and cooldown: alert only when drift persists."""
    state = settings().home / "monitoring" / project / "drift_state.json"
    signal = update_drift_state(state, report.drifted, report.sufficient, spec.consecutive, spec.cooldown_minutes * 60)
    print(f"drift signal: {signal.reason}")
    return signal
