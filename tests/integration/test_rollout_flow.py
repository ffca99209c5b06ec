"""Shadow and canary rollouts on real served models, through the front: compare, breach, hold and promote.

One registry, six model servers in all (each start costs 10-16 s): v1 serves; v2 shadows it
and is promoted by hand; v3 (raises on a sentinel input) is a canary that breaches; v1 comes back
as a canary that holds for its window and is promoted by `sluice rollout check`; then the scheduled
drift-check flow advances rollouts by itself: a v2 canary that holds is promoted by a flow run, a
v1 canary whose live accuracy falls behind on feedback labels is rolled back by the next, and the
`churn-rollout` Prefect artifact shows each.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from sluicegate import audit
from sluicegate.cli import main
from sluicegate.config import PackagingConfig
from sluicegate.deploy import free_port, stop_local
from sluicegate.deploy.processes import BACKEND_MARKER, pid_alive, read_state
from sluicegate.deploy.traffic import read_routing
from sluicegate.serving.predlog import read_prediction_log
from tests.faults.sentinel import SENTINEL
from tests.helpers import Registry, deploy_spec, env_var, feature_records, release, served_version

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("rollout") / "home"
    old_path = os.environ.get("PYTHONPATH")
    root = Path(__file__).resolve().parents[2]  # the pickled v3 refers to tests.faults.sentinel: model servers import it
    with env_var("SLUICE_HOME", str(home)), \
            env_var("PYTHONPATH", os.pathsep.join([str(root / "src"), str(root), *([old_path] if old_path else [])])):
        reg = Registry(home)
        reg.v1, reg.v2, reg.v3 = reg.register(1.0), reg.register(0.01), reg.register(1.0, guard=True)
        reg.promote(reg.v1)
        reg.port = free_port()
        try:
            yield reg
        finally:
            stop_local(reg.settings, "churn")


def _wait(check, timeout_s: float = 60, every: float = 0.2):
    end = time.monotonic() + timeout_s
    while True:
        got = check()
        if (got is not None if hasattr(got, "empty") else bool(got)) or time.monotonic() > end:
            return got
        time.sleep(every)


def _cli_json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_shadow_logs_both_sides_under_one_id_and_compares_with_labels(registry, capsys):
    reg = registry
    url = release(reg, reg.port, reg.v1).url
    result = release(reg, reg.port, reg.v2, strategy="shadow")
    assert "in shadow beside" in result.message
    state = read_state(reg.settings, "churn")
    assert state.version == reg.v1 and state.rollout["status"] == "active" and state.rollout["strategy"] == "shadow"
    assert reg.champion() == reg.v1  # the alias waits for the promotion

    rows = feature_records(reg.frame, 40)
    truth = reg.frame.tail(40).churned.tolist()
    ids, labels = [], []
    with httpx.Client(timeout=30) as client:
        for i in range(0, 40, 2):  # 20 requests of 2 records, on one keep-alive connection
            resp = client.post(f"{url}/predict", json=rows[i:i + 2])
            assert resp.status_code == 200, resp.text
            assert {a["model_version"] for a in resp.json()} == {reg.v1}  # only the champion answers
            ids += [a["prediction_id"] for a in resp.json()]
            labels += truth[i:i + 2]

    def both_sides():
        log = read_prediction_log("churn", traffic=None)
        shadow = log[log["traffic"] == "shadow"]
        return log if set(ids) <= set(shadow["prediction_id"]) and set(ids) <= set(log["prediction_id"]) else None
    log = _wait(both_sides)
    assert log is not None, "the shadow rows did not arrive"
    mine = log[log["prediction_id"].isin(ids)]
    assert sorted(mine.groupby("traffic")["model_version"].unique().map(tuple).items()) == \
        [("live", (reg.v1,)), ("shadow", (reg.v2,))]
    assert mine.groupby("prediction_id").size().eq(2).all()

    resp = httpx.post(f"{url}/feedback", json=[{"prediction_id": p, "label": y} for p, y in zip(ids, labels)], timeout=30)
    assert resp.status_code == 200 and resp.json()["summary"]["accepted"] == 40, resp.text

    # the front writes its per-side counters every check interval: wait for them to catch up
    for _ in range(60):
        out = _cli_json(capsys, ["compare", reg.config_path, "--json"])
        if out["requests"]["candidate"] >= 20:
            break
        time.sleep(0.5)
    assert (out["champion_version"], out["candidate_version"], out["pairs"]) == (reg.v1, reg.v2, 40)
    assert 0.0 <= out["agreement"] <= 1.0
    metric = out["metric"]
    assert (metric["name"], metric["champion_n"], metric["candidate_n"]) == ("accuracy", 40, 40)
    by_id = dict(zip(ids, labels))
    live = mine[mine["traffic"] == "live"]
    assert metric["champion"] == pytest.approx((live["prediction"] == live["prediction_id"].map(by_id)).mean())
    assert out["requests"]["champion"] == 20 and out["requests"]["candidate"] == 20
    assert out["latency_ms"]["champion"]["p50"] > 0 and out["latency_ms"]["candidate"]["p95"] > 0

    old_backend = state.backend_pid
    assert main(["rollout", "promote", reg.config_path]) == 0
    assert reg.champion() == reg.v2 and served_version(url) == reg.v2
    state = read_state(reg.settings, "churn")
    assert state.version == reg.v2 and state.rollout["status"] == "promoted"
    assert _wait(lambda: not pid_alive(old_backend), 30)
    status = _cli_json(capsys, ["status", reg.config_path, "--json"])
    assert status["serving"]["version"] == reg.v2 and status["serving"]["rollout"]["status"] == "promoted"


def _no_rollout(reg) -> None:
    """An earlier test that failed mid-rollout must not fail the next one with "a rollout is under way"."""
    from sluicegate.deploy.traffic import abort_rollout

    state = read_state(reg.settings, "churn")
    if state is not None and (state.rollout or {}).get("status") == "active":
        abort_rollout(reg.settings, "churn", "left by an earlier failed test")


def _counted(reg, candidate_requests: int) -> bool:
    """The front writes its counters each check interval; the file may not exist yet."""
    stats = reg.settings.home / "deploy" / "churn" / "traffic-stats.json"
    if read_state(reg.settings, "churn").rollout.get("status") != "active":
        return True
    try:
        return json.loads(stats.read_text()).get("candidate", {}).get("requests", 0) >= candidate_requests
    except (OSError, ValueError):
        return False


def test_canary_breach_rolls_back_answers_and_logs_everything(registry):
    reg = registry
    _no_rollout(reg)
    url = f"http://127.0.0.1:{reg.port}"
    canary = {"share": 0.5, "window_requests": 1000, "min_requests": 8, "max_p95_ratio": 1000, "check_interval_s": 0.5}
    result = release(reg, reg.port, reg.v3, strategy="canary", canary=canary)
    assert "in canary beside" in result.message
    cand_pid = read_state(reg.settings, "churn").rollout["candidate_pid"]

    rows = [{**r, "monthly_charges": SENTINEL} for r in feature_records(reg.frame, 60)]  # v3 cannot score these
    ids = []
    with httpx.Client(timeout=30) as client:
        for row in rows:
            resp = client.post(f"{url}/predict", json=[row])
            assert resp.status_code == 200, resp.text
            answer = resp.json()[0]
            assert answer["error"] is None and answer["prediction"] is not None  # the champion answered for v3
            ids.append(answer["prediction_id"])
    assert _wait(lambda: (read_routing(reg.settings, "churn") or {}).get("breach") or
                 read_state(reg.settings, "churn").rollout["status"] == "breached")
    state = _wait(lambda: (s := read_state(reg.settings, "churn")).rollout["status"] == "breached" and s, 90)
    assert state, "sluice rollout check (started by the front) did not finish the breach"
    assert state.version == reg.v2 and reg.champion() == reg.v2
    assert "errors: candidate error rate" in state.rollout["reason"]
    assert _wait(lambda: not pid_alive(cand_pid, BACKEND_MARKER), 30)
    assert served_version(url) == reg.v2
    log = _wait(lambda: lg if set(ids) <= set((lg := read_prediction_log("churn"))["prediction_id"]) else None)
    assert log is not None and set(ids) <= set(log["prediction_id"])  # every answered request is logged
    assert set(log[log["prediction_id"].isin(ids)]["model_version"]) == {reg.v2}
    records = _wait(lambda: [r for r in audit.read_history(reg.tracker, "churn") if r.action == audit.CANARY_BREACH], 30)
    assert records and records[0].version == reg.v3 and "error rate" in records[0].why


def test_canary_that_holds_for_its_window_is_promoted_by_rollout_check(registry, capsys):
    reg = registry
    _no_rollout(reg)
    url = f"http://127.0.0.1:{reg.port}"
    canary = {"share": 0.5, "window_requests": 10, "min_requests": 5, "max_p95_ratio": 1000,
              "max_error_rate_increase": 0.5}
    release(reg, reg.port, reg.v1, strategy="canary", canary=canary)
    rows = feature_records(reg.frame, 80)
    seen = set()
    with httpx.Client(timeout=30) as client:
        for row in rows:
            resp = client.post(f"{url}/predict", json=[row])
            assert resp.status_code == 200
            seen.add(resp.json()[0]["model_version"])
    assert seen == {reg.v1, reg.v2}  # both answer during the canary
    _wait(lambda: _counted(reg, 10), 30)
    capsys.readouterr()
    assert main(["rollout", "check", reg.config_path]) == 0
    said = capsys.readouterr().out
    assert "serving at" in said and "held for the window" in said
    assert reg.champion() == reg.v1 and served_version(url) == reg.v1
    state = read_state(reg.settings, "churn")
    assert state.version == reg.v1 and state.rollout["status"] == "promoted"
    deploys = [r for r in audit.read_history(reg.tracker, "churn") if r.action == audit.DEPLOY]
    assert deploys and deploys[0].version == reg.v1 and "held for the window" in deploys[0].why


# ---------------------------------------------------------------- the scheduled drift check advances rollouts
def _canary_beside_the_champion(reg, canary: dict) -> tuple[str, str, str]:
    """(url, champion, candidate): a canary of the version not serving (serving v1 first when nothing does),
    started by the training flow's release task; the rollout artifact shows it from the start."""
    from prefect.artifacts import Artifact

    from tasks.deploy import release_model

    _no_rollout(reg)
    state = read_state(reg.settings, "churn")
    if state is None:
        release(reg, reg.port, reg.v1)
        state = read_state(reg.settings, "churn")
    champion = state.version
    candidate = reg.v2 if champion != reg.v2 else reg.v1
    release_model.fn("churn", candidate, PackagingConfig(), deploy_spec(reg.port, strategy="canary", canary=canary),
                     "classification", expected_champion=champion)
    assert read_state(reg.settings, "churn").rollout["status"] == "active" and reg.champion() == champion
    started = Artifact.get("churn-rollout").data
    assert started.startswith(f"# churn: canary of v{candidate} beside v{champion}: ACTIVE")
    assert f"v{candidate} answers {canary['share']:.0%}" in started and "Not checked yet" in started
    return f"http://127.0.0.1:{reg.port}", champion, candidate


