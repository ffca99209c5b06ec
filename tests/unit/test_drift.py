"""Drift checks on real Evidently, hysteresis, deployment specs and webhook notifications."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sluicegate.config import MonitoringConfig, load_config
from sluicegate.drift import (
    ColumnDrift,
    check_drift,
    decide_drift,
    fast_column_drift,
    importance_weights,
    record_drift,
)
from sluicegate.notify import send_webhook
from tests.helpers import churn_frame, drift_inputs, loopback_webhook

COLUMNS = ["tenure", "monthly_charges", "plan", "region", "support_calls"]
ROOT = Path(__file__).resolve().parents[2]


def test_identical_data_is_not_drift(tmp_path):
    ref = churn_frame(1500, seed=0)
    report = check_drift(ref, ref.copy(), COLUMNS, MonitoringConfig(), tmp_path)
    assert report.sufficient and not report.drifted and report.drifted_columns == ()
    fresh = check_drift(ref, churn_frame(800, seed=1), COLUMNS, MonitoringConfig(), None)
    assert not fresh.drifted, fresh.reason  # same distribution, new sample: no wolf cried


def test_shifted_data_drifts_and_names_columns(tmp_path):
    ref = churn_frame(1500, seed=0)
    cur = churn_frame(600, seed=1)
    cur = cur.assign(tenure=cur.tenure + 30, plan="basic")
    report = check_drift(ref, cur, COLUMNS, MonitoringConfig(), tmp_path)
    assert report.drifted and set(report.drifted_columns) == {"tenure", "plan"}
    assert report.drift_share == pytest.approx(0.4)
    assert Path(report.html_path).exists() and json.loads(Path(report.json_path).read_text())["metrics"]
    assert "| tenure |" in report.to_markdown()


def test_methods_are_configurable(tmp_path):
    ref, cur = churn_frame(1500, seed=0), churn_frame(600, seed=1)
    spec = MonitoringConfig(num_method="ks", cat_method="chisquare", threshold=0.05)
    report = check_drift(ref, cur.assign(monthly_charges=cur.monthly_charges * 2), COLUMNS, spec, None)
    methods = {c.column: c.method for c in report.columns}
    assert methods["tenure"] == "ks" and methods["plan"] == "chisquare"
    assert "monthly_charges" in report.drifted_columns


def test_too_few_rows_gives_no_verdict():
    report = check_drift(churn_frame(500), churn_frame(20, seed=2), COLUMNS, MonitoringConfig(min_rows=50), None)
    assert not report.sufficient and not report.drifted and "not enough data" in report.reason


def test_hysteresis_drift_drift_clean_drift_never_alerts(tmp_path):
    state = tmp_path / "state.json"
    signals = [record_drift(state, d, True, 3, 0, now=i) for i, d in enumerate([True, True, False, True])]
    assert not any(s.alert for s in signals)
    assert [s.consecutive for s in signals] == [1, 2, 0, 1]


def test_hysteresis_alerts_after_k_and_respects_cooldown(tmp_path):
    state = tmp_path / "state.json"
    got = [record_drift(state, True, True, 2, cooldown_s=100, now=t).alert for t in (0, 1, 2, 3, 200, 201)]
    # alert at the 2nd check; the 4th reaches K again but is inside the cooldown; after it, alert again
    assert got == [False, True, False, False, True, False]
    skipped = record_drift(state, True, False, 2, 0, now=300)
    assert not skipped.alert and "not counted" in skipped.reason


def test_every_project_gets_three_deployments():
    import importlib
    import sys

    sys.path.insert(0, str(ROOT))
    build = importlib.import_module("deployments.build")
    cfg = load_config(ROOT / "configs" / "breast_cancer.yaml")
    specs = {s["name"]: s for s in build.specs(cfg, "configs/breast_cancer.yaml")}
    assert set(specs) == {"breast_cancer-training", "breast_cancer-drift-check", "breast_cancer-retraining"}
    retrain = specs["breast_cancer-retraining"]
    assert retrain["trigger"]["expect"] == ["sluicegate.drift.detected", "sluicegate.performance.degraded"]
    assert retrain["trigger"]["match"] == {"prefect.resource.id": "sluicegate.project.breast_cancer"}
    assert retrain["concurrency_limit"] == 1 and retrain["collision_strategy"] == "CANCEL_NEW"
    assert specs["breast_cancer-drift-check"]["cron"] == cfg.monitoring.schedule
    alerts_only = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"retrain": False})})
    quiet = {s["name"]: s for s in build.specs(alerts_only, "configs/breast_cancer.yaml")}["breast_cancer-retraining"]
    assert "trigger" not in quiet and "alerts only" in quiet["description"]


def test_webhook_reaches_a_loopback_receiver():
    with loopback_webhook() as hook:
        url = f"{hook.url}/hook"
        result = send_webhook(url, "sluicegate.drift.detected", "churn", {"drift_share": 0.6})
        assert result.sent and result.status == 204
        assert hook.received[-1]["event"] == "sluicegate.drift.detected"
        assert hook.received[-1]["payload"]["drift_share"] == 0.6
    down = send_webhook(url, "x", "churn", {}, timeout_s=1)
    assert not down.sent and down.error


# ---------------------------------------------------------------- the verdict
def _cols(drifted: set[str], importance: dict[str, float], names=("a", "b", "c", "d", "e", "f", "g")):
    weights, ranks = importance_weights(importance, list(names))
    return tuple(ColumnDrift(n, "ks", 1e-9 if n in drifted else 0.5, 0.001, n in drifted, weights.get(n, 0.0), ranks.get(n))
                 for n in names)


IMPORTANCE = {"a": 0.30, "b": 0.20, "c": 0.05, "d": 0.02, "e": 0.01, "f": 0.01, "g": 0.0}


def test_one_important_column_is_drift_even_when_few_columns_moved():
    # the case: 2 of 7 inputs moved (share 0.29 < 0.3), one of them the most important
    verdict = decide_drift(_cols({"a", "e"}, IMPORTANCE), MonitoringConfig())
    assert verdict.drifted and verdict.share == pytest.approx(2 / 7)
    fired = {c.rule for c in verdict.checks if c.fired}
    assert fired == {"top_k", "importance_share"}
    assert "a drifted" in verdict.reason and verdict.top_columns == ("a", "b", "c")


def test_unimportant_columns_alone_are_not_drift_and_every_rule_is_explained():
    verdict = decide_drift(_cols({"f", "g"}, IMPORTANCE), MonitoringConfig())
    assert not verdict.drifted and verdict.rule == "none"
    assert [c.rule for c in verdict.checks] == ["drift_share", "importance_share", "top_k"]
    assert verdict.reason.startswith("no rule fired") and "2 of 7 columns drifted" in verdict.reason


def test_without_importance_only_the_plain_share_and_prediction_rules_apply():
    cols = _cols({"a"}, {})
    assert not decide_drift(cols, MonitoringConfig()).drifted
    assert [c.rule for c in decide_drift(cols, MonitoringConfig()).checks] == ["drift_share"]
    assert decide_drift(_cols({"a", "b", "c"}, {}), MonitoringConfig()).drifted  # 3 of 7 >= 0.3
    moved = ColumnDrift("prediction", "chisquare", 1e-12, 0.001, True)
    verdict = decide_drift(cols, MonitoringConfig(), prediction=moved)
    assert verdict.drifted and verdict.rule == "prediction"
    assert not decide_drift(cols, MonitoringConfig(prediction_drift=False), prediction=moved).drifted


def test_nothing_drifted_is_never_drift_whatever_the_settings():
    for spec in (MonitoringConfig(), MonitoringConfig(top_k=7, importance_share=0.01, drift_share=0.01)):
        assert not decide_drift(_cols(set(), IMPORTANCE), spec).drifted


INPUTS = [f"x{i}" for i in range(7)] + ["plan", "region"]


@pytest.fixture(scope="module")
def champion():
    """A fitted pipeline on raw columns and its permutation importance on a holdout."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from sluicegate.monitoring import champion_importance

    train, holdout = drift_inputs(1000, 0), drift_inputs(300, 1)
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["plan", "region"]), remainder="passthrough"),
                          LogisticRegression(max_iter=500))
    model.fit(train[INPUTS], train.y)
    importance = champion_importance(model, holdout[INPUTS + ["y"]], "y", "classification", "roc_auc", INPUTS, seed=0)
    return train, importance


