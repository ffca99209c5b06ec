"""The training flow's release step: a candidate whose deploy fails never becomes champion; batch scoring."""

from __future__ import annotations

import socket

import httpx
import pandas as pd
import pytest

from sluicegate.errors import DeployError
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import churn_config, churn_frame, env_var, loopback_webhook, write_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("release")
    with env_var("SLUICE_HOME", str(root / ".sluice")):
        frame = churn_frame(1200, seed=5)
        path = write_project(root, frame, churn_config(root))
        yield path, frame


def test_failed_deploy_after_promotion_restores_previous_champion(project):
    from flows.training import training_pipeline

    path, _ = project
    with loopback_webhook() as hook:
        # a weak first champion: the strongest signals are dropped
        first = training_pipeline(str(path), ["features.drop=[tenure,support_calls]",
                                              "features.numeric.columns=[monthly_charges]"], "test")
        assert first.outcome == "promoted" and first.deployment is None
        with socket.socket() as other:  # the configured port is taken: the deploy must fail after packaging
            other.bind(("127.0.0.1", 0))
            other.listen()
            state = training_pipeline(str(path), ["deploy.enabled=true", f"deploy.port={other.getsockname()[1]}",
                                                  f"notifications.webhook_url={hook.url}/hook"],
                                      "test", return_state=True)
    assert state.is_failed()
    assert [m["event"] for m in hook.received] == ["sluicegate.deploy.failed"]  # never promoted, never rolled back
    assert "in use" in hook.received[0]["payload"]["error"]
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
