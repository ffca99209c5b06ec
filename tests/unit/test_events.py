"""Events in one place: names and resource ids, and one emitter that sends and notifies (loopback webhook)."""

from __future__ import annotations

import typing

import pytest

from sluicegate import events
from sluicegate.config import NotificationsConfig
from tests.helpers import loopback_webhook


@pytest.fixture()
def webhook():
    with loopback_webhook() as hook:
        yield f"{hook.url}/hook", hook.received


def test_names_and_resource_ids():
    assert events.DRIFT_DETECTED == "sluicegate.drift.detected"
    assert events.MODEL_ROLLED_BACK == "sluicegate.model.rolled_back"
    assert events.resource_id("churn") == "sluicegate.project.churn"
    # every choice of notifications.events selects an event, and every notifying event has a choice
    # (`drift` selects both monitoring alerts: drift detected and performance degraded)
    choices = typing.get_args(typing.get_args(NotificationsConfig.model_fields["events"].annotation)[0])
    assert set(events.NOTIFY_KEYS.values()) == set(choices)
    assert events.NOTIFY_KEYS[events.PERFORMANCE_DEGRADED] == events.NOTIFY_KEYS[events.DRIFT_DETECTED] == "drift"


def test_rolled_back_is_sent_and_notified_to_a_loopback_webhook(webhook):
    url, received = webhook
    sent = []
    emitter = events.Emitter(lambda name, resource, payload: sent.append((name, resource, payload)) or "ev-1",
                             NotificationsConfig(webhook_url=url))
    payload = events.rolled_back_payload("churn", "3", "4", "deploy failed")
    assert emitter.emit("churn", events.MODEL_ROLLED_BACK, payload) == "ev-1"
    assert sent == [(events.MODEL_ROLLED_BACK, {"prefect.resource.id": "sluicegate.project.churn",
                                                "prefect.resource.name": "churn"}, payload)]
    assert len(received) == 1
    assert received[0]["event"] == "sluicegate.model.rolled_back" and received[0]["project"] == "churn"
    assert received[0]["payload"]["champion"] == "3" and received[0]["payload"]["from"] == "4"
    assert "back to v3" in received[0]["text"]


def test_only_selected_events_notify_and_nothing_raises(webhook):
    url, received = webhook

    def broken_send(*_):
        raise ConnectionError("no Prefect API")

    emitter = events.Emitter(broken_send, NotificationsConfig(webhook_url=url, events=["deploy_failed"]))
    assert emitter.emit("churn", events.MODEL_DEPLOYED, {"version": "2"}) is None  # no notification key
    assert emitter.emit("churn", events.MODEL_ROLLED_BACK, {"champion": "1"}) is None  # not selected
    assert received == []
    emitter.emit("churn", events.DEPLOY_FAILED, events.deploy_failed_payload("churn", "2", "1", "canary: 3 differ"))
    assert [r["event"] for r in received] == [events.DEPLOY_FAILED]
    assert "v1 keeps serving" in received[0]["text"]
    # a receiver that is gone never fails the caller
    events.Emitter(None, NotificationsConfig(webhook_url="http://127.0.0.1:9/x", timeout_s=1)).emit(
        "churn", events.DEPLOY_FAILED, {})


def test_approval_pending_reaches_the_webhook_with_how_to_answer(webhook):
    url, received = webhook
    assert events.APPROVAL_PENDING == "sluicegate.approval.pending"
    assert events.CANARY_BREACHED == "sluicegate.canary.breached"
    payload = events.approval_pending_payload("churn", "4", "3", "fr-1", 30, "All 5 gates passed.",
                                              "http://127.0.0.1:4200/runs/flow-run/fr-1")
    events.Emitter(None, NotificationsConfig(webhook_url=url)).emit("churn", events.APPROVAL_PENDING, payload)
    assert [r["event"] for r in received] == [events.APPROVAL_PENDING]
    text = received[0]["text"]
    assert 'sluice approve churn --comment' in text and 'sluice reject churn' in text
    assert "http://127.0.0.1:4200/runs/flow-run/fr-1" in text and "after 30 minutes" in text
    assert received[0]["payload"]["flow_run_id"] == "fr-1"


def test_a_failed_notification_is_one_warning_line(caplog):
    spec = NotificationsConfig(webhook_url="http://127.0.0.1:9/hook", timeout_s=1, prefect_block="ops")

    def no_block(name, subject, body):
        raise ValueError(f"no block {name}")

    with caplog.at_level("INFO", logger="sluicegate"):
        events.Emitter(None, spec, no_block).emit("churn", events.DEPLOY_FAILED, {"text": "x"})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # one per channel, nothing else
    assert warnings[0].startswith("notification sluicegate.deploy.failed for churn -> webhook http://127.0.0.1:9/hook: FAILED (")
    assert warnings[1] == "notification sluicegate.deploy.failed for churn -> Prefect block 'ops': FAILED (ValueError: no block ops)"
    assert all("\n" not in w for w in warnings)
