"""The light registry reader over MLflow's REST API agrees with the MLflow client on a real `mlflow server`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from sluicegate.deploy import free_port
from sluicegate.registry_reader import HttpRegistryReader, reader_for
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import tiny_regressor


@pytest.mark.slow
def test_http_reader_matches_the_mlflow_client(tmp_path, monkeypatch):
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("SLUICE_ARTIFACT_ROOT", "mlflow-artifacts:/")
        settings = load_settings()
        reader = reader_for(settings)
        assert isinstance(reader, HttpRegistryReader)
        tr = Tracker(settings)
        assert reader.projects() == [] and reader.status("p") == tr.status("p")
        model, X = tiny_regressor()
        v1 = tr.register_candidate("p", model, X.head(2), {}, {"test_r2": 0.9}, {"sluice.data_fingerprint": "abc"})
        tr.record_decision(v1, {"promote": True, "summary": "ok", "checks": [{"name": "r2", "passed": True}]})
        tr.promote("p", v1.version, expected_champion=None)
        v2 = tr.register_candidate("p", model, X.head(2), {}, {"test_r2": 0.5}, {})
        tr.record_decision(v2, {"promote": False, "summary": "worse", "checks": [{"name": "r2", "passed": False}]})
        assert reader.projects() == tr.projects() == ["p"]
        assert reader.status("p") == tr.status("p")
        assert reader.status("p")["last_verdict"]["checks"] == [{"name": "r2", "passed": False}]
    finally:
        server.terminate()
        server.wait(timeout=30)
