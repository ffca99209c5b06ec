"""Data validation: built-in checks and the Great Expectations suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sluicegate.config import ValidationConfig
from sluicegate.validation import builtin_checks, check_column_rules, expectations_from_config, run_expectations, validate_data
from tests.helpers import churn_frame


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
    assert "5 values not allowed" in plan.message and "platinum" in plan.message
    assert Path(report.json_path).exists()


def test_gx_warn_only_failures_pass(tmp_path):
    frame = churn_frame(200)
    frame.loc[:3, "region"] = "mars"
    spec = ValidationConfig(data_docs=True, columns={"region": {"allowed": ["north", "south", "east", "west"], "severity": "warn"}})
    report = validate_data(frame, spec, "churned", "classification", tmp_path)
    assert report.passed and len(report.warnings) == 1
    assert report.docs_path and Path(report.docs_path).exists()


def test_column_rules_speak_the_users_terms(tmp_path):
    frame = churn_frame(300)
    frame["weight_g"] = np.linspace(100, 6000, 300)
    frame.loc[:11, "weight_g"] = 8505.0
    frame.loc[12, "weight_g"] = -5.0
    frame["height_cm"] = ["abc"] + [str(v) for v in range(299)]
    spec = ValidationConfig(data_docs=False, columns={
        "weight_g": {"min": 0, "max": 7000}, "height_cm": {"min": 0}, "tenure": {"type": "float"}})
    report = validate_data(frame, spec, "churned", "classification", tmp_path)
    msgs = {c.column: c.message for c in report.errors}
    assert msgs["weight_g"] == "1 value below min 0, e.g. -5.0; 12 values above max 7000, e.g. 8505.0"
    assert msgs["height_cm"].startswith("expected numbers, got text e.g. 'abc'")
    assert "expected numbers (float), got dtype int64" in msgs["tenure"]
    assert "weight_g: 1 value below min 0" in report.failure_summary()
    assert all("must either be None" not in c.message for c in report.checks)


def test_column_rules_agree_with_great_expectations(tmp_path):
    """The pandas checks stand for GX expectations: same pass/fail and counts on the same frame."""
    frame = churn_frame(400)
    frame.loc[:6, "plan"] = "platinum"
    frame.loc[3:9, "tenure"] = 500
    frame.loc[[20, 21], "customer_id"] = 7
    frame["monthly_charges"] = frame["monthly_charges"].astype(float)
    frame.loc[30:60, "monthly_charges"] = np.nan
    spec = ValidationConfig(data_docs=False, columns={
        "plan": {"allowed": ["basic", "plus", "pro"]},
        "region": {"allowed": ["north", "south", "east", "west"]},
        "tenure": {"type": "int", "min": 0, "max": 120},
        "monthly_charges": {"type": "float", "min": 0, "max_null_share": 0.05},
        "support_calls": {"type": "number", "max_null_share": 0.0},
        "customer_id": {"unique": True, "type": "float"},
        "signup_date": {"type": "str"},
        "ghost": {"type": "int"},
    })
    ours = {(c.check, c.column): c for c in check_column_rules(frame, spec.columns)}
    gx_checks, _ = run_expectations(frame, [e for e in expectations_from_config(spec)
                                            if e[0] != "expect_table_row_count_to_be_between"], None, "parity")
    theirs = {}
    for c in gx_checks:
        theirs.setdefault((c.check, c.column), c)
    for key, mine in ours.items():
        if key[1] == "ghost" and key[0] != "expect_column_to_exist":
            continue
        assert key in theirs, key
        assert mine.success == theirs[key].success, (key, mine, theirs[key])
    for key in [("expect_column_values_to_be_in_set", "plan"), ("expect_column_values_to_be_between", "tenure"),
                ("expect_column_values_to_be_unique", "customer_id"), ("expect_column_values_to_not_be_null", "monthly_charges")]:
        assert not ours[key].success
        if isinstance(theirs[key].observed, int):
            assert ours[key].observed == theirs[key].observed, key


def test_data_docs_on_failure_only_when_a_check_fails(tmp_path):
    spec = ValidationConfig(data_docs="on_failure", columns={"tenure": {"min": 0, "max": 120}})
    clean = validate_data(churn_frame(200), spec, "churned", "classification", tmp_path / "clean")
    assert clean.passed and clean.docs_path is None
    frame = churn_frame(200)
    frame.loc[:2, "tenure"] = 900
    bad = validate_data(frame, spec, "churned", "classification", tmp_path / "bad")
    assert not bad.passed and bad.docs_path and Path(bad.docs_path).exists()
    assert bad.errors[0].message == "3 values above max 120, e.g. 900"
