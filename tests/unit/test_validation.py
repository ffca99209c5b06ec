"""Data validation: built-in checks and the Great Expectations suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sluicegate.config import ValidationConfig
from sluicegate.validation import builtin_checks, validate_data
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
    assert "5 unexpected values" in plan.message and "platinum" in plan.message
    assert Path(report.json_path).exists()


def test_gx_warn_only_failures_pass(tmp_path):
    frame = churn_frame(200)
    frame.loc[:3, "region"] = "mars"
    spec = ValidationConfig(data_docs=True, columns={"region": {"allowed": ["north", "south", "east", "west"], "severity": "warn"}})
    report = validate_data(frame, spec, "churned", "classification", tmp_path)
    assert report.passed and len(report.warnings) == 1
    assert report.docs_path and Path(report.docs_path).exists()