def _drift_check(reg):
    """One run of the drift-check flow on a batch of the training rows: (result, flow run id)."""
    from flows.monitoring import drift_check

    batch = Path(reg.config_path).parents[1] / "data" / "churn.csv"
    state = drift_check(reg.config_path, str(batch), return_state=True)
    return state.result(), str(state.state_details.flow_run_id)


def _rollout_artifact(run_id: str) -> str:
    from tests.helpers import flow_run_artifact

    artifact = flow_run_artifact("churn-rollout", run_id)
    assert artifact is not None, "the drift-check run published no churn-rollout artifact"
    return artifact.data


def test_canary_that_holds_is_promoted_by_the_drift_check_flow(registry, prefect_harness, capsys):
    reg = registry
    canary = {"share": 0.5, "window_requests": 10, "min_requests": 5, "max_p95_ratio": 1000,
              "max_error_rate_increase": 0.5}
    url, champion, candidate = _canary_beside_the_champion(reg, canary)
    with httpx.Client(timeout=30) as client:
        for row in feature_records(reg.frame, 60):
            assert client.post(f"{url}/predict", json=[row]).status_code == 200
    assert _wait(lambda: _counted(reg, 10), 30)

    result, run_id = _drift_check(reg)
    assert result["rollout"]["action"] == "promoted" and result["rollout"]["verdict"] == "promote", result["rollout"]
    assert "rollout: promoted" in result["text"]
    assert reg.champion() == candidate and served_version(url) == candidate
    state = read_state(reg.settings, "churn")
    assert state.version == candidate and state.rollout["status"] == "promoted"
    check = state.rollout["last_check"]
    assert check["action"] == "promoted" and check["by"].startswith("drift-check flow run ")
    deploys = [r for r in audit.read_history(reg.tracker, "churn") if r.action == audit.DEPLOY]
    assert deploys[0].version == candidate and "held for the window" in deploys[0].why
    assert deploys[0].flow_run_id == run_id  # recorded as done by this flow run

    md = _rollout_artifact(run_id)
    assert md.startswith(f"# churn: canary of v{candidate} beside v{champion}: PROMOTED")
    assert f"v{candidate} serves 100%" in md and "action **promoted**" in md and check["by"] in md
    cand_requests = state.rollout["stats"]["candidate"]["requests"]
    assert cand_requests >= 10 and f"| requests | {state.rollout['stats']['champion']['requests']} | {cand_requests} |" in md
    assert "| window | ok |" in md

    status = _cli_json(capsys, ["status", reg.config_path, "--json"])
    assert status["serving"]["rollout"]["last_check"]["action"] == "promoted"

    # what `sluice rollout check|promote|abort` call after acting: outside any run, with the API configured
    from prefect.artifacts import Artifact

    from tasks.rollout import publish_rollout

    assert publish_rollout("churn") is not None
    latest = Artifact.get("churn-rollout")
    assert latest.flow_run_id is None and latest.data.startswith(md.splitlines()[0])

    again, _ = _drift_check(reg)  # nothing open any more: the next scheduled run leaves serving alone
    assert again["rollout"] is None and served_version(url) == candidate


