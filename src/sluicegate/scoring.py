"""Batch scoring: a CSV or Parquet file scored with a registered version, with version and input fingerprint columns."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sluicegate.data import fingerprint_frame
from sluicegate.errors import DataSourceError, DataValidationError, RegistryError

log = logging.getLogger(__name__)

READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}


@dataclass(frozen=True)
class ScoreResult:
    """Where the scored rows went, how many, and which model and input produced them."""

    output_path: str
    rows: int
    project: str
    model_version: str
    input_fingerprint: str
    runtime: str = "native"  # what scored the rows: onnx or native


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file by its suffix.

    Raises:
        DataSourceError: missing file, unknown suffix, or unreadable content.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataSourceError(f"{path}: unsupported input type {path.suffix!r} (use .csv or .parquet)")
    if not path.exists():
        raise DataSourceError(f"{path}: file not found")
    try:
        return reader(path)
    except Exception as exc:
        raise DataSourceError(f"{path}: cannot read: {exc}") from exc


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write by suffix (.csv or .parquet) through a temporary file, so readers never see half a file."""
    path = Path(path)
    if path.suffix.lower() not in READERS:
        raise DataSourceError(f"{path}: unsupported output type {path.suffix!r} (use .csv or .parquet)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def model_input_columns(model: Any) -> list[str]:
    """The raw columns a sluicegate pipeline reads (numeric, categorical, datetime)."""
    cols = getattr(getattr(model, "named_steps", {}).get("features"), "columns", None)
    if cols is None:
        raise RegistryError("the model is not a sluicegate pipeline (no 'features' step); re-train it with `sluice run`")
    return [*cols.numeric, *cols.categorical, *cols.datetime]


def version_predictor(tracker: Any, record: Any, runtime: str = "auto") -> Any:
    """The version's ONNX predictor when `runtime` allows it and its graph passed parity, else None (native).

    The graph is the one packaging stored with the version (`sluice.onnx: ok`); `auto` uses it when
    there is one, `native` never, `onnx` insists.

    Raises:
        RegistryError: `runtime` is `onnx` and the version has no graph that passed parity.
    """
    if runtime not in ("auto", "onnx", "native"):
        raise RegistryError(f"runtime must be auto, onnx or native (got {runtime!r})")
    if runtime == "native":
        return None
    status = record.tags.get("sluice.onnx")
    if status != "ok":
        if runtime == "onnx":
            why = "it was never packaged (`sluice deploy` exports it)" if status is None else \
                f"its export is {status}: {record.tags.get('sluice.onnx_reason')}"
            raise RegistryError(f"{record.project} v{record.version} has no ONNX graph to score with: {why}")
        return None
    key = (tracker.tracking_uri, record.project, record.version)
    if key not in _PREDICTORS:
        import tempfile

        from sluicegate.onnx_runtime import OnnxExport, OnnxPredictor

        with tempfile.TemporaryDirectory(prefix="sluice-onnx-") as tmp:
            folder = tracker.download_version_files(record, "onnx", Path(tmp))
            if folder is None:
                raise RegistryError(f"{record.project} v{record.version} is tagged sluice.onnx=ok but its run has no "
                                    "onnx/ artifacts; re-package it")
            # batch scoring: one Runtime call per chunk, so intra-op threads pay off here
            _PREDICTORS[key] = OnnxPredictor(OnnxExport.load(folder), threads=os.cpu_count() or 1)
    return _PREDICTORS[key]


_PREDICTORS: dict[tuple[str, str, str], Any] = {}  # per process: each version's graph loaded once


def score_frame(model: Any, frame: pd.DataFrame, version: str, fingerprint: str, task: str,
                predictor: Any = None) -> pd.DataFrame:
    """Append `prediction` (and `proba_<class>` for classifiers), `model_version` and `input_fingerprint`.

    Args:
        model: the full pipeline (features + estimator).
        frame: the rows to score; extra columns are kept in the output, untouched.
        version: registered model version, written on every row.
        fingerprint: content hash of the input, written on every row.
        task: classification or regression.
        predictor: the version's `OnnxPredictor`, which then scores in place of `model` (same columns).

    Returns:
        A new frame; the input is not modified.

    Raises:
        DataValidationError: columns the model needs are missing.
    """
    needed = model_input_columns(model)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataValidationError(f"input is missing model columns: {', '.join(missing)}")
    features = frame[needed]
    out = frame.copy()
    if predictor is not None:
        values = predictor.predict_frame(features)
        # the native dtype: labels as the classes are typed, regression values as float64
        out["prediction"] = values.astype(np.asarray(model.classes_).dtype) if task == "classification" \
            else values.astype(np.float64)
    else:
        out["prediction"] = model.predict(features)
    if task == "classification" and hasattr(model, "predict_proba"):
        proba = predictor.predict_proba_frame(features).astype(np.float64) if predictor is not None \
            else model.predict_proba(features)
        for i, label in enumerate(model.classes_):
            out[f"proba_{label}"] = proba[:, i]
    out["model_version"] = str(version)
    out["input_fingerprint"] = fingerprint
    return out


def score_batch(tracker: Any, project: str, input_path: str, output_path: str, version: str | None = None,
                runtime: str = "auto") -> ScoreResult:
    """Score a file with the champion (or a given version) and write the result.

    `runtime`: auto scores with the version's ONNX graph when it passed parity at packaging (as
    the served model does), native with the pickled pipeline, onnx insists on the graph.

    Raises:
        RegistryError: no champion / no such version; `runtime: onnx` without a graph.
        DataSourceError: the input cannot be read or the output written.
        DataValidationError: the input lacks columns the model needs.
    """
    record = tracker.version(project, version) if version else tracker.champion(project)
    if record is None:
        raise RegistryError(f"{project}: no champion to score with; train one with `sluice run` first")
    frame = read_table(input_path)
    fingerprint = fingerprint_frame(frame)
    model = tracker.load_model(record.model_uri)
    task = record.tags.get("sluice.task", "classification")
    predictor = version_predictor(tracker, record, runtime)
    scored = score_frame(model, frame, record.version, fingerprint, task, predictor)
    path = write_table(scored, output_path)
    name = "onnx" if predictor is not None else "native"
    log.info("scored %d rows of %s with %s v%s (%s) -> %s", len(scored), input_path, project, record.version, name, path)
    return ScoreResult(str(path), len(scored), project, record.version, fingerprint, name)
