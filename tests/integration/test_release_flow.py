"""The training flow's release step: a candidate whose deploy fails never becomes champion; batch scoring."""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pandas as pd
import pytest

from sluicegate.errors import DeployError
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import churn_config, churn_frame, write_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("release")
    old = os.environ.get("SLUICE_HOME")
    os.environ["SLUICE_HOME"] = str(root / ".sluice")
    frame = churn_frame(1200, seed=5)
    path = write_project(root, frame, churn_config(root))
    yield path, frame
    if old is None:
        os.environ.pop("SLUICE_HOME", None)
    else:
        os.environ["SLUICE_HOME"] = old


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_failed_deploy_after_promotion_restores_previous_champion(project):
    from flows.training import training_pipeline

    path, _ = project
    hook = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    # a weak first champion: the strongest signals are dropped
    first = training_pipeline(str(path), ["features.drop=[tenure,support_calls]",
                                          "features.numeric.columns=[monthly_charges]"], "test")
    assert first.outcome == "promoted" and first.deployment is None
    with socket.socket() as other:  # the configured port is taken: the deploy must fail after packaging
        other.bind(("127.0.0.1", 0))
        other.listen()
        state = training_pipeline(str(path), ["deploy.enabled=true", f"deploy.port={other.getsockname()[1]}",
                                              f"notifications.webhook_url=http://127.0.0.1:{hook.server_port}/hook"],
                                  "test", return_state=True)
    hook.shutdown()
    hook.server_close()
    assert state.is_failed()
    assert [m["event"] for m in _Hook.received] == ["sluicegate.deploy.failed"]  # never promoted, never rolled back
    assert "in use" in _Hook.received[0]["payload"]["error"]
    with pytest.raises(DeployError, match="in use"):
        state.result()
    tracker = Tracker(load_settings())
    assert tracker.champion("churn").version == str(first.version)
    assert len(tracker.versions("churn")) == 2  # the better candidate was registered, never blessed


def test_flow_blesses_the_candidate_after_its_canary_and_switches_traffic(project):
    from flows.training import training_pipeline
    from sluicegate.config import load_config
    from sluicegate.deploy.current import already_serving, release_key
    from sluicegate.deploy.local import stop_local
    from sluicegate.deploy.processes import free_port

    path, _ = project
    tracker = Tracker(load_settings())
    before = tracker.champion("churn").version
    port = free_port()
    try:
        result = training_pipeline(str(path), ["deploy.enabled=true", f"deploy.port={port}"], "test")
        assert result.outcome == "promoted" and "canary" in result.deployment
        assert tracker.champion("churn").version == str(result.version)
        assert tracker.alias("churn", "previous-champion").version == before
        served = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json()["version"]
        assert str(served) == str(result.version)
        # the release recorded its key: deploying exactly this again is a no-op found without packaging
        cfg = load_config(path, ["deploy.enabled=true", f"deploy.port={port}"])
        version, settings = str(result.version), load_settings()
        key = release_key("churn", version, cfg.packaging, cfg.deploy, cfg.task)
        same = already_serving(settings, "churn", version, key, cfg.deploy.host, port)
        assert same is not None and same.was == version and "nothing to do" in same.message
        slower = cfg.deploy.model_copy(update={"readiness_timeout_s": cfg.deploy.readiness_timeout_s + 1})
        assert already_serving(settings, "churn", version, release_key("churn", version, cfg.packaging, slower, cfg.task),
                               cfg.deploy.host, port) is None  # any other setting: the full release decides
        assert already_serving(settings, "churn", before, release_key("churn", before, cfg.packaging, cfg.deploy, cfg.task),
                               cfg.deploy.host, port) is None  # another version
    finally:
        stop_local(load_settings(), "churn")


def test_scoring_flow_adds_prediction_version_and_fingerprint(project, tmp_path):
    from flows.scoring import scoring_pipeline

    _, frame = project
    src = tmp_path / "batch.parquet"
    frame.drop(columns=["churned"]).head(100).to_parquet(src, index=False)
    result = scoring_pipeline("churn", str(src), str(tmp_path / "scored.csv"))
    out = pd.read_csv(result["output_path"])
    assert result["rows"] == 100 and len(out) == 100
    assert {"prediction", "proba_0", "proba_1", "model_version", "input_fingerprint"} <= set(out.columns)
    assert out["model_version"].astype(str).unique().tolist() == [result["model_version"]]
