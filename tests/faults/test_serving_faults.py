"""A real `bentoml serve` under attack and under faults: token on every route, deep JSON, two Content-Types,
a model version that raises (the previous version answers), and a full disk under the prediction log.

One Bento serves the whole module: v2 (which raises on a sentinel value) with v1 as its fallback,
a bearer token, and its prediction log on a 1 MiB tmpfs (root only; that test is skipped otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy import free_port
from tests.faults.sentinel import SENTINEL
from tests.helpers import FEATURES, churn_frame, churn_pipeline, env_var, feature_records, wait_for_log

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOKEN_ENV = "SLUICE_FAULTS_TOKEN"
TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REQUEST_TIMEOUT_S = 20  # every request below must be answered within this (no test asserts a duration)


def _mount_tmpfs(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from sluicegate.packaging import bentoml_env, package_model
    from sluicegate.settings import load_settings
    from sluicegate.tracking import Tracker

    home = tmp_path_factory.mktemp("faults-serving") / "home"
    with env_var("SLUICE_HOME", str(home)):
        predictions = home / "predictions"
        mounted = _mount_tmpfs(predictions)
        proc = None
        try:
            settings = load_settings()
            tracker = Tracker(settings)
            frame = churn_frame(600, seed=3)
            snap = home / "data" / "churn.parquet"
            snap.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(snap, index=False)
            tags = {"sluice.task": "classification", "sluice.target": "churned", "sluice.data_snapshot": str(snap),
                    "sluice.data_fingerprint": "fp-faults", "sluice.git_sha": "test"}
            for version, (c, guard) in enumerate([(1.0, False), (0.5, True)], start=1):
                rec = tracker.register_candidate("churn", churn_pipeline(frame, c, guard), frame[FEATURES].head(3), {"C": c},
                                                 {"test_roc_auc": 0.7}, tags)
                assert rec.version == str(version)
                tracker.promote("churn", rec.version, None if version == 1 else "1")
            port = free_port()
            packaging = PackagingConfig(auth_token={"env": TOKEN_ENV}, fallback="previous")
            bento = package_model(tracker, "churn", None, packaging, DeployConfig(port=port), "classification", settings)
            log_file = home / "serve.log"
            env = {**os.environ, **bentoml_env(settings), "SLUICE_HOME": str(home), TOKEN_ENV: TOKEN,
                   # the pickled v2 refers to tests.faults.sentinel
                   "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
            with open(log_file, "w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", bento.bento_tag, "--host", "127.0.0.1",
                                         "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(home))
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, f"bentoml serve exited:\n{log_file.read_text()[-3000:]}"
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"not ready:\n{log_file.read_text()[-3000:]}"
                time.sleep(0.5)
            yield {"url": url, "log": log_file, "home": home, "frame": frame, "tmpfs": predictions if mounted else None}
        finally:
            if proc is not None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                except ProcessLookupError:
                    pass
            if mounted:
                _unmount(predictions)


def _post(url: str, body, headers=AUTH, **kw) -> httpx.Response:
    return httpx.post(url, json=body, headers=headers, timeout=REQUEST_TIMEOUT_S, **kw)


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=REQUEST_TIMEOUT_S).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name) and not line.startswith("#")]
    assert values, f"{name} missing from /metrics"
    return sum(values)


def test_bearer_token_on_every_route(served):
    url = served["url"]
    answer = _post(f"{url}/predict", feature_records(served["frame"], 1))
    assert answer.status_code == 200, answer.text
    pid = answer.json()[0]["prediction_id"]
    routes = [("GET", "/", None), ("GET", "/docs.json", None), ("GET", "/metrics", None),
              ("GET", "/metadata", None), ("POST", "/predict", feature_records(served["frame"], 2)),
              ("POST", "/predict_proba", feature_records(served["frame"], 2)),
              ("POST", "/feedback", [{"prediction_id": pid, "label": 1}])]
    for method, path, body in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            resp = httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
            assert resp.status_code == 401, (method, path, headers, resp.status_code, resp.text[:200])
            assert resp.headers["www-authenticate"] == "Bearer"
            assert "plan" not in resp.text and "basic" not in resp.text  # nothing of the schema leaks
        resp = httpx.request(method, f"{url}{path}", json=body, headers=AUTH, timeout=REQUEST_TIMEOUT_S)
        assert resp.status_code == 200, (method, path, resp.status_code, resp.text[:300])
    assert "basic" in httpx.get(f"{url}/docs.json", headers=AUTH, timeout=REQUEST_TIMEOUT_S).text
    for path in ("/livez", "/readyz"):  # health probes stay open: orchestrators send no token
        assert httpx.get(f"{url}{path}", timeout=REQUEST_TIMEOUT_S).status_code == 200


def test_deeply_nested_json_is_a_prompt_400(served):
    for body in (b"[" * 10_000 + b"]" * 10_000, b'[{"tenure": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}]"):
        resp = httpx.post(f"{served['url']}/predict", content=body, timeout=REQUEST_TIMEOUT_S,
                          headers={**AUTH, "content-type": "application/json"})
        assert resp.status_code == 400, resp.text[:300]
        assert "nested deeper than 32 levels" in resp.json()["detail"]
    assert _post(f"{served['url']}/predict", feature_records(served["frame"], 1)).status_code == 200  # still serving


def test_two_content_types_are_refused(served):
    body = json.dumps(feature_records(served["frame"], 1)).encode()
    for pair in (("multipart/form-data; boundary=x", "application/json"), ("application/json", "text/csv")):
        headers = [("authorization", AUTH["Authorization"]), ("content-type", pair[0]), ("content-type", pair[1])]
        resp = httpx.post(f"{served['url']}/predict", content=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
        assert resp.status_code == 400, resp.text[:300]
        assert "send one Content-Type header (got 2" in resp.json()["detail"]


def test_previous_version_answers_when_the_model_raises(served):
    url = served["url"]
    records = feature_records(served["frame"], 4)
    records[2]["monthly_charges"] = SENTINEL
    for route, key in (("predict", "prediction"), ("predict_proba", "probabilities")):
        resp = _post(f"{url}/{route}", records)
        assert resp.status_code == 200, resp.text
        answers = resp.json()
        assert [a["model_version"] for a in answers] == ["2", "2", "1", "2"]
        assert [a["fallback"] for a in answers] == [False, False, True, False]
        assert all(a[key] is not None and not a.get("error") for a in answers)
        log = wait_for_log({a["prediction_id"] for a in answers}, served["home"], timeout_s=20).set_index("prediction_id")
        row = log.loc[answers[2]["prediction_id"]]
        assert row["source"] == "fallback" and row["model_version"] == "1"
        assert set(log.loc[[answers[i]["prediction_id"] for i in (0, 1, 3)], "source"]) == {"model"}
    assert "fallback: v2 could not score a record (ValueError: monthly_charges=77.777" in served["log"].read_text()
    assert "previous v1 answered" in served["log"].read_text()
    assert _metric(url, 'sluice_fallback_answers_total{kind="previous"}') >= 2


def test_prediction_log_and_home_are_private(served):
    """Raw request inputs live in the prediction log: the server made it 0600 in a 0700 folder."""
    import stat

    db = served["home"] / "predictions" / "churn" / "predictions.sqlite"
    assert db.exists()
    for path in db.parent.iterdir():  # the database, its WAL and shared-memory files
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(served["home"].stat().st_mode) == 0o700


def test_full_disk_drops_log_rows_counted_while_answers_continue(served):
    folder = served["tmpfs"]
    if folder is None:
        pytest.skip("mounting a tmpfs needs root")
    from sluicegate.serving.predlog import read_prediction_log

    url, home = served["url"], served["home"]
    answered: set[str] = set()

    def ask(n: int) -> None:
        resp = _post(f"{url}/predict", feature_records(served["frame"], n))
        assert resp.status_code == 200, resp.text
        answered.update(a["prediction_id"] for a in resp.json())

    ask(5)
    wait_for_log(answered, home, timeout_s=20)
    written_before = _metric(url, "sluice_prediction_log_written_total")
    filler = folder / "filler"
    try:
        with open(filler, "wb") as f:  # fill the disk under the prediction log
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        deadline = time.monotonic() + 60
        while _metric(url, "sluice_prediction_log_dropped_total") == 0:
            assert time.monotonic() < deadline, f"no drop counted:\n{served['log'].read_text()[-2000:]}"
            ask(100)  # answered all the same
            time.sleep(0.5)
        assert "the disk is full" in served["log"].read_text()
        assert httpx.get(f"{url}/readyz", timeout=REQUEST_TIMEOUT_S).status_code == 200
    finally:
        filler.unlink(missing_ok=True)
    ask(3)  # space again: logging resumes
    deadline = time.monotonic() + 30
    while "writing again" not in served["log"].read_text():
        assert time.monotonic() < deadline, served["log"].read_text()[-2000:]
        ask(1)
        time.sleep(0.5)
    assert _metric(url, "sluice_prediction_log_written_total") > written_before
    # every answered prediction is either in the log or counted as dropped: nothing vanishes silently
    deadline = time.monotonic() + 20
    while True:
        logged = answered & set(read_prediction_log("churn", home)["prediction_id"])
        dropped = _metric(url, "sluice_prediction_log_dropped_total")
        if len(logged) + dropped >= len(answered) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(logged) + dropped == len(answered), (len(logged), dropped, len(answered))
