"""ONNX at packaging, for real: the export and parity report stored with the version (MLflow), a Bento
served by the graph answering as the native one, a graph that fails parity served natively saying why,
and batch scoring through the graph."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy import free_port
from tests.helpers import FEATURES, churn_frame, churn_pipeline, env_var

pytestmark = pytest.mark.slow

def _frame() -> pd.DataFrame:
    """Churn rows with missing values in a numeric, a categorical and the date column (nullable in the schema)."""
    frame = churn_frame(600, seed=5)
    frame["monthly_charges"] = frame["monthly_charges"].astype("float64")
    frame.loc[frame.index % 17 == 0, "monthly_charges"] = np.nan
    frame["plan"] = frame["plan"].astype(object)
    frame.loc[frame.index % 13 == 0, "plan"] = None
    frame["signup_date"] = frame["signup_date"].astype(object)
    frame.loc[frame.index % 19 == 0, "signup_date"] = None
    return frame


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two versions of one fitted pipeline: v1 packaged as is, v2 packaged under a parity tolerance of 0."""
    from sluicegate.settings import load_settings
    from sluicegate.tracking import Tracker

    home = tmp_path_factory.mktemp("onnx-serving") / "home"
    with env_var("SLUICE_HOME", str(home)):
        settings = load_settings()
        tracker = Tracker(settings)
        frame = _frame()
        snap = home / "data" / "churn.parquet"
        snap.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(snap, index=False)
        test = home / "data" / "test.parquet"
        frame.tail(150).to_parquet(test, index=False)
        model = churn_pipeline(frame)
        tags = {"sluice.task": "classification", "sluice.target": "churned", "sluice.data_snapshot": str(snap),
                "sluice.data_fingerprint": "fp-onnx", "sluice.git_sha": "test", "sluice.test_path": str(test)}
        versions = [tracker.register_candidate("churn", model, frame[FEATURES].head(3), {}, {"test_roc_auc": 0.7},
                                               tags).version for _ in range(2)]
        tracker.promote("churn", versions[0], None)
        yield {"settings": settings, "tracker": tracker, "frame": frame, "model": model, "versions": versions,
               "home": home}


@pytest.fixture(scope="module")
def bentos(registry):
    import sluicegate.onnx_export as onnx_export
    from sluicegate.packaging import package_model

    tracker, settings = registry["tracker"], registry["settings"]
    v1, v2 = registry["versions"]
    port = free_port()
    good = package_model(tracker, "churn", v1, PackagingConfig(), DeployConfig(port=port), "classification", settings)
    saved = onnx_export.PROBA_TOLERANCE
    onnx_export.PROBA_TOLERANCE = 0.0  # float32 probabilities never equal float64 ones exactly: parity fails
    try:
        bad = package_model(tracker, "churn", v2, PackagingConfig(), DeployConfig(port=port), "classification",
                            settings)
    finally:
        onnx_export.PROBA_TOLERANCE = saved
    return good, bad


def test_packaging_stores_the_export_and_parity_report_with_the_version(registry, bentos):
    from sluicegate.packaging import package_model

    tracker = registry["tracker"]
    good, bad = bentos
    v1, v2 = registry["versions"]
    rec = tracker.version("churn", v1)
    assert rec.tags["sluice.onnx"] == "ok" and rec.tags["sluice.onnx_reason"] == ""
    files = {a.path for a in tracker.client.list_artifacts(rec.run_id, "onnx")}
    assert files == {"onnx/model.onnx", "onnx/onnx.json", "onnx/parity.json"}
    parity = tracker.mlflow.artifacts.load_dict(f"runs:/{rec.run_id}/onnx/parity.json")
    assert parity["passed"] and parity["rows"] == 150  # the version's test split
    assert tracker.client.get_run(rec.run_id).data.tags["sluice.onnx"] == "ok"
    assert good.runtime == "onnx"
    from sluicegate.packaging import canary_data

    # the canary's expected answers come from the runtime that serves (it replays against the served endpoint)
    assert canary_data(good, registry["settings"])["runtime"] == "onnx"
    assert canary_data(bad, registry["settings"])["runtime"] == "native"
    stored = Path(registry["settings"].bentoml_home) / "models" / good.model_tag.replace(":", "/") / "onnx"
    assert (stored / "model.onnx").is_file() and (stored / "parity.json").is_file()
    # packaging again reads the stored export back instead of exporting anew
    again = package_model(tracker, "churn", v1, PackagingConfig(), DeployConfig(port=3000), "classification",
                          registry["settings"])
    assert again.runtime == "onnx" and again.model_tag == good.model_tag
    assert len(tracker.client.list_artifacts(rec.run_id, "onnx")) == 3

    failed = tracker.version("churn", v2)
    assert failed.tags["sluice.onnx"] == "failed" and "parity failed on 150 holdout rows" in failed.tags[
        "sluice.onnx_reason"]
    assert bad.runtime == "native"
    assert not tracker.mlflow.artifacts.load_dict(f"runs:/{failed.run_id}/onnx/parity.json")["passed"]


def test_runtime_onnx_refuses_a_version_without_a_passing_graph(registry, bentos):
    from sluicegate.errors import DeployError
    from sluicegate.packaging import package_model

    with pytest.raises(DeployError, match="packaging.runtime: onnx, but ONNX export failed: parity failed"):
        package_model(registry["tracker"], "churn", registry["versions"][1], PackagingConfig(runtime="onnx"),
                      DeployConfig(), "classification", registry["settings"])
    native = package_model(registry["tracker"], "churn", registry["versions"][0], PackagingConfig(runtime="native"),
                           DeployConfig(), "classification", registry["settings"])
    assert native.runtime == "native"


