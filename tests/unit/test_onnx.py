"""ONNX export of whole pipelines: every supported kind converts, matches the native model, and serves from records."""

from __future__ import annotations

import copy
import datetime as dt
import json

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

from sluicegate.config import FeaturesConfig, SklearnModelConfig, TorchModelConfig, XGBoostModelConfig
from sluicegate.features import FeatureColumns, FeaturePipeline, _as_str, build_preprocessor
from sluicegate.onnx_export import ParityReport, check_parity, export_onnx
from sluicegate.onnx_runtime import OnnxExport, OnnxPredictor
from sluicegate.trainers import registry
from sluicegate.trainers.sk import ESTIMATORS
from tests.helpers import churn_frame

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NUMERIC = ("tenure", "monthly_charges", "support_calls")
CATEGORICAL = ("plan", "region")
DATES = ("signup_date",)
TARGETS = {"classification": "churned", "regression": "monthly_charges", "multiclass": "plan"}
DEFAULT_FEATURES = FeaturesConfig(datetime={"columns": list(DATES), "parts": ["year", "month", "dayofweek"]})


def _specs() -> list[tuple[str, str, object]]:
    """(case id, task, model section) for every registered sklearn estimator and task, XGBoost and torch."""
    out = []
    for name, tasks in ESTIMATORS.items():
        for task in tasks:
            params = {"n_estimators": 15} if name in ("random_forest", "extra_trees", "gradient_boosting") else {}
            if name == "hist_gradient_boosting":
                params = {"max_iter": 15}
            out.append((f"{name}-{task}", task, SklearnModelConfig(kind="sklearn", estimator=name, params=params)))
    for task in ("classification", "regression", "multiclass"):
        out.append((f"xgboost-{task}", task, XGBoostModelConfig(kind="xgboost", params={"n_estimators": 20, "n_jobs": 1})))
        out.append((f"torch-{task}", task, TorchModelConfig(
            kind="torch", hidden_layers=[16, 8], epochs=4, batch_size=64, num_threads=1,
            norm="batch" if task == "multiclass" else "layer", activation="gelu" if task == "regression" else "relu",
        )))
    out.append(("logistic_regression-multiclass", "multiclass",
                SklearnModelConfig(kind="sklearn", estimator="logistic_regression", params={"max_iter": 300})))
    return out


SPECS = _specs()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """The churn table with missing numerics and categoricals, as served data has them."""
    f = churn_frame(520, seed=5)
    rng = np.random.default_rng(1)
    f.loc[rng.random(len(f)) < 0.08, "plan"] = np.nan
    f.loc[rng.random(len(f)) < 0.08, "region"] = np.nan
    f.loc[rng.random(len(f)) < 0.08, "tenure"] = np.nan
    f.loc[rng.random(len(f)) < 0.03, "signup_date"] = None
    return f


def fit_pipeline(frame: pd.DataFrame, task: str, spec, features: FeaturesConfig = DEFAULT_FEATURES):
    """The trainer's Pipeline(features, model), fitted in memory; returns it, the holdout and the sk task."""
    target = TARGETS[task]
    sk_task = "classification" if task == "multiclass" else task
    data = frame.dropna(subset=[target]) if task == "multiclass" else frame
    cols = FeatureColumns(tuple(c for c in NUMERIC if c != target), tuple(c for c in CATEGORICAL if c != target),
                          DATES)
    X = data[[*cols.numeric, *cols.categorical, *cols.datetime]]
    y = data[target].to_numpy()
    train, holdout = X.iloc[:360], X.iloc[360:]
    pre = build_preprocessor(features, cols)
    pre.fit(_as_str(train, cols))
    fp = FeaturePipeline(pre, cols)
    xt = fp.transform(train)
    est = registry.get_trainer(spec.kind).fit(spec, sk_task, xt[:280], y[:280], xt[280:360], y[280:360], 3)
    return Pipeline([("features", fp), ("model", est)]), holdout.reset_index(drop=True), sk_task


def awkward_records(holdout: pd.DataFrame) -> list[dict]:
    """Holdout rows as request records, some with a missing numeric, an unseen or missing category, no date."""
    records = json.loads(holdout.head(12).to_json(orient="records"))
    records[0]["tenure"] = None
    records[1]["region"] = "central"  # never seen in training
    if "plan" in records[2]:
        records[2]["plan"] = "enterprise"
    records[3]["region"] = None
    records[4]["signup_date"] = None
    records[5]["signup_date"] = "2025-02-30"  # not a date: native parses it as missing
    records[6]["signup_date"] = dt.date(2024, 7, 9)
    return records


def native_input(records: list[dict]) -> pd.DataFrame:
    """What the native service scores: the records as a frame, dates as ISO text (schema.records_frame)."""
    return pd.DataFrame([{k: v.isoformat() if isinstance(v, dt.date) else v for k, v in r.items()} for r in records])


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


