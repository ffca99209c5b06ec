"""A real Bento served on loopback: typed API, 4xx for bad input, prediction log, canary deploys, rollback."""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from sluicegate.cli import main
from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy import free_port as _free_port
from sluicegate.errors import DeployError
from tests.helpers import FEATURES, Registry, env_var, feature_records, served_version, wait_for_log

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    home = tmp_path_factory.mktemp("serving") / "home"
    with env_var("SLUICE_HOME", str(home)):
        yield Registry(home)


@pytest.fixture(scope="module")
def served(registry):
    """v1 deployed locally behind a free loopback port; every process is stopped at the end."""
    from sluicegate.deploy import release_version, stop_local

    v1 = registry.register(1.0)
    registry.promote(v1)
    port = _free_port()
    spec = DeployConfig(port=port, canary_rows=15, readiness_timeout_s=90)
    try:
        result = release_version(registry.tracker, "churn", None, PackagingConfig(), spec, "classification",
                                 registry.settings)
        yield {"url": result.url, "port": port, "v1": v1}
    finally:
        stop_local(registry.settings, "churn")


def test_predictions_match_offline(registry, served):
    rows = feature_records(registry.frame, 40)
    resp = httpx.post(f"{served['url']}/predict", json=rows, timeout=30)
    assert resp.status_code == 200
    offline = registry.models[served["v1"]].predict(registry.frame[FEATURES].tail(40))
    assert [a["prediction"] for a in resp.json()] == offline.tolist()
    assert {a["model_version"] for a in resp.json()} == {served["v1"]}
    proba = httpx.post(f"{served['url']}/predict_proba", json=rows[:5], timeout=30).json()
    expected = registry.models[served["v1"]].predict_proba(registry.frame[FEATURES].tail(40).head(5))
    for got, want in zip(proba, expected):
        assert math.isclose(got["probabilities"]["1"], float(want[1]), rel_tol=1e-6)


def test_concurrent_clients_each_get_their_own_rows_answers_and_a_bad_request_its_own_refusal(registry, served):
    """32 clients at once through the front: requests that wait for the busy model server leave merged
    (`sluicegate.deploy.proxy`); each client must still get exactly its own rows' answers, and a bad
    request merged with good ones its own refusal, the others theirs."""
    import threading

    from sluicegate.deploy.proxy import front_identity

    n_clients, per_client = 32, 12
    rows = feature_records(registry.frame, n_clients * per_client)
    offline = registry.models[served["v1"]].predict(registry.frame[FEATURES].tail(len(rows))).tolist()
    got: dict[int, httpx.Response] = {}
    bad: dict[int, httpx.Response] = {}

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as session:
            for j in range(per_client):
                i = k * per_client + j
                if j == 6 and k % 4 == 0:
                    bad[i] = session.post(f"{served['url']}/predict", json=[{**rows[i], "tenure": "twelve"}])
                else:
                    got[i] = session.post(f"{served['url']}/predict", json=[rows[i]])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) + len(bad) == len(rows) and len(bad) == n_clients // 4
    for i, resp in got.items():
        assert resp.status_code == 200, resp.text
        assert [a["prediction"] for a in resp.json()] == [offline[i]], i
    for resp in bad.values():
        assert 400 <= resp.status_code < 500 and "tenure" in resp.text
    ids = [resp.json()[0]["prediction_id"] for resp in got.values()]
    assert len(set(ids)) == len(ids)
    who = front_identity("127.0.0.1", served["port"])
    print(f"front merged {who['merged_requests']} requests into {who['merged_sends']}")


