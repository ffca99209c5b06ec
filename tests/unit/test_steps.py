"""Pure steps on tiny frames: ingest, fingerprint, split, features, validation, evaluation, gates."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sluicegate.config import (
    BundledSource, CsvSource, FeaturesConfig, GatesConfig, ParquetSource, SplitConfig, SqlSource, ValidationConfig,
)
from sluicegate.data import fingerprint_frame, ingest_data, read_source, snapshot_frame, source_key
from sluicegate.errors import DataSourceError, DataValidationError
from sluicegate.evaluation import EvaluationReport, compute_metrics
from sluicegate.features import build_features, load_arrays, load_preprocessor
from sluicegate.gates import decide_promotion
from sluicegate.split import split_data, split_frame
from sluicegate.validation import builtin_checks, validate_data
from tests.helpers import churn_frame


# ---------------------------------------------------------------- ingest
def test_csv_parquet_and_sql_give_the_same_frame(tmp_path):
    frame = churn_frame(200)
    frame.to_csv(tmp_path / "c.csv", index=False)
    frame.to_parquet(tmp_path / "c.parquet", index=False)
    with sqlite3.connect(tmp_path / "c.db") as conn:
        frame.to_sql("customers", conn, index=False)
    csv = read_source(CsvSource(kind="csv", path="c.csv"), tmp_path)
    pq = read_source(ParquetSource(kind="parquet", path="c.parquet"), tmp_path)
    sql = read_source(SqlSource(kind="sql", url=f"sqlite:///{tmp_path / 'c.db'}", query="SELECT * FROM customers"), tmp_path)
    pd.testing.assert_frame_equal(csv, pq)
    pd.testing.assert_frame_equal(csv.reset_index(drop=True), sql, check_dtype=False)


def test_sql_url_from_env_reference(tmp_path, monkeypatch):
    with sqlite3.connect(tmp_path / "c.db") as conn:
        churn_frame(50).to_sql("t", conn, index=False)
    monkeypatch.setenv("TEST_DB_URL", f"sqlite:///{tmp_path / 'c.db'}")
    src = SqlSource(kind="sql", url={"env": "TEST_DB_URL"}, query="SELECT * FROM t")
    assert len(read_source(src, tmp_path)) == 50
    monkeypatch.delenv("TEST_DB_URL")
    with pytest.raises(DataSourceError, match="TEST_DB_URL is not set"):
        read_source(src, tmp_path)


def test_bad_sql_query_is_a_data_source_error(tmp_path):
    src = SqlSource(kind="sql", url=f"sqlite:///{tmp_path / 'x.db'}", query="SELECT * FROM missing_table")
    with pytest.raises(DataSourceError, match="data.source.query"):
        read_source(src, tmp_path)


def test_missing_file_names_the_key(tmp_path):
    with pytest.raises(DataSourceError, match="data.source.path: file not found"):
        read_source(CsvSource(kind="csv", path="nope.csv"), tmp_path)


def test_bundled_dataset_loads_without_download(tmp_path):
    frame = read_source(BundledSource(kind="bundled", name="sklearn.breast_cancer"), tmp_path, target="malignant")
    assert frame.shape == (569, 31) and "malignant" in frame.columns and "mean_radius" in frame.columns


def test_fingerprint_is_content_addressed(tmp_path):
    a = churn_frame(100)
    b = a.copy()
    b.loc[3, "tenure"] += 1
    assert fingerprint_frame(a) == fingerprint_frame(a.copy())
    assert fingerprint_frame(a) != fingerprint_frame(b)
    r1 = snapshot_frame(a, tmp_path, "p")
    r2 = snapshot_frame(a.copy(), tmp_path, "p")
    assert r1.path == r2.path and Path(r1.path).exists()
    pd.testing.assert_frame_equal(pd.read_parquet(r1.path), a)


def test_source_key_changes_when_file_bytes_change(tmp_path):
    churn_frame(50).to_csv(tmp_path / "c.csv", index=False)
    src = CsvSource(kind="csv", path="c.csv")
    k1 = source_key(src, tmp_path)
    churn_frame(50, seed=1).to_csv(tmp_path / "c.csv", index=False)
    assert source_key(src, tmp_path) != k1
    assert source_key(SqlSource(kind="sql", url="sqlite://", query="select 1"), tmp_path) is None


def test_ingest_writes_snapshot(tmp_path):
    churn_frame(80).to_csv(tmp_path / "c.csv", index=False)
    ref = ingest_data(CsvSource(kind="csv", path="c.csv"), tmp_path, "churned", tmp_path / "store", "churn")
    assert ref.rows == 80 and Path(ref.path).parent == tmp_path / "store" / "churn"


# ---------------------------------------------------------------- split
@pytest.mark.parametrize("method", ["random", "stratified", "time"])
def test_split_is_seeded_and_disjoint(method):
    frame = churn_frame(500)
    spec = SplitConfig(method=method, time_column="signup_date" if method == "time" else None)
    a = split_frame(frame, spec, method, "churned", seed=3, time_column="signup_date")
    b = split_frame(frame, spec, method, "churned", seed=3, time_column="signup_date")
    ids = [set(p.customer_id) for p in a]
    assert sum(len(i) for i in ids) == 500 and not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    if method == "time":
        assert a[0].signup_date.max() <= a[2].signup_date.min()
    if method == "stratified":
        rates = [p.churned.mean() for p in a]
        assert max(rates) - min(rates) < 0.05


# ---------------------------------------------------------------- features
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


# ---------------------------------------------------------------- validation
def _failed(checks):
    return {(c.check, c.column) for c in checks if not c.success}


def test_builtin_checks_catch_empty_missing_target_constant_and_nan():
    spec = ValidationConfig(max_nan_share=0.1)
    empty = churn_frame(10).iloc[0:0]
    assert ("not_empty", None) in _failed(builtin_checks(empty, spec, "churned", "classification"))
    no_target = churn_frame(50).drop(columns="churned")
    assert ("target_present", "churned") in _failed(builtin_checks(no_target, spec, "churned", "classification"))
    constant = churn_frame(50).assign(churned=1)
    assert ("target_not_constant", "churned") in _failed(builtin_checks(constant, spec, "churned", "classification"))
    flood = churn_frame(50)
    flood.loc[:30, "monthly_charges"] = np.nan
    flood.loc[31:33, "monthly_charges"] = np.inf
    assert ("nan_share", "monthly_charges") in _failed(builtin_checks(flood, spec, "churned", "classification"))
    clean = builtin_checks(churn_frame(50), spec, "churned", "classification")
    assert not _failed(clean)


def test_builtin_checks_catch_renamed_and_retyped_feature_columns():
    frame = churn_frame(50).rename(columns={"tenure": "tenure_months"})
    frame["monthly_charges"] = frame["monthly_charges"].astype(str)
    checks = builtin_checks(frame, ValidationConfig(), "churned", "classification",
                            {"numeric": ["tenure", "monthly_charges"]})
    failed = _failed(checks)
    assert ("feature_present", "tenure") in failed and ("feature_type", "monthly_charges") in failed
    msg = next(c.message for c in checks if c.column == "tenure")
    assert "did you mean 'tenure_months'" in msg


def test_gx_suite_reports_errors_and_warnings(tmp_path):
    frame = churn_frame(300)
    frame.loc[:4, "plan"] = "platinum"
    frame.loc[:9, "region"] = "mars"
    spec = ValidationConfig(
        data_docs=False,
        columns={
            "plan": {"allowed": ["basic", "plus", "pro"]},
            "region": {"allowed": ["north", "south", "east", "west"], "severity": "warn"},
            "tenure": {"type": "int", "min": 0, "max": 120},
            "customer_id": {"unique": True},
            "ghost": {"type": "float"},
        },
    )
    report = validate_data(frame, spec, "churned", "classification", tmp_path)
    assert not report.passed
    errors = {(c.check, c.column) for c in report.errors}
    assert ("expect_column_values_to_be_in_set", "plan") in errors
    assert ("expect_column_to_exist", "ghost") in errors
    assert ("expect_column_values_to_be_in_set", "region") in {(c.check, c.column) for c in report.warnings}
    assert ("expect_column_values_to_be_between", "tenure") not in errors
    plan = next(c for c in report.errors if c.column == "plan")
    assert "5 unexpected values" in plan.message and "platinum" in plan.message
    assert Path(report.json_path).exists()


def test_gx_warn_only_failures_pass(tmp_path):
    frame = churn_frame(200)
    frame.loc[:3, "region"] = "mars"
    spec = ValidationConfig(data_docs=True, columns={"region": {"allowed": ["north", "south", "east", "west"], "severity": "warn"}})
    report = validate_data(frame, spec, "churned", "classification", tmp_path)
    assert report.passed and len(report.warnings) == 1
    assert report.docs_path and Path(report.docs_path).exists()


# ---------------------------------------------------------------- evaluation and gates
class _Const:
    classes_ = np.array([0, 1])

    def __init__(self, p):
        self.p = p

    def predict(self, X):
        return (np.asarray(self.p) > 0.5).astype(int)

    def predict_proba(self, X):
        return np.column_stack([1 - np.asarray(self.p), self.p])


def test_classification_metrics():
    y = np.array([0, 0, 1, 1])
    m = compute_metrics("classification", _Const([0.1, 0.4, 0.6, 0.9]), None, y)
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0 and m["f1"] == 1.0 and 0 < m["log_loss"] < 0.6


def _report(test, train=None, valid=None):
    return EvaluationReport(train or test, valid or test, test)


GATES = GatesConfig(primary_metric="roc_auc", thresholds={"roc_auc": {"min": 0.8}}, min_improvement=0.01,
                    max_train_valid_gap=0.05)


def test_first_model_promoted_when_thresholds_pass():
    d = decide_promotion(_report({"roc_auc": 0.9}), None, None, GATES)
    assert d.promote and "no champion yet" in d.checks[-1].reason


def test_first_model_rule_reject():
    gates = GATES.model_copy(update={"first_model": "reject"})
    assert not decide_promotion(_report({"roc_auc": 0.9}), None, None, gates).promote


def test_worse_or_marginal_candidate_is_rejected_with_reason():
    worse = decide_promotion(_report({"roc_auc": 0.85}), {"roc_auc": 0.9}, "3", GATES)
    assert not worse.promote
    check = next(c for c in worse.checks if c.gate == "champion")
    assert check.champion == 0.9 and check.delta == pytest.approx(-0.05) and "does not beat champion v3" in check.reason
    marginal = decide_promotion(_report({"roc_auc": 0.905}), {"roc_auc": 0.9}, "3", GATES)
    assert not marginal.promote
    better = decide_promotion(_report({"roc_auc": 0.95}), {"roc_auc": 0.9}, "3", GATES)
    assert better.promote


def test_threshold_overfitting_and_lower_is_better():
    low = decide_promotion(_report({"roc_auc": 0.7}), None, None, GATES)
    assert not low.promote and "below the minimum 0.8" in low.summary
    overfit = decide_promotion(_report({"roc_auc": 0.9}, train={"roc_auc": 1.0}, valid={"roc_auc": 0.9}), None, None, GATES)
    assert not overfit.promote and "overfitting" in overfit.summary
    reg = GatesConfig(primary_metric="rmse", min_improvement=1.0)
    assert decide_promotion(_report({"rmse": 40.0}), {"rmse": 45.0}, "1", reg).promote
    assert not decide_promotion(_report({"rmse": 44.5}), {"rmse": 45.0}, "1", reg).promote


def test_slice_floor_and_unscorable_champion():
    gates = GatesConfig(primary_metric="accuracy", slice_thresholds={"accuracy": {"min": 0.7}})
    rep = EvaluationReport({"accuracy": 0.9}, {"accuracy": 0.9}, {"accuracy": 0.9},
                           {"plan": {"basic": {"accuracy": 0.95, "rows": 50}, "pro": {"accuracy": 0.6, "rows": 30}}})
    d = decide_promotion(rep, None, None, gates)
    assert not d.promote and any(c.metric == "plan=pro:accuracy" and not c.passed for c in d.checks)
    broken = decide_promotion(_report({"accuracy": 0.99}), None, "4", gates, champion_error="KeyError: 'tenure'")
    assert not broken.promote and "could not be re-scored" in broken.summary


def test_decision_serialises():
    d = decide_promotion(_report({"roc_auc": 0.9}), {"roc_auc": 0.8}, "1", GATES)
    assert d.to_dict()["checks"][0]["gate"] == "threshold"
    assert "| gate |" in d.to_markdown()
