"""Drift checks on real Evidently, hysteresis, deployment specs and webhook notifications."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from sluicegate.config import MonitoringConfig, load_config
from sluicegate.drift import check_drift, record_drift
from sluicegate.notify import send_webhook
from tests.helpers import churn_frame

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
    assert retrain["trigger"]["expect"] == ["sluicegate.drift.detected"]
    assert retrain["trigger"]["match"] == {"prefect.resource.id": "sluicegate.project.breast_cancer"}
    assert retrain["concurrency_limit"] == 1 and retrain["collision_strategy"] == "CANCEL_NEW"
    assert specs["breast_cancer-drift-check"]["cron"] == cfg.monitoring.schedule


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_reaches_a_loopback_receiver():
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        result = send_webhook(url, "sluicegate.drift.detected", "churn", {"drift_share": 0.6})
        assert result.sent and result.status == 204
        assert _Receiver.received[-1]["event"] == "sluicegate.drift.detected"
        assert _Receiver.received[-1]["payload"]["drift_share"] == 0.6
    finally:
        server.shutdown()
    down = send_webhook(url, "x", "churn", {}, timeout_s=1)
    assert not down.sent and down.error
