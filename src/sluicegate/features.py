"""Declarative feature transforms built as one scikit-learn ColumnTransformer, fitted on train only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler

from sluicegate.config import FeaturesConfig
from sluicegate.data import MARKER_PREFIX
from sluicegate.errors import DataValidationError


class DatetimeParts(TransformerMixin, BaseEstimator):
    """Expands datetime columns into numeric parts (year, month, ...)."""

    def __init__(self, parts=("year", "month", "dayofweek")):
        self.parts = parts

    def fit(self, X, y=None):
        self.columns_ = list(X.columns)
        return self

    def transform(self, X):
        out = {}
        for col in self.columns_:
            values = pd.to_datetime(X[col], errors="coerce")
            for part in self.parts:
                out[f"{col}_{part}"] = getattr(values.dt, part).astype("float64")
        return pd.DataFrame(out, index=X.index).fillna(-1.0).to_numpy()

    def get_feature_names_out(self, input_features=None):
        return np.array([f"{c}_{p}" for c in self.columns_ for p in self.parts], dtype=object)


@dataclass(frozen=True)
class FeatureColumns:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    datetime: tuple[str, ...]


@dataclass(frozen=True)
class FeatureSet:
    """The fitted transform and the transformed splits, all as files."""

    preprocessor_path: str
    arrays_path: str
    columns: FeatureColumns
    feature_names: tuple[str, ...]
    n_features: int


def select_columns(frame: pd.DataFrame, spec: FeaturesConfig, exclude: set[str]) -> FeatureColumns:
    """Resolve `auto` column lists from dtypes; listed columns must exist.

    Raises:
        DataValidationError: a listed column is missing, or a numeric column holds text.
    """
    # marker columns (`_sluice_origin`, ...) say where a row came from; they are never features
    dropped = set(spec.drop) | exclude | {c for c in frame.columns if str(c).startswith(MARKER_PREFIX)}
    dt = [c for c in spec.datetime.columns if c not in dropped]
    rest = [c for c in frame.columns if c not in dropped and c not in dt]
    if spec.numeric.columns == "auto":
        num = [c for c in rest if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    else:
        num = list(spec.numeric.columns)
    if spec.categorical.columns == "auto":
        cat = [c for c in rest if c not in num]
    else:
        cat = list(spec.categorical.columns)
    missing = [c for c in (*num, *cat, *dt) if c not in frame.columns]
    if missing:
        raise DataValidationError(f"features: columns not in the data: {', '.join(missing)}")
    texty = [c for c in num if not pd.api.types.is_numeric_dtype(frame[c])]
    if texty:
        raise DataValidationError(
            f"features.numeric.columns: {', '.join(texty)} should be numeric but hold text "
            f"(dtype {frame[texty[0]].dtype}); fix the data or list them as categorical"
        )
    return FeatureColumns(tuple(num), tuple(cat), tuple(dt))


def build_preprocessor(spec: FeaturesConfig, cols: FeatureColumns) -> ColumnTransformer:
    """The unfitted ColumnTransformer for the configured transforms."""
    parts = []
    if cols.numeric:
        steps = []
        if spec.numeric.impute != "none":
            strategy = "constant" if spec.numeric.impute == "zero" else spec.numeric.impute
            steps.append(("impute", SimpleImputer(strategy=strategy, fill_value=0.0)))
        scaler = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}.get(spec.numeric.scale)
        if scaler:
            steps.append(("scale", scaler()))
        parts.append(("num", Pipeline(steps) if steps else "passthrough", list(cols.numeric)))
    if cols.categorical:
        steps = []
        if spec.categorical.impute != "none":
            # `_as_str` sends every missing category as None, so None is what this imputer fills
            steps.append(("impute", SimpleImputer(strategy=spec.categorical.impute, missing_values=None,
                                                  fill_value="__missing__")))
        if spec.categorical.encode == "onehot":
            enc = OneHotEncoder(handle_unknown="infrequent_if_exist" if spec.categorical.min_frequency else "ignore",
                                min_frequency=spec.categorical.min_frequency, sparse_output=False)
        else:
            enc = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        steps.append(("encode", enc))
        parts.append(("cat", Pipeline(steps), list(cols.categorical)))
    if cols.datetime:
        parts.append(("dt", DatetimeParts(tuple(spec.datetime.parts)), list(cols.datetime)))
    if not parts:
        raise DataValidationError("features: no feature columns left after drop")
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def _as_str(frame: pd.DataFrame, cols: FeatureColumns) -> pd.DataFrame:
    """Categorical columns as text, every missing value (NaN, NaT, pd.NA) as None.

    One missing marker, so the fitted imputer (`missing_values=None`) fills all of them and the
    ONNX exporter can tell whether it does.
    """
    if not cols.categorical:
        return frame
    frame = frame.copy()
    for c in cols.categorical:
        frame[c] = frame[c].astype("object").where(frame[c].notna(), None)
        frame[c] = frame[c].map(lambda v: v if v is None else str(v))
    return frame


def build_features(
    train_path: str, valid_path: str, test_path: str, spec: FeaturesConfig, target: str,
    exclude: set[str], out_dir: Path,
) -> FeatureSet:
    """Fit the transform on the training split only and transform all three splits.

    Args:
        train_path, valid_path, test_path: Parquet splits.
        spec: the `features` section.
        target: target column (never a feature).
        exclude: other non-feature columns (id, time).
        out_dir: where the fitted transform and arrays are written.

    Returns:
        A `FeatureSet` of file paths and feature names.

    Raises:
        DataValidationError: columns missing or of the wrong type.
    """
    train, valid, test = (pd.read_parquet(p) for p in (train_path, valid_path, test_path))
    cols = select_columns(train, spec, exclude | {target})
    pre = build_preprocessor(spec, cols)
    pre.set_output(transform="default")
    x_train = pre.fit_transform(_as_str(train, cols)).astype(np.float32)
    arrays = {
        "X_train": x_train,
        "X_valid": pre.transform(_as_str(valid, cols)).astype(np.float32),
        "X_test": pre.transform(_as_str(test, cols)).astype(np.float32),
        "y_train": train[target].to_numpy(),
        "y_valid": valid[target].to_numpy(),
        "y_test": test[target].to_numpy(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    pre_path = out_dir / "preprocessor.joblib"
    joblib.dump(FeaturePipeline(pre, cols), pre_path)
    arr_path = out_dir / "arrays.npz"
    np.savez(arr_path, **{k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()})
    names = tuple(map(str, pre.get_feature_names_out()))
    return FeatureSet(str(pre_path), str(arr_path), cols, names, len(names))


class FeaturePipeline(TransformerMixin, BaseEstimator):
    """The fitted ColumnTransformer plus the column coercions serving must repeat."""

    def __init__(self, transformer=None, columns: FeatureColumns | None = None):
        self.transformer = transformer
        self.columns = columns

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return self.transformer.transform(_as_str(X, self.columns)).astype(np.float32)

    def get_feature_names_out(self, input_features=None):
        return self.transformer.get_feature_names_out()


def load_arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_preprocessor(path: str) -> FeaturePipeline:
    return joblib.load(path)