@pytest.mark.parametrize("case,task,spec", SPECS, ids=[c for c, _, _ in SPECS])
def test_export_matches_the_native_pipeline(frame, case, task, spec):
    model, holdout, sk_task = fit_pipeline(frame, task, spec)
    export = export_onnx(model, holdout, sk_task)
    assert export.ok, export.reason

    report = check_parity(model, export, holdout, sk_task)
    assert report.passed, report.to_dict()
    assert report.rows == len(holdout)
    if sk_task == "classification":
        assert report.labels_equal == 1.0 or report.label_mismatches == report.near_ties
    json.dumps(report.to_dict())  # stored with the registered version later

    predictor = OnnxPredictor(export)
    records = awkward_records(holdout)
    native_frame = native_input(records)
    if sk_task == "classification":
        assert predictor.predict(records) == [_plain(v) for v in model.predict(native_frame)]
        if hasattr(model, "predict_proba"):
            got = predictor.predict_proba(records)
            want = model.predict_proba(native_frame)
            assert [list(row) for row in got] == [[_plain(c) for c in model.classes_]] * len(records)
            assert np.abs(np.array([list(r.values()) for r in got]) - want).max() <= 1e-4
    else:
        got = np.array(predictor.predict(records))
        want = model.predict(native_frame)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


@pytest.fixture(scope="module")
def logistic(frame):
    spec = SklearnModelConfig(kind="sklearn", estimator="logistic_regression", params={"max_iter": 300})
    model, holdout, _ = fit_pipeline(frame, "classification", spec)
    return model, holdout, export_onnx(model, holdout, "classification")


def test_records_build_inputs_without_a_dataframe_and_default_to_one_thread(logistic):
    model, holdout, export = logistic
    predictor = OnnxPredictor(export)
    assert predictor.session.get_session_options().intra_op_num_threads == 1
    feeds = predictor.feeds_from_records(awkward_records(holdout))
    assert feeds["tenure"].dtype == np.float64 and np.isnan(feeds["tenure"][0, 0])
    assert feeds["region"][3, 0] == ""  # missing categories travel as "" (no NaN in string tensors)
    assert feeds["signup_date__month"][4, 0] == -1.0  # as DatetimeParts fills a missing date
    assert predictor.predict([]) == [] and predictor.predict_proba([]) == []
    with pytest.raises(ValueError, match="field 'tenure' must be a number or null"):
        predictor.predict([{**awkward_records(holdout)[1], "tenure": "long"}])


def test_batch_scoring_from_a_dataframe_matches(logistic):
    model, holdout, export = logistic
    predictor = OnnxPredictor(export)
    big = pd.concat([holdout] * 3, ignore_index=True)
    proba = predictor.predict_proba_frame(big, chunk=50)  # several Runtime calls
    assert proba.shape == (len(big), 2)
    assert np.abs(proba - model.predict_proba(big)).max() <= 1e-4
    assert list(predictor.predict_frame(big)) == list(model.predict(big))


def test_export_saves_and_loads_with_json_metadata(logistic, tmp_path):
    model, holdout, export = logistic
    export.save(tmp_path / "onnx")
    meta = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert meta["ok"] and meta["classes"] == [0, 1]
    assert meta["opset"]["ai.onnx"] <= 17 and meta["opset"]["ai.onnx.ml"] <= 3  # what the graph needs
    assert {i["kind"] for i in meta["inputs"]} == {"numeric", "categorical", "datetime"}
    loaded = OnnxExport.load(tmp_path / "onnx")
    records = awkward_records(holdout)
    assert OnnxPredictor(loaded).predict_proba(records) == OnnxPredictor(export).predict_proba(records)


# ---------------------------------------------------------------- what does not convert says why
class MajorityClassifier(ClassifierMixin, BaseEstimator):
    """An estimator skl2onnx has never heard of."""

    def fit(self, X, y):
        self.classes_, counts = np.unique(y, return_counts=True)
        self.majority_ = self.classes_[np.argmax(counts)]
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)


def test_unknown_estimator_is_not_convertible_with_a_reason(logistic):
    model, holdout, _ = logistic
    features = model.steps[0][1]
    custom = Pipeline([("features", features), ("model", MajorityClassifier().fit(features.transform(holdout), [0, 1] * 80))])
    export = export_onnx(custom, holdout, "classification")
    assert not export.ok and "MajorityClassifier" in export.reason
    with pytest.raises(ValueError, match="failed ONNX export"):
        OnnxPredictor(export)
    report = check_parity(custom, export, holdout, "classification")
    assert not report.passed and "no ONNX graph" in report.reason


@pytest.mark.parametrize("categorical", [{"min_frequency": 50}, {"encode": "ordinal"}, {"impute": "constant"}],
                         ids=["onehot-infrequent", "ordinal", "impute-constant"])