def test_permutation_importance_finds_the_input_the_model_relies_on(champion):
    _, importance = champion
    ranked = sorted(importance, key=importance.get, reverse=True)
    assert ranked[0] == "x0" and importance["x0"] > 5 * max(importance[c] for c in ("x4", "x5", "x6"))


def test_a_one_std_shift_in_the_top_feature_alerts_with_the_defaults(champion, tmp_path):
    train, importance = champion
    current = drift_inputs(400, 7)
    report = check_drift(train, current.assign(x0=current.x0 + 1.0), INPUTS, MonitoringConfig(), tmp_path,
                         importance=importance)
    assert report.drifted and "top_k" in report.rule and report.drifted_columns == ("x0",)
    text = report.to_text()
    assert "x0: ks p=" in text and "< 0.001" in text and "importance rank 1" in text
    assert f"report: {report.html_path}" in text and Path(report.html_path).exists()


def test_identical_data_never_alerts_with_importance(champion):
    train, importance = champion
    report = check_drift(train, train.copy(), INPUTS, MonitoringConfig(), None, importance=importance,
                         reference_predictions=pd.Series([0, 1] * 50))
    assert not report.drifted and report.drifted_columns == ()
    assert all(c.score == pytest.approx(1.0) for c in report.columns)


def test_the_fast_path_gives_evidentlys_statistics(champion):
    train, _ = champion
    current = drift_inputs(300, 3)
    current = current.assign(x1=current.x1 + 0.3, plan=np.where(current.index % 4 == 0, "pro", current.plan))
    report = check_drift(train, current, INPUTS, MonitoringConfig(), None)
    fast = fast_column_drift(train, current, INPUTS, MonitoringConfig())
    assert [(c.column, c.method, c.drifted) for c in fast] == [(c.column, c.method, c.drifted) for c in report.columns]
    for a, b in zip(fast, report.columns):
        assert a.score == pytest.approx(b.score, rel=1e-6, abs=1e-12), a.column


