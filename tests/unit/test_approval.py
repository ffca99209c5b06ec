"""Human approval as pure decisions: when it is asked, what an answer means, what the gates advise."""

from __future__ import annotations

import pytest

from sluicegate.config import GatesConfig
from sluicegate.evaluation import EvaluationReport
from sluicegate.gates import (
    TIMEOUT_APPROVER,
    UNNAMED_APPROVER,
    ApprovalAnswer,
    approval_required,
    decide_approval,
    decide_promotion,
)


@pytest.mark.parametrize("policy, reason, required", [
    ("never", "retrain: drift: 3 columns drifted", False),
    ("always", None, True),
    ("always", "manual", True),
    ("on_retrain", None, False),
    ("on_retrain", "manual", False),
    ("on_retrain", "schedule", False),
    ("on_retrain", "retrain: drift: share 0.6", True),  # what the retraining flow passes
    ("on_retrain", "drift: share 0.6", True),            # a drift event's reason
    ("on_retrain", "Performance: roc_auc fell", True),
])
def test_approval_required_by_policy_and_reason(policy, reason, required):
    found = approval_required(policy, reason)
    assert found.required is required
    assert policy in found.reason


def test_defaults_never_ask_and_time_out_after_an_hour():
    gates = GatesConfig(primary_metric="roc_auc")
    assert gates.approval == "never" and gates.approval_timeout_minutes == 60


def test_only_an_explicit_approval_approves():
    yes = decide_approval(ApprovalAnswer(True, "  looks good ", "alice"), "churn", "4", 60)
    assert yes.approved and yes.verdict == "approved" and yes.approver == "alice" and yes.comment == "looks good"
    assert yes.summary == "churn v4: approved by alice: looks good"
    no = decide_approval(ApprovalAnswer(False, "slice plan=pro got worse", "bob"), "churn", "4", 60)
    assert not no.approved and no.verdict == "rejected" and "rejected by bob" in no.summary
    unnamed = decide_approval(ApprovalAnswer(True, "", None), "churn", "4", 60)
    assert unnamed.approved and unnamed.approver == UNNAMED_APPROVER
    # the timeout's refusal is never an approval, whatever the form held
    late = decide_approval(ApprovalAnswer(True, "", "alice", timed_out=True), "churn", "4", 0.5)
    assert not late.approved and late.verdict == "timed_out" and late.approver == TIMEOUT_APPROVER
    assert "no approval within 0.5 minutes" in late.summary


def test_gate_advice_names_the_command_that_exists():
    report = EvaluationReport({"roc_auc": 0.9}, {"roc_auc": 0.9}, {"roc_auc": 0.9})
    d = decide_promotion(report, None, "3", GatesConfig(primary_metric="roc_auc"), "unpickling failed",
                         project="churn", candidate_version="5")
    assert not d.promote
    assert '`sluice promote churn 5 --reason "..."`' in d.summary
    first = decide_promotion(report, None, None, GatesConfig(primary_metric="roc_auc", first_model="reject"),
                             project="churn", candidate_version="1")
    assert "sluice promote churn 1 --reason" in first.summary
