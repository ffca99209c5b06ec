"""Scores an exported ONNX graph with ONNX Runtime, from request records or from a DataFrame."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import pandas as pd

# The one module that imports onnxruntime. It never imports onnx or skl2onnx, so a serving image
# needs only onnxruntime; `OnnxExport` (the exporter's result) lives here for the same reason.

MODEL_FILE = "model.onnx"
META_FILE = "onnx.json"
# Rows per Runtime call when scoring a DataFrame: bounds memory of the per-column input arrays.
BATCH_CHUNK = 131072
MISSING_CATEGORY = ""  # what a None/NaN categorical is sent as (the graph has no string NaN)
MISSING_DATE_PART = -1.0  # DatetimeParts fills unparseable dates with -1
# Probabilities this close to the row's best count as tied: the native classifiers take the first of
# exactly tied classes (10 of 20 trees), which float32 sums in the graph leave ~1e-7 apart.
TIE_EPS = 1e-6


@dataclass(frozen=True)
class OnnxInput:
    """One graph input: a raw column, or one part of a datetime column (`part` set)."""

    name: str
    column: str
    kind: Literal["numeric", "categorical", "datetime"]
    part: str | None = None


@dataclass(frozen=True)
class OnnxExport:
    """An ONNX graph of a whole pipeline and what it takes to feed it, or why there is none.

    `model` is the serialised ModelProto; everything else is JSON metadata (`to_dict`).
    Classifier labels come out of the graph as labels, or as indices into `classes` when
    `label_is_index` (XGBoost, trained on encoded labels).
    """

    ok: bool
    reason: str | None = None
    task: str = ""
    kind: str = ""
    model: bytes | None = field(default=None, repr=False)
    inputs: tuple[OnnxInput, ...] = ()
    classes: tuple[Any, ...] | None = None
    label_output: str | None = None
    proba_output: str | None = None
    value_output: str | None = None
    label_is_index: bool = False
    opset: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("model")
        data["inputs"] = [asdict(i) for i in self.inputs]
        data["classes"] = list(self.classes) if self.classes is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], model: bytes | None = None) -> OnnxExport:
        data = dict(data)
        data["inputs"] = tuple(OnnxInput(**i) for i in data.get("inputs", ()))
        if data.get("classes") is not None:
            data["classes"] = tuple(data["classes"])
        return cls(model=model, **data)

    def save(self, folder: Path) -> Path:
        """Write `model.onnx` and `onnx.json` into `folder`; returns the graph's path."""
        if not self.ok or self.model is None:
            raise ValueError(f"no ONNX graph to save: {self.reason}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_bytes(self.model)
        (folder / META_FILE).write_text(json.dumps(self.to_dict(), indent=2, default=str))
        return folder / MODEL_FILE

    @classmethod
    def load(cls, folder: Path) -> OnnxExport:
        return cls.from_dict(json.loads((folder / META_FILE).read_text()), (folder / MODEL_FILE).read_bytes())


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def _number(value: Any, column: str = "") -> float:
    if _is_missing(value):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"field {column!r} must be a number or null (got {value!r})") from None


def _numbers(values: list[Any], column: str) -> np.ndarray:
    """float64 values, None as NaN; numpy converts a whole list in C, each value checked only when it refuses."""
    try:
        if not any(isinstance(v, (str, bytes)) for v in values):  # numpy would parse "1.5" as a number
            return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    return np.fromiter((_number(v, column) for v in values), dtype=np.float64, count=len(values))


def _category(value: Any) -> str:
    # The same coercion as the training pipeline (features._as_str): str() of the value.
    return MISSING_CATEGORY if _is_missing(value) else str(value)


def _timestamp(value: Any) -> dt.datetime | pd.Timestamp | None:
    """One value parsed as the training pipeline parses a date (pandas), ISO text fast."""
    if _is_missing(value):
        return None
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    try:
        ts = pd.to_datetime(value, errors="coerce")
    except (TypeError, ValueError):
        return None
    return None if ts is pd.NaT or pd.isna(ts) else ts


def _date_part(ts: Any, part: str) -> float:
    if ts is None:
        return MISSING_DATE_PART
    if part == "dayofweek":
        return float(ts.weekday())
    return float(getattr(ts, part))