def _alerts(reference, currents, importance):
    spec = MonitoringConfig()
    weights, ranks = importance_weights(importance, INPUTS)
    alerts = 0
    for current in currents:
        cols = [ColumnDrift(c.column, c.method, c.score, c.threshold, c.drifted, weights.get(c.column, 0.0),
                            ranks.get(c.column)) for c in fast_column_drift(reference, current, INPUTS, spec)]
        alerts += decide_drift(cols, spec).drifted
    return alerts


def test_false_alarms_on_resamples_of_the_training_data_stay_under_one_in_a_hundred(champion):
    train, importance = champion
    resamples = [train.sample(300, replace=True, random_state=seed) for seed in range(100)]
    assert _alerts(train, resamples, importance) <= 1
    fresh = [drift_inputs(300, 1000 + seed) for seed in range(100)]  # new draws: the reference's own noise counts too
    assert _alerts(train, fresh, importance) <= 1


def test_a_categorical_shift_in_an_important_input_alerts(champion):
    train, importance = champion
    currents = []
    for seed in range(20):
        c = drift_inputs(300, 2000 + seed)
        move = np.random.default_rng(seed).random(len(c)) < 0.3  # 30% of rows change plan
        currents.append(c.assign(plan=np.where(move, "pro", c.plan)))
    assert _alerts(train, currents, importance) == 20


def test_prediction_drift_compares_classes_however_they_are_spelled(champion):
    train, importance = champion
    current = drift_inputs(300, 9)
    ref_pred = pd.Series(np.random.default_rng(0).choice([0, 1, 2, 3, 4, 5, 6, 7], 300))  # 8 classes: still categories
    same = check_drift(train, current.assign(prediction=ref_pred.astype(float).to_numpy()), INPUTS, MonitoringConfig(),
                       None, importance=importance, reference_predictions=ref_pred)
    assert same.prediction.method == "chisquare" and not same.prediction.drifted and not same.drifted
    moved = check_drift(train, current.assign(prediction=np.where(ref_pred < 4, 0, ref_pred)), INPUTS, MonitoringConfig(),
                        None, importance=importance, reference_predictions=ref_pred)
    assert moved.prediction.drifted and moved.drifted and moved.rule == "prediction"
    assert "prediction: chisquare p=" in moved.to_text()