@pytest.fixture(scope="module")
def servers(registry, bentos):
    from sluicegate.deploy import start_backend, stop_process_group, wait_ready

    procs, urls = [], []
    try:
        for bento in bentos:
            port = free_port()
            log_file = registry["home"] / f"serve-{bento.version}.log"
            procs.append(start_backend(bento, "127.0.0.1", port, registry["settings"], log_file))
            urls.append((f"http://127.0.0.1:{port}", log_file))
        for proc, (url, log_file) in zip(procs, urls):
            wait_ready(proc, url, 240, log_file)
        yield [u for u, _ in urls]
    finally:
        for proc in procs:
            stop_process_group(proc.pid)


def _records(frame: pd.DataFrame) -> list[dict]:
    rows = frame[FEATURES].tail(60)
    records = json.loads(rows.to_json(orient="records"))
    records[0] = {**records[0], "monthly_charges": None, "plan": None, "signup_date": None}
    assert any(r["plan"] is None for r in records) and any(r["monthly_charges"] is None for r in records)
    return records


def test_onnx_bento_answers_as_the_native_one(registry, servers):
    onnx_url, native_url = servers
    meta = httpx.get(f"{onnx_url}/metadata", timeout=10).json()
    assert meta["runtime"] == "onnx" and meta["onnx"]["status"] == "ok" and meta["onnx"]["parity"]["passed"]
    records = _records(registry["frame"])
    got = httpx.post(f"{onnx_url}/predict", json=records, timeout=30)
    want = httpx.post(f"{native_url}/predict", json=records, timeout=30)
    assert got.status_code == want.status_code == 200, got.text
    assert [a["prediction"] for a in got.json()] == [a["prediction"] for a in want.json()]
    offline = registry["model"].predict(pd.DataFrame(records, columns=FEATURES))
    assert [a["prediction"] for a in got.json()] == offline.tolist()
    got = httpx.post(f"{onnx_url}/predict_proba", json=records, timeout=30).json()
    want = httpx.post(f"{native_url}/predict_proba", json=records, timeout=30).json()
    for a, b in zip(got, want):
        assert a["probabilities"].keys() == b["probabilities"].keys() == {"0", "1"}
        assert all(math.isclose(a["probabilities"][k], b["probabilities"][k], abs_tol=1e-5) for k in ("0", "1"))
        assert a["error"] is None and not a["fallback"] and a["prediction_id"]
    # one record at a time (the unbatched path) and the same validation: unknown category, missing field
    one = httpx.post(f"{onnx_url}/predict", json=records[:1], timeout=30).json()
    assert one[0]["prediction"] == offline[0]
    for bad in ({**records[1], "plan": "platinum"}, {k: v for k, v in records[1].items() if k != "region"},
                {**records[1], "tenure": "twelve"}):
        a = httpx.post(f"{onnx_url}/predict", json=[bad], timeout=30)
        b = httpx.post(f"{native_url}/predict", json=[bad], timeout=30)
        assert a.status_code == b.status_code == 400 and a.json() == b.json()


def test_a_graph_that_fails_parity_is_served_natively_and_says_why(servers):
    meta = httpx.get(f"{servers[1]}/metadata", timeout=10).json()
    assert meta["runtime"] == "native"
    assert meta["onnx"]["status"] == "failed" and meta["onnx"]["parity"]["passed"] is False
    assert meta["runtime_reason"].startswith("ONNX export failed: parity failed on 150 holdout rows")


def test_onnx_predictions_are_logged(registry, servers):
    from sluicegate.serving.predlog import read_prediction_log

    records = _records(registry["frame"])[:5]
    answers = httpx.post(f"{servers[0]}/predict_proba", json=records, timeout=30).json()
    ids = {a["prediction_id"] for a in answers}
    import time

    deadline = time.monotonic() + 15
    while True:
        log = read_prediction_log("churn")
        if ids <= set(log["prediction_id"]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    mine = log.set_index("prediction_id").loc[[a["prediction_id"] for a in answers]]
    assert mine["proba_1"].tolist() == pytest.approx([a["probabilities"]["1"] for a in answers])
    assert mine["tenure"].tolist() == [r["tenure"] for r in records]


def test_batch_scoring_uses_the_graph_and_matches_native(registry, tmp_path):
    from sluicegate.scoring import score_batch

    src = tmp_path / "in.csv"
    rows = registry["frame"].head(200).copy()
    rows.loc[rows.index[:3], "region"] = "central"  # unseen in training: a file is not validated like a request
    rows.to_csv(src, index=False)
    tracker = registry["tracker"]
    onnx = score_batch(tracker, "churn", str(src), str(tmp_path / "onnx.parquet"))
    native = score_batch(tracker, "churn", str(src), str(tmp_path / "native.parquet"), runtime="native")
    assert (onnx.runtime, native.runtime) == ("onnx", "native")
    a, b = pd.read_parquet(onnx.output_path), pd.read_parquet(native.output_path)
    assert list(a.columns) == list(b.columns)
    assert a["prediction"].tolist() == b["prediction"].tolist()
    assert np.allclose(a["proba_1"], b["proba_1"], atol=1e-5)
    assert a.drop(columns=["proba_0", "proba_1"]).equals(b.drop(columns=["proba_0", "proba_1"]))
    # a version whose graph failed parity scores natively even under auto
    failed = score_batch(tracker, "churn", str(src), str(tmp_path / "v2.parquet"), version=registry["versions"][1])
    assert failed.runtime == "native"
