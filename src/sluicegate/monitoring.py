"""Monitoring steps: the drift-check windows, performance on labelled rows, and the retrain cooldown."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from sluicegate.config import MonitoringConfig
from sluicegate.drift import DriftReport
from sluicegate.errors import RegistryError
from sluicegate.evaluation import compute_metrics
from sluicegate.serving.predlog import read_prediction_log

# columns of the prediction log (and ids) that are never features to test for drift
LOG_COLUMNS = ("ts", "model_version", "endpoint", "source", "prediction")


@dataclass(frozen=True)
class Windows:
    """Reference and current frames written to Parquet, with the columns to test."""

    reference_path: str
    current_path: str
    columns: tuple[str, ...]
    champion_version: str
    current_rows: int
    window: str


def load_windows(tracker: Any, project: str, target: str, id_column: str | None, spec: MonitoringConfig,
                 home: Path, out_dir: Path, current_path: str | None = None) -> Windows:
    """Write the reference and current windows of a drift check to `out_dir`.

    Args:
        tracker: the MLflow `Tracker` (champion lookup and model loading).
        project: project name.
        target: target column (never tested for drift; its presence gives performance).
        id_column: id column (never tested).
        spec: the `monitoring` section: window size, columns.
        home: SLUICE_HOME, where the prediction log lives.
        out_dir: where `reference.parquet` and `current.parquet` go.
        current_path: a CSV/Parquet batch to check instead of the prediction log.

    Returns:
        `Windows`: reference = the champion's training snapshot (plus its predictions when the
        current window has predictions); current = the batch or the last logged predictions.

    Raises:
        RegistryError: the project has no champion yet.
    """
    champ = tracker.champion(project)
    if champ is None:
        raise RegistryError(f"{project}: no champion yet; train one before checking drift")
    reference = pd.read_parquet(champ.tags["sluice.data_snapshot"])
    if current_path:
        p = Path(current_path)
        current = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        window = f"file {p.name}"
    else:
        since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=spec.window_hours) if spec.window_hours else None
        current = read_prediction_log(project, last_n=spec.window_rows, since=since, home=home)
        window = f"last {spec.window_rows} logged predictions" + (f" within {spec.window_hours} h" if since is not None else "")
    columns = drift_columns(reference, spec, {target, id_column, *LOG_COLUMNS})
    if "prediction" in current.columns and len(current):
        model = tracker.load_model(champ.registry_uri)
        reference = reference.assign(prediction=model.predict(reference[[c for c in reference.columns if c != target]]))
        current = current.assign(prediction=current["prediction"].map(lambda v: v[0] if isinstance(v, list) and len(v) == 1 else v))
        columns.append("prediction")
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_path, cur_path = out_dir / "reference.parquet", out_dir / "current.parquet"
    reference.to_parquet(ref_path, index=False)
    current.drop(columns=[c for c in ("ts",) if c in current.columns]).to_parquet(cur_path, index=False)
    return Windows(str(ref_path), str(cur_path), tuple(columns), champ.version, len(current), window)


def drift_columns(reference: pd.DataFrame, spec: MonitoringConfig, excluded: set[str | None]) -> list[str]:
    """The configured columns, or with `auto` every numeric or low-cardinality column not excluded."""
    if spec.columns != "auto":
        return list(spec.columns)
    # ids, dates and free text as categories would always look drifted
    return [c for c in reference.columns if c not in excluded
            and (pd.api.types.is_numeric_dtype(reference[c]) or reference[c].nunique() <= 50)]


def read_windows(windows: Windows) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (reference, current) frames of `load_windows`."""
    return pd.read_parquet(windows.reference_path), pd.read_parquet(windows.current_path)


def add_performance(report: DriftReport, current: pd.DataFrame, target: str, task_type: str,
                    load_model: Callable[[], Any]) -> DriftReport:
    """The report with the champion's metrics on the current rows that carry labels.

    Args:
        report: the drift check.
        current: the current window.
        target: the label column; rows where it is missing are not scored.
        task_type: classification or regression.
        load_model: returns the champion; called only when there are labelled rows.

    Returns:
        `report` unchanged when the window is too small or has no labels, else a copy with `performance`.
    """
    if not report.sufficient or target not in current.columns or not current[target].notna().any():
        return report
    labelled = current[current[target].notna()]
    return replace(report, performance=compute_metrics(task_type, load_model(), labelled, labelled[target].to_numpy()))


# ---------------------------------------------------------------- retrain cooldown
@dataclass(frozen=True)
class RetrainPermit:
    """Whether a retrain may start now, and why not."""

    allowed: bool
    reason: str


def retrain_state_path(home: Path, project: str) -> Path:
    return home / "monitoring" / project / "retrain_state.json"


def drift_state_path(home: Path, project: str) -> Path:
    return home / "monitoring" / project / "drift_state.json"


def start_retrain(state_path: Path, cooldown_minutes: float, reason: str, now: float | None = None) -> RetrainPermit:
    """Allow a retrain unless one started within the cooldown; record the start.

    Args:
        state_path: the project's retrain state file (see `retrain_state_path`).
        cooldown_minutes: the `monitoring.cooldown_minutes` setting.
        reason: why this retrain was asked for; stored with the start.
        now: the time (epoch seconds); default the clock.

    Returns:
        A `RetrainPermit`; a refused one leaves the state untouched.
    """
    now = time.time() if now is None else now
    state = _read_state(state_path)
    last = state.get("started_at")
    if last is not None and now - last < cooldown_minutes * 60:
        return RetrainPermit(False, f"skipped: last retrain started {now - last:.0f}s ago (cooldown {cooldown_minutes} min)")
    write_json_atomic(state_path, {**state, "started_at": now, "reason": reason})
    return RetrainPermit(True, "allowed")


def finish_retrain(state_path: Path, outcome: str, now: float | None = None) -> None:
    """Record how the retrain ended (promoted, unchanged, rejected)."""
    state = _read_state(state_path)
    write_json_atomic(state_path, {**state, "finished_at": time.time() if now is None else now, "outcome": outcome})


def _read_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and `os.replace`: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)