def test_categorical_settings_convert_with_unseen_and_missing_categories(frame, categorical):
    spec = SklearnModelConfig(kind="sklearn", estimator="random_forest", params={"n_estimators": 15})
    features = FeaturesConfig(categorical=categorical, numeric={"impute": "mean", "scale": "minmax"},
                              datetime={"columns": list(DATES), "parts": ["year", "month", "day", "dayofweek", "hour"]})
    model, holdout, _ = fit_pipeline(frame, "classification", spec, features)
    export = export_onnx(model, holdout, "classification")
    assert export.ok, export.reason
    assert check_parity(model, export, holdout, "classification").passed
    records = awkward_records(holdout)
    got = OnnxPredictor(export).predict_proba(records)
    assert np.abs(np.array([list(r.values()) for r in got]) - model.predict_proba(native_input(records))).max() <= 1e-4


def test_a_custom_feature_step_is_not_convertible_with_a_reason(logistic):
    from sklearn.preprocessing import FunctionTransformer

    model, holdout, _ = logistic
    custom = copy.deepcopy(model)
    ct = custom.steps[0][1].transformer
    name, numeric, cols = ct.transformers_[0]
    numeric.steps.insert(1, ("log", FunctionTransformer(np.log1p)))
    export = export_onnx(custom, holdout, "classification")
    assert not export.ok and "features.num: FunctionTransformer has no ONNX converter" in export.reason


def test_a_bare_estimator_is_not_convertible_with_a_reason(logistic):
    model, holdout, _ = logistic
    export = export_onnx(model.steps[1][1], holdout, "classification")
    assert not export.ok and "Pipeline(features, model)" in export.reason


# ---------------------------------------------------------------- the parity check can fail
def test_a_tampered_graph_fails_parity(logistic):
    model, holdout, export = logistic
    graph = onnx.load_from_string(export.model)
    node = next(n for n in graph.graph.node if n.op_type == "LinearClassifier")
    coefficients = next(a for a in node.attribute if a.name == "coefficients")
    coefficients.floats[0] += 0.05  # the first feature's weight, slightly off
    tampered = OnnxExport(**{**export.__dict__, "model": graph.SerializeToString()})
    report = check_parity(model, tampered, holdout, "classification")
    assert not report.passed
    assert report.max_abs_diff > report.limit and report.examples
    assert isinstance(report, ParityReport) and json.loads(json.dumps(report.to_dict()))["passed"] is False


def test_another_models_graph_fails_parity(frame):
    spec = SklearnModelConfig(kind="sklearn", estimator="ridge")
    model, holdout, _ = fit_pipeline(frame, "regression", spec)
    other, _, _ = fit_pipeline(frame, "regression", SklearnModelConfig(kind="sklearn", estimator="ridge",
                                                                          params={"alpha": 300.0}))
    report = check_parity(model, export_onnx(other, holdout, "regression"), holdout, "regression")
    assert not report.passed and report.compared == "values" and report.max_abs_diff > report.limit


def test_tolerance_is_stated_and_tightening_it_can_fail(logistic):
    model, holdout, export = logistic
    report = check_parity(model, export, holdout, "classification")
    assert report.passed and report.tolerance == 1e-4 and report.max_abs_diff < 1e-6
    assert not check_parity(model, export, holdout, "classification", tolerance=1e-12).passed


def test_equally_far_neighbours_are_near_ties_not_failures():
    """Which of two equally far training rows a k-NN model takes is float rounding, in any runtime."""
    from sklearn.neighbors import KNeighborsRegressor

    from sluicegate.onnx_export import _neighbour_ties

    est = KNeighborsRegressor(n_neighbors=1).fit(np.array([[0.0], [2.0], [9.0]]), np.array([0.0, 10.0, 5.0]))
    ties = _neighbour_ties(est, np.array([[1.0], [0.2], [5.5]]))
    assert ties.tolist() == [True, False, True]
    lone = KNeighborsRegressor(n_neighbors=1).fit(np.array([[0.0]]), np.array([1.0]))
    assert not _neighbour_ties(lone, np.array([[1.0]])).any()  # no (k+1)-th neighbour to tie with


def test_numeric_inputs_from_records_keep_the_per_value_rules():
    from sluicegate.onnx_runtime import _numbers

    got = _numbers([None, 1, 2.5, True, float("nan")], "x")
    assert got.dtype == np.float64 and np.isnan(got[[0, 4]]).all() and got[1:4].tolist() == [1.0, 2.5, 1.0]
    assert _numbers(["1.5", 2], "x").tolist() == [1.5, 2.0]  # text that is a number, as float() reads it
    with pytest.raises(ValueError, match="field 'x' must be a number or null"):
        _numbers([1, "twelve"], "x")
