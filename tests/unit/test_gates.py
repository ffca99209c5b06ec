"""Promotion gates: pure decisions, each verdict explained, and the run outcome."""

from __future__ import annotations

import pytest

from sluicegate.config import GatesConfig
from sluicegate.evaluation import EvaluationReport
from sluicegate.gates import decide_outcome, decide_promotion, same_model_decision


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


def test_outcome_is_promoted_unchanged_or_rejected():
    passing = decide_promotion(_report({"roc_auc": 0.95}), {"roc_auc": 0.9}, "3", GATES)
    failing = decide_promotion(_report({"roc_auc": 0.85}), {"roc_auc": 0.9}, "3", GATES)
    assert decide_outcome(passing, "4", "3") == "promoted"
    assert decide_outcome(failing, "4", "3") == "rejected"
    assert decide_outcome(same_model_decision("3"), "3", "3") == "unchanged"
    assert [d.verdict for d in (passing, failing, same_model_decision("3"))] == ["promoted", "rejected", "unchanged"]


def test_an_unchanged_run_never_reads_rejected():
    same = same_model_decision("3")
    text = same.to_markdown() + same.summary
    assert "Gate decision: UNCHANGED" in text and "REJECTED" not in text and "Rejected" not in text
    assert "unchanged" in same.summary.lower()


def test_slices_not_evaluated_are_recorded_with_the_verdict():
    report = EvaluationReport({"roc_auc": 0.9}, {"roc_auc": 0.9}, {"roc_auc": 0.9},
                              slice_warnings=("slice plan=pro: 5 holdout rows, fewer than evaluation.min_slice_rows (20); not evaluated",))
    decision = decide_promotion(report, None, None, GATES)
    assert decision.promote and decision.warnings == report.slice_warnings
    assert decision.to_dict()["warnings"] == list(report.slice_warnings)
    assert "1 slice(s) not evaluated" in decision.summary and "warning: slice plan=pro" in decision.to_markdown()