class OnnxPredictor:
    """Answers like the native pipeline from an `OnnxExport`, one ONNX Runtime session.

    Args:
        export: a successful export (`ok`).
        threads: intra-op threads; 1 suits many small concurrent requests.
    """

    def __init__(self, export: OnnxExport, threads: int = 1):
        if not export.ok or export.model is None:
            raise ValueError(f"cannot serve a failed ONNX export: {export.reason}")
        self.export = export
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(export.model, sess_options=opts, providers=["CPUExecutionProvider"])
        self.inputs = export.inputs
        self.classes = list(export.classes) if export.classes is not None else None
        self._classes_array = np.asarray(self.classes, dtype=object) if self.classes is not None else None

    # ------------------------------------------------------------ inputs
    def feeds_from_records(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Per-input arrays from request records (dicts with the served field names), no DataFrame."""
        n = len(records)
        feeds: dict[str, np.ndarray] = {}
        parsed: dict[str, list] = {}
        for spec in self.inputs:
            if spec.kind == "numeric":
                arr = _numbers([r.get(spec.column) for r in records], spec.column)
            elif spec.kind == "categorical":
                arr = np.array([_category(r.get(spec.column)) for r in records], dtype=object)
            else:
                if spec.column not in parsed:
                    parsed[spec.column] = [_timestamp(r.get(spec.column)) for r in records]
                arr = np.fromiter((_date_part(t, spec.part) for t in parsed[spec.column]), dtype=np.float32, count=n)
            feeds[spec.name] = arr.reshape(n, 1)
        return feeds

    def feeds_from_frame(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-input arrays from a DataFrame, with the training pipeline's own column coercions."""
        n = len(frame)
        feeds: dict[str, np.ndarray] = {}
        dates: dict[str, pd.Series] = {}
        for spec in self.inputs:
            col = frame[spec.column]
            if spec.kind == "numeric":
                arr = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            elif spec.kind == "categorical":
                missing = col.isna().to_numpy()
                arr = col.astype("object").astype(str).to_numpy(dtype=object)  # str() per value, in C
                arr[missing] = MISSING_CATEGORY
            else:
                if spec.column not in dates:
                    # exactly DatetimeParts.transform: the whole column through pd.to_datetime
                    dates[spec.column] = pd.to_datetime(col, errors="coerce")
                arr = getattr(dates[spec.column].dt, spec.part).astype("float64") \
                    .fillna(MISSING_DATE_PART).to_numpy(dtype=np.float32)
            feeds[spec.name] = arr.reshape(n, 1)
        return feeds

    # ------------------------------------------------------------ raw outputs
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o for o in (self.export.label_output, self.export.proba_output, self.export.value_output) if o]
        return dict(zip(names, self.session.run(names, feeds)))

    def _labels(self, out: dict[str, np.ndarray]) -> np.ndarray:
        if self.export.proba_output:
            # as the native classifiers: the first class with the highest probability (the graph's
            # own label breaks ties the other way)
            proba = np.asarray(out[self.export.proba_output])
            best = proba >= proba.max(axis=1, keepdims=True) - TIE_EPS
            return self._classes_array[np.argmax(best, axis=1)]
        raw = np.asarray(out[self.export.label_output]).reshape(-1)
        if self.export.label_is_index:
            return self._classes_array[raw.astype(np.int64)]
        return raw

    def _outputs(self, feeds: dict[str, np.ndarray], what: str) -> np.ndarray:
        out = self.run(feeds)
        if what == "proba":
            if not self.export.proba_output:
                raise AttributeError(f"this {self.export.kind} model has no predict_proba")
            return np.asarray(out[self.export.proba_output], dtype=np.float32)
        if self.export.task == "classification":
            return self._labels(out)
        return np.asarray(out[self.export.value_output], dtype=np.float32).reshape(-1)

    # ------------------------------------------------------------ records (serving)
    def predict(self, records: list[dict[str, Any]]) -> list[Any]:
        """Labels (classification) or values (regression), one per record, as plain Python values."""
        if not records:
            return []
        return [_plain(v) for v in self._outputs(self.feeds_from_records(records), "value").tolist()]

    def predict_proba(self, records: list[dict[str, Any]]) -> list[dict[Any, float]]:
        """Class probabilities per record, keyed by the native model's class labels in its order."""
        if not records:
            return []
        proba = self._outputs(self.feeds_from_records(records), "proba")
        labels = [_plain(c) for c in self.classes]
        return [dict(zip(labels, map(float, row))) for row in proba.tolist()]

    # ------------------------------------------------------------ DataFrame (batch scoring)
    def predict_frame(self, frame: pd.DataFrame, chunk: int = BATCH_CHUNK) -> np.ndarray:
        """Labels or values for every row of `frame` (extra columns ignored), in chunks."""
        return self._frame(frame, "value", chunk)

    def predict_proba_frame(self, frame: pd.DataFrame, chunk: int = BATCH_CHUNK) -> np.ndarray:
        """An (n, n_classes) float32 array, columns in `classes` order."""
        return self._frame(frame, "proba", chunk)

    def _frame(self, frame: pd.DataFrame, what: str, chunk: int) -> np.ndarray:
        parts = [self._outputs(self.feeds_from_frame(frame.iloc[i:i + chunk]), what)
                 for i in range(0, len(frame), chunk)]
        if not parts:
            width = (len(self.classes),) if what == "proba" else ()
            return np.zeros((0, *width), dtype=np.float32)
        return np.concatenate(parts)
