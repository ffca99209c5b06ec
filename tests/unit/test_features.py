"""The feature transform: fitted on train only, unseen categories, numbers turned to text."""

from __future__ import annotations

import pandas as pd
import pytest

from sluicegate.config import FeaturesConfig, SplitConfig
from sluicegate.data import snapshot_frame
from sluicegate.errors import DataValidationError
from sluicegate.features import build_features, load_arrays, load_preprocessor
from sluicegate.split import split_data
from tests.helpers import churn_frame


def test_features_fit_on_train_only_and_handle_unseen_categories(tmp_path):
    frame = churn_frame(400)
    res = split_data(_snap(tmp_path, frame), SplitConfig(), "stratified", "churned", 0, tmp_path / "s")
    spec = FeaturesConfig(datetime={"columns": ["signup_date"], "parts": ["month"]})
    fs = build_features(res.train_path, res.valid_path, res.test_path, spec, "churned", {"customer_id"}, tmp_path / "f")
    arrays = load_arrays(fs.arrays_path)
    assert arrays["X_train"].shape[1] == fs.n_features
    assert "customer_id" not in fs.feature_names and "signup_date_month" in fs.feature_names
    train = pd.read_parquet(res.train_path)
    scaled = arrays["X_train"][:, list(fs.feature_names).index("tenure")]
    assert abs(scaled.mean()) < 1e-5  # standardised with train statistics
    pre = load_preprocessor(fs.preprocessor_path)
    odd = train.head(3).copy()
    odd["plan"] = "enterprise"  # unseen category
    assert pre.transform(odd).shape == (3, fs.n_features)


def test_numbers_turned_to_text_are_named(tmp_path):
    frame = churn_frame(200)
    frame["tenure"] = frame["tenure"].astype(str) + " months"
    res = split_data(_snap(tmp_path, frame), SplitConfig(), "random", "churned", 0, tmp_path / "s")
    spec = FeaturesConfig(numeric={"columns": ["tenure"]}, categorical={"columns": ["plan"]})
    with pytest.raises(DataValidationError, match="tenure should be numeric"):
        build_features(res.train_path, res.valid_path, res.test_path, spec, "churned", set(), tmp_path / "f")


def _snap(tmp_path, frame):
    return snapshot_frame(frame, tmp_path / "store", "p").path