def test_canary_whose_live_metric_falls_behind_is_rolled_back_by_the_drift_check_flow(registry, prefect_harness):
    reg = registry
    canary = {"share": 0.5, "window_requests": 1000, "min_requests": 5, "min_labels": 5, "max_metric_drop": 0.05,
              "max_p95_ratio": 1000, "max_error_rate_increase": 0.5}
    url, champion, candidate = _canary_beside_the_champion(reg, canary)
    cand_pid = read_state(reg.settings, "churn").rollout["candidate_pid"]
    feedback = []
    with httpx.Client(timeout=30) as client:
        for row in feature_records(reg.frame, 60):
            answer = client.post(f"{url}/predict", json=[row]).json()[0]
            right = answer["model_version"] == champion  # labels that make the candidate wrong every time
            feedback.append({"prediction_id": answer["prediction_id"],
                             "label": answer["prediction"] if right else 1 - int(answer["prediction"])})
        resp = client.post(f"{url}/feedback", json=feedback)
    assert resp.status_code == 200 and resp.json()["summary"]["accepted"] == 60, resp.text
    # the front sees no errors and no slow answers: only the labels show the breach, which the flow judges
    assert read_state(reg.settings, "churn").rollout["status"] == "active"

    result, run_id = _drift_check(reg)
    assert result["rollout"]["action"] == "breached", result["rollout"]
    state = read_state(reg.settings, "churn")
    assert state.version == champion and reg.champion() == champion and state.rollout["status"] == "breached"
    assert "metric: live accuracy candidate 0" in state.rollout["reason"]
    assert state.rollout["last_check"]["by"].startswith("drift-check flow run ")
    assert _wait(lambda: not pid_alive(cand_pid, BACKEND_MARKER), 30)
    assert served_version(url) == champion
    breaches = [r for r in audit.read_history(reg.tracker, "churn") if r.action == audit.CANARY_BREACH]
    assert breaches[0].version == candidate and breaches[0].flow_run_id == run_id and "live accuracy" in breaches[0].why

    md = _rollout_artifact(run_id)
    assert md.startswith(f"# churn: canary of v{candidate} beside v{champion}: BREACHED")
    assert "action **breached**" in md and "| metric | FAILED | live accuracy candidate 0 " in md
    assert "| live accuracy | 1 (n=" in md  # the champion was right on every label it got