@pytest.mark.parametrize("change, field", [
    ({"tenure": "twelve"}, "tenure"),
    ({"monthly_charges": "NaN"}, "monthly_charges"),
    ({"monthly_charges": "Infinity"}, "monthly_charges"),
    ({"plan": "platinum"}, "plan"),
    ({"extra_column": 1}, "extra_column"),
    ({"tenure": None}, "tenure"),
])
def test_bad_input_is_4xx_naming_the_field(registry, served, change, field):
    record = {**feature_records(registry.frame, 1)[0], **change}
    body = json.dumps([record]).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    resp = httpx.post(f"{served['url']}/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    assert field in json.dumps(resp.json())


def test_missing_field_oversize_and_malformed_bodies_are_4xx(registry, served):
    url = f"{served['url']}/predict"
    record = feature_records(registry.frame, 1)[0]
    del record["region"]
    resp = httpx.post(url, json=[record], timeout=30)
    assert resp.status_code == 400 and "region" in resp.text and "missing" in resp.text
    big = feature_records(registry.frame, 1) * 20_000  # ~3 MB against the 1 MB default limit
    assert httpx.post(url, json=big, timeout=30).status_code == 413
    assert httpx.post(url, content=b"[{not json", headers={"content-type": "application/json"}, timeout=30).status_code == 400
    assert httpx.post(url, content=b"a,b\n1,2", headers={"content-type": "text/csv"}, timeout=30).status_code == 415
    assert httpx.post(url, json={"tenure": 1}, timeout=30).status_code == 400


def test_refusals_speak_the_users_field_names(registry, served):
    record = feature_records(registry.frame, 1)[0]
    resp = httpx.post(f"{served['url']}/predict", json=[record, {**record, "monthly_charges": True}], timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"error": "invalid records", "detail": [
        {"record": 1, "field": "monthly_charges", "problem": "expected a number, got a boolean (true)"}]}
    assert "listIODescriptor" not in resp.text and "pydantic" not in resp.text


def test_metadata_and_probes(served):
    meta = httpx.get(f"{served['url']}/metadata", timeout=10).json()
    assert meta["project"] == "churn" and meta["data_fingerprint"] == "fp-test"
    assert [f["name"] for f in meta["feature_schema"]["fields"]] == FEATURES
    for path in ("/readyz", "/livez", "/metrics"):
        assert httpx.get(f"{served['url']}{path}", timeout=10).status_code == 200


def test_prediction_log_has_rows(registry, served):
    from sluicegate.serving.predlog import read_prediction_log

    httpx.post(f"{served['url']}/predict", json=feature_records(registry.frame, 7), timeout=30).raise_for_status()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        log = read_prediction_log("churn")
        if len(log) >= 7:
            break
        time.sleep(0.2)
    assert len(log) >= 7
    assert set(FEATURES) <= set(log.columns) and {"ts", "model_version", "prediction"} <= set(log.columns)
    assert set(log["model_version"]) == {served["v1"]}


def test_mixed_and_canary_traffic_log_then_feedback_joins(registry, served, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from sluicegate.serving.feedback import read_labelled_predictions
    from sluicegate.serving.predlog import read_prediction_log

    url = served["url"]
    tail = registry.frame.tail(24).reset_index(drop=True)
    rows = feature_records(registry.frame, 24)
    rows[20] = {**rows[20], "customer_id": int(tail.customer_id[20])}  # the id column may come with a record
    calls = [("predict", rows[0:10], None), ("predict_proba", rows[10:20], None), ("predict", rows[20:22], None),
             ("predict", rows[0:5], "canary"), ("predict_proba", rows[5:10], "canary"), ("predict", rows[22:24], "health")]

    def post(call):
        route, body, tag = call
        resp = httpx.post(f"{url}/{route}", json=body, headers={"X-Sluice-Traffic": tag} if tag else {}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    with ThreadPoolExecutor(6) as pool:  # concurrent, so adaptive batching mixes live and canary records
        answers = list(pool.map(post, calls))
    assert {"prediction", "model_version", "fallback", "prediction_id"} <= set(answers[0][0])
    assert {"probabilities", "model_version", "fallback", "prediction_id"} <= set(answers[1][0])
    live_ids = [a["prediction_id"] for ans in answers[:3] for a in ans]
    other_ids = {a["prediction_id"] for ans in answers[3:] for a in ans}
    assert len(set(live_ids) | other_ids) == 34  # one fresh id per answer

    log = wait_for_log(set(live_ids))
    assert set(live_ids) <= set(log["prediction_id"]) and not other_ids & set(log["prediction_id"])
    assert set(log["traffic"]) == {"live"}
    everything = wait_for_log(other_ids, traffic=None)
    tags = dict(zip(everything["prediction_id"], everything["traffic"]))
    assert {tags[i] for i in other_ids} == {"canary", "health"}
    mine = log.set_index("prediction_id").loc[live_ids]
    assert mine["endpoint"].tolist() == ["predict"] * 10 + ["predict_proba"] * 10 + ["predict"] * 2
    assert mine["tenure"].tolist() == tail.tenure[:22].tolist()
    proba = mine[mine["endpoint"] == "predict_proba"]
    assert proba["prediction"].tolist() == [int(max(a["probabilities"], key=a["probabilities"].get))
                                            for a in answers[1]]
    assert proba["proba_1"].tolist() == pytest.approx([a["probabilities"]["1"] for a in answers[1]])
    assert mine.loc[mine["endpoint"] == "predict", "proba_1"].isna().all()
    read_prediction_log("churn").to_parquet(tmp_path / "live.parquet", index=False)  # the drift check's write

    truth = tail.churned.tolist()
    body = [{"prediction_id": live_ids[i], "label": truth[i]} for i in (0, 1, 12, 13)]
    body += [{"customer_id": int(tail.customer_id[20]), "label": str(truth[20])},
             {"prediction_id": live_ids[2], "label": 7}, {"prediction_id": "not-an-id", "label": 1},
             {"prediction_id": live_ids[0], "label": 1 - truth[0]}, {"prediction_id": next(iter(other_ids)), "label": 1}]
    resp = httpx.post(f"{url}/feedback", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert [i["status"] for i in result["items"]] == ["accepted"] * 5 + ["wrong_class", "unknown_id", "duplicate",
                                                                        "accepted"]
    assert result["summary"]["accepted"] == 6 and result["summary"]["received"] == 9
    assert result["items"][4]["prediction_id"] == live_ids[20]

    joined = read_labelled_predictions("churn")  # live only: the labelled canary row is left out
    labelled = dict(zip(joined["prediction_id"], joined["churned"]))
    assert labelled == {live_ids[i]: truth[i] for i in (0, 1, 12, 13, 20)}
    by_id = joined.set_index("prediction_id")
    assert [by_id.loc[live_ids[i], "tenure"] for i in (0, 12, 20)] == [tail.tenure[i] for i in (0, 12, 20)]
    joined.to_parquet(tmp_path / "labelled.parquet", index=False)


def test_feedback_malformed_bodies_are_400_naming_the_problem(served):
    url = f"{served['url']}/feedback"
    cases = [({"prediction_id": "x", "label": 1}, "not a single object"),
             ([{"prediction_id": "x"}], "missing 'label'"),
             ([{"label": 1}], "'prediction_id' or 'customer_id'"),
             ([], "empty"), ("text", "JSON list")]
    for body, words in cases:
        resp = httpx.post(url, json=body, timeout=30)
        assert resp.status_code == 400 and words in resp.text, (body, resp.status_code, resp.text)
    assert httpx.post(url, content=b"[{", headers={"content-type": "application/json"}, timeout=30).status_code == 400
    resp = httpx.post(f"{served['url']}/predict", json=[],
                      headers={"X-Sluice-Traffic": "bogus"}, timeout=30)
    assert resp.status_code == 400 and "X-Sluice-Traffic" in resp.text


def test_schemathesis_finds_no_server_errors(served):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    schema = schemathesis.openapi.from_url(f"{served['url']}/docs.json")
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "POST":
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, phases=[Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck))
        def no_5xx(case):
            resp = case.call(base_url=served["url"], timeout=30)
            assert resp.status_code < 500, f"{case.method} {case.path}: {resp.status_code} {resp.text[:300]}"

        no_5xx()
        tested.append(operation.path)
    assert {"/predict", "/predict_proba", "/metadata", "/feedback"} <= set(tested)


def test_deploy_new_version_then_rollback(registry, served):
    url, port = served["url"], str(served["port"])
    v2 = registry.register(0.05)
    registry.promote(v2)
    assert main(["deploy", "churn", "--port", port]) == 0
    assert served_version(url) == v2
    assert main(["rollback", "churn", "--port", port]) == 0
    assert registry.champion() == served["v1"]
    assert served_version(url) == served["v1"]


def _stored_model_dir(registry, version: str) -> Path:
    from sluicegate.packaging import package_model

    bento = package_model(registry.tracker, "churn", version, PackagingConfig(), DeployConfig(), "classification",
                          registry.settings)
    return Path(registry.settings.bentoml_home) / "models" / bento.model_tag.replace(":", "/")


def test_canary_mismatch_keeps_old_model_and_champion(registry, served):
    url, port = served["url"], str(served["port"])
    serving = served_version(url)
    v3 = registry.register(0.5)
    canary = _stored_model_dir(registry, v3) / "canary.json"
    data = json.loads(canary.read_text())
    data["predictions"] = [1 - p for p in data["predictions"]]  # offline answers the served model cannot match
    canary.write_text(json.dumps(data))
    registry.promote(v3)
    assert main(["deploy", "churn", "--port", port]) == DeployError.exit_code
    assert served_version(url) == serving
    assert registry.champion() == serving
    assert httpx.post(f"{url}/predict", json=feature_records(registry.frame, 2), timeout=30).status_code == 200


def test_corrupted_artifact_aborts_deploy_and_old_model_answers(registry, served):
    url = served["url"]
    serving = served_version(url)
    v4 = registry.register(2.0)
    model_file = _stored_model_dir(registry, v4) / "model.pkl"
    model_file.write_bytes(model_file.read_bytes()[:200])  # a truncated pickle
    registry.promote(v4)
    from sluicegate.deploy import release_version

    with pytest.raises(DeployError, match="corrupted"):
        release_version(registry.tracker, "churn", None, PackagingConfig(), DeployConfig(port=served["port"]),
                        "classification", registry.settings)
    assert registry.champion() == serving
    assert served_version(url) == serving
    assert httpx.post(f"{url}/predict", json=feature_records(registry.frame, 2), timeout=30).status_code == 200


def test_port_taken_by_another_process_is_a_clear_error(registry, served):
    from sluicegate.deploy import release_version

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        with pytest.raises(DeployError, match=f"port {taken} .* in use"):
            release_version(registry.tracker, "churn", None, PackagingConfig(), DeployConfig(port=taken),
                            "classification", registry.settings)
    assert served_version(served["url"]) == registry.champion()


def test_batch_scoring_adds_prediction_version_and_fingerprint(registry, served, tmp_path):
    from sluicegate.scoring import score_batch

    src = tmp_path / "in.csv"
    registry.frame.head(50).to_csv(src, index=False)
    result = score_batch(registry.tracker, "churn", str(src), str(tmp_path / "out.parquet"))
    out = pd.read_parquet(result.output_path)
    assert len(out) == 50 and {"prediction", "proba_0", "proba_1", "model_version", "input_fingerprint"} <= set(out.columns)
    assert set(out["model_version"]) == {registry.champion()}
    assert out["input_fingerprint"].nunique() == 1
