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


@pytest.mark.parametrize("strategy, filled", [("most_frequent", "basic"), ("constant", "__missing__")])
def test_categorical_imputation_fills_missing_categories(tmp_path, strategy, filled):
    frame = churn_frame(400)
    frame.loc[frame.index % 7 == 0, "plan"] = None
    frame.loc[frame.index % 11 == 0, "region"] = float("nan")
    res = split_data(_snap(tmp_path, frame), SplitConfig(), "random", "churned", 0, tmp_path / "s")
    spec = FeaturesConfig(numeric={"columns": ["tenure"]}, categorical={"columns": ["plan", "region"], "impute": strategy})
    fs = build_features(res.train_path, res.valid_path, res.test_path, spec, "churned", set(), tmp_path / "f")
    names = list(fs.feature_names)
    assert not [n for n in names if n.endswith(("_None", "_nan"))], names  # missing is not a category
    pre = load_preprocessor(fs.preprocessor_path)
    rows = pd.DataFrame({"tenure": [5, 5], "plan": [None, filled if filled != "__missing__" else "pro"],
                         "region": [float("nan"), "north"]})
    out = pd.DataFrame(pre.transform(rows), columns=names)
    assert out.loc[0, f"plan_{filled}"] == 1.0 and out.filter(like="plan_").loc[0].sum() == 1.0
    assert out.filter(like="region_").loc[0].sum() == 1.0  # NaN is filled as None is


def test_without_imputation_missing_is_a_category_of_its_own(tmp_path):
    frame = churn_frame(400)
    frame.loc[frame.index % 7 == 0, "plan"] = None
    res = split_data(_snap(tmp_path, frame), SplitConfig(), "random", "churned", 0, tmp_path / "s")
    spec = FeaturesConfig(numeric={"columns": ["tenure"]}, categorical={"columns": ["plan"], "impute": "none"})
    fs = build_features(res.train_path, res.valid_path, res.test_path, spec, "churned", set(), tmp_path / "f")
    assert "plan_None" in fs.feature_names


def test_marker_columns_are_never_features(tmp_path):
    frame = churn_frame(200).assign(_sluice_origin="source")
    res = split_data(_snap(tmp_path, frame), SplitConfig(), "random", "churned", 0, tmp_path / "s")
    import shutil  # a part written by hand with the marker still in it, as a careless caller might
    shutil.copy(_snap(tmp_path, frame), res.train_path)
    fs = build_features(res.train_path, res.valid_path, res.test_path, FeaturesConfig(), "churned", {"customer_id"},
                        tmp_path / "f")
    assert not [n for n in fs.feature_names if "_sluice_" in n]
