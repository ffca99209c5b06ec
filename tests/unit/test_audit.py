"""The audit trail on a real SQLite MLflow store: append-only, newest first, read back by a new process's tracker."""

from __future__ import annotations

import json

import pytest

from sluicegate import audit, events
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import register_tiny


def test_records_come_back_newest_first_with_who_when_why_and_runs(tracker):
    first = audit.new_record("p", audit.PROMOTE, "1", "all gates passed", "flow-user", "fr-1", "run-1",
                             {"champion_before": None})
    second = audit.new_record("p", audit.MANUAL_PROMOTE, "2", "hotfix for ticket 42", "alice", mlflow_run_id="run-2")
    third = audit.new_record("p", audit.ROLLBACK, "1", "rollback", "bob", details={"from": "2"})
    for r in (first, second, third):
        audit.append_record(tracker, r)
    audit.append_record(tracker, audit.new_record("other", audit.DEPLOY, "7", "deployed", "carol"))

    again = Tracker(load_settings())  # what a later command reads
    history = audit.read_history(again, "p")
    assert [r.action for r in history] == [audit.ROLLBACK, audit.MANUAL_PROMOTE, audit.PROMOTE]
    assert history[2] == first and history[1] == second and history[0] == third
    assert history[1].who == "alice" and history[1].why == "hotfix for ticket 42" and history[1].mlflow_run_id == "run-2"
    assert history[2].flow_run_id == "fr-1" and history[2].when.endswith("+00:00")
    assert [r.action for r in audit.read_history(again, "p", limit=2)] == [audit.ROLLBACK, audit.MANUAL_PROMOTE]
    assert audit.read_history(again, "nobody") == []
    assert json.loads(audit.history_json(history[:1]))[0]["details"] == {"from": "2"}
    assert "rollback" in history[0].line() and "by bob" in history[0].line()


def test_who_defaults_to_the_os_user_and_actions_are_checked(monkeypatch):
    monkeypatch.setattr(audit.getpass, "getuser", lambda: "os-user")
    assert audit.new_record("p", audit.APPROVE, 3, "ok").who == "os-user"
    assert audit.new_record("p", audit.APPROVE, 3, "ok", who="  ").who == "os-user"
    with pytest.raises(ValueError, match="audit action must be one of"):
        audit.new_record("p", "delete", "3", "x")


def test_release_events_emitted_anywhere_become_records(tracker):
    version = register_tiny(tracker)
    emitter = events.Emitter(None, None, None, None, audit.audit_recorder(tracker, "dave", "fr-9"))
    emitter.emit("p", events.MODEL_DEPLOYED, events.deployed_payload("p", version, "local", "http://127.0.0.1:1", None,
                                                                     "serving v1"))
    emitter.emit("p", events.DEPLOY_FAILED, events.deploy_failed_payload("p", version, None, "canary: 3 rows differ"))
    emitter.emit("p", events.MODEL_ROLLED_BACK, events.rolled_back_payload("p", version, "2", "deploy failed"))
    emitter.emit("p", events.DRIFT_DETECTED, {"reason": "drift"})  # not an audit matter
    history = audit.read_history(tracker, "p")
    assert [r.action for r in history] == [audit.ROLLBACK, audit.DEPLOY_FAILED, audit.DEPLOY]
    assert all(r.who == "dave" and r.flow_run_id == "fr-9" for r in history)
    assert history[2].mlflow_run_id == tracker.version("p", version).run_id  # linked to the version's run
    assert history[1].why == "canary: 3 rows differ" and history[0].details == {"from": "2"}


def test_a_failing_audit_store_never_fails_the_emitter(caplog):
    def broken(*_):
        raise RuntimeError("disk full")

    events.Emitter(record=broken).emit("p", events.MODEL_DEPLOYED, {"version": "1"})
    assert "audit record of sluicegate.model.deployed for p FAILED: RuntimeError: disk full" in caplog.text


def test_approval_is_stored_with_the_version_and_a_refusal_turns_the_verdict(tracker):
    version = register_tiny(tracker)
    record = tracker.version("p", version)
    tracker.record_decision(record, {"promote": True, "summary": "All 2 gates passed."})
    tracker.record_approval(record, {"verdict": "rejected", "approver": "bob", "comment": "too risky",
                                     "summary": "p v1: rejected by bob: too risky"})
    tags = tracker.version("p", version).tags
    assert tags["sluice.approval"] == "rejected" and tags["sluice.approved_by"] == "bob"
    assert tags["sluice.approval_comment"] == "too risky" and tags["sluice.verdict"] == "rejected"
    assert tracker.status("p")["last_verdict"]["summary"] == "p v1: rejected by bob: too risky"


def test_the_emitter_hook_records_exactly_the_audited_events():
    for name in (events.MODEL_DEPLOYED, events.DEPLOY_FAILED, events.MODEL_ROLLED_BACK, events.APPROVAL_PENDING,
                 events.MODEL_PROMOTED, events.MODEL_REJECTED, events.DRIFT_DETECTED, events.CANARY_BREACHED):
        found = audit.record_from_event("p", name, {"version": "1", "champion": "1"}, "x", None)
        assert (found is not None) == (name in audit.AUDITED_EVENTS), name
