"""The training flow for real: Prefect, Great Expectations, MLflow on SQLite; good runs, cached runs, bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sluicegate.cli import main
from sluicegate.errors import PromotionConflictError
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import churn_config, churn_frame, env_var, flow_run_artifact, task_states, write_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    """One churn project and SLUICE_HOME shared by the tests below, in order."""
    root = tmp_path_factory.mktemp("churn")
    with env_var("SLUICE_HOME", str(root / ".sluice")):
        path = write_project(root, churn_frame(1200), churn_config(root))
        yield path


def _flow():
    from flows.training import training_pipeline

    return training_pipeline


def _tracker() -> Tracker:
    return Tracker(load_settings())


def _run(path, *overrides):
    state = _flow()(str(path), list(overrides) or None, "test", return_state=True)
    return state.result(), task_states(state.state_details.flow_run_id)


def _run_with_id(path):
    state = _flow()(str(path), None, "test", return_state=True)
    return state.result(), task_states(state.state_details.flow_run_id), state.state_details.flow_run_id


def test_first_run_promotes_and_status_reports_it(project, capsys):
    result, states = _run(project)
    assert result.outcome == "promoted" and result.champion == 1
    assert result.metrics["roc_auc"] > 0.6
    assert states["promote-model"] == "Completed"
    assert main(["status", "churn", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["champion"] == 1
    assert status["metrics"]["test_roc_auc"] == pytest.approx(result.metrics["roc_auc"])
    assert status["data_fingerprint"] == result.data_fingerprint
    assert status["last_verdict"]["verdict"] == "promoted"
    assert {c["gate"] for c in status["last_verdict"]["checks"]} >= {"threshold", "champion"}
    version = _tracker().champion("churn")
    for tag in ("sluice.data_fingerprint", "sluice.config_hash", "sluice.git_sha", "sluice.lib.scikit-learn"):
        assert version.tags.get(tag), tag
    assert _tracker().alias("churn", "challenger").version == "1"


def test_unchanged_rerun_is_served_from_cache_and_promotes_nothing(project):
    result, states, run_id = _run_with_id(project)
    assert result.outcome == "unchanged" and result.champion == 1 and result.version == 1
    for name in ("ingest-data", "validate-data", "split-data", "build-features", "train-model"):
        assert states[name] == "Cached", (name, states)
    assert "promote-model" not in states
    assert len(_tracker().versions("churn")) == 1
    assert _tracker().champion("churn").tags["sluice.verdict"] == "promoted"  # its verdict is not overwritten
    # it says unchanged everywhere, never "rejected"
    gate = flow_run_artifact("churn-gate-decision", run_id).data
    summary = flow_run_artifact("churn-training-summary", run_id).data
    assert "Gate decision: UNCHANGED" in gate and "REJECTED" not in gate, gate
    assert "unchanged" in summary and "reject" not in summary.lower(), summary
    assert "unchanged" in result.summary.lower()


def _latest_flow_run():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)[0]


def test_unchanged_cli_run_is_recorded_without_training(project, capsys):
    """The champion carries its run's key (data, config, code): `sluice run` records `unchanged` in a
    training-pipeline flow run that runs no task; any other config runs the full pipeline."""
    assert _tracker().champion("churn").tags.get("sluice.run_key")
    assert main(["run", str(project)]) == 0
    out = capsys.readouterr()
    assert "churn: unchanged (version 1, champion 1)" in out.out and "recording an unchanged run" in out.err, out
    run = _latest_flow_run()
    assert run.state_name == "Completed" and task_states(run.id) == {}
    summary = flow_run_artifact("churn-training-summary", run.id).data
    assert "unchanged" in summary and "reject" not in summary.lower(), summary
    assert len(_tracker().versions("churn")) == 1

    # a gate setting differs from the champion's run: the whole pipeline runs (the same model: unchanged)
    assert main(["run", str(project), "--set", "gates.min_improvement=0.002"]) == 0
    out = capsys.readouterr()
    assert "recording an unchanged run" not in out.err and "churn: unchanged (version 1" in out.out, out
    assert {"ingest-data", "train-model", "register-candidate"} <= set(task_states(_latest_flow_run().id))


def test_worse_candidate_is_not_promoted_and_says_why(project, capsys):
    worse = "model={kind: sklearn, estimator: knn, params: {n_neighbors: 1}}"
    code = main(["run", str(project), "--set", worse])
    out = capsys.readouterr()
    assert code == 6, out
    assert "rejected" in out.out and "champion stays v1" in out.err
    tr = _tracker()
    assert tr.champion("churn").version == "1"
    latest = tr.versions("churn")[-1]
    assert latest.version == "2" and latest.tags["sluice.verdict"] == "rejected"
    assert "does not beat champion v1" in latest.tags["sluice.verdict_summary"]
    assert tr.alias("churn", "challenger").version == "2"


def test_changed_file_is_never_served_from_cache(project):
    data = project.parent.parent / "data" / "churn.csv"
    frame = pd.read_csv(data)
    frame.loc[0, "monthly_charges"] += 1.0
    frame.to_csv(data, index=False)
    result, states = _run(project)
    assert states["ingest-data"] == "Completed" and states["train-model"] == "Completed"
    assert result.data_fingerprint != _tracker().version("churn", "1").tags["sluice.data_fingerprint"]
    assert result.outcome in ("promoted", "rejected")


def test_promotion_is_compare_and_set(project):
    tr = _tracker()
    champion = tr.champion("churn").version
    with pytest.raises(PromotionConflictError, match="champion moved"):
        tr.promote("churn", "2", expected_champion="999")
    assert tr.champion("churn").version == champion


def _bad_data(project, frame: pd.DataFrame, *extra: str) -> tuple[int, str]:
    root = project.parent.parent
    bad = root / "data" / "bad.csv"
    frame.to_csv(bad, index=False)
    return main(["run", str(project), "--set", "data.source.path=data/bad.csv", *extra])


def _assert_nothing_registered(before_versions: int, champion: str):
    tr = _tracker()
    assert len(tr.versions("churn")) == before_versions
    assert tr.champion("churn").version == champion


def _state():
    tr = _tracker()
    return len(tr.versions("churn")), tr.champion("churn").version


@pytest.mark.parametrize(
    "case, mutate, expected",
    [
        ("missing target", lambda f: f.drop(columns="churned"), "target column 'churned' is missing"),
        ("empty", lambda f: f.iloc[0:0], "the dataset is empty"),
        ("single class", lambda f: f.assign(churned=0), "the target has 1 distinct value"),
        ("nan flood", lambda f: f.assign(monthly_charges=[None] * (len(f) // 2) + list(f.monthly_charges[len(f) // 2:])),
         "monthly_charges: 50.0% of values are NaN/inf"),
        ("renamed column", lambda f: f.rename(columns={"tenure": "tenure_months"}), "numeric feature column 'tenure' is missing"),
        ("numbers as text", lambda f: f.assign(monthly_charges=f.monthly_charges.map(lambda v: f"${v}")),
         "numeric feature 'monthly_charges' holds text"),
        ("category outside the allowed set", lambda f: f.assign(plan=f.plan.replace("pro", "platinum")),
         "plan: 78 values not allowed, e.g. 'platinum' (allowed: basic, plus, pro)"),
    ],
)
def test_bad_data_stops_before_training(project, capsys, case, mutate, expected):
    before = _state()
    code = _bad_data(project, mutate(churn_frame(400, seed=5)))
    err = capsys.readouterr().err
    assert code == 4, err
    assert "data validation failed, training did not start" in err and expected in err, err
    assert "report:" in err
    _assert_nothing_registered(*before)


def test_missing_data_file_is_a_clear_error(project, capsys):
    before = _state()
    code = main(["run", str(project), "--set", "data.source.path=data/nope.csv"])
    err = capsys.readouterr().err
    assert code == 3 and "data.source.path: file not found" in err, err
    _assert_nothing_registered(*before)


@pytest.mark.parametrize("override, expected", [
    ("model.kind=xgbost", "model.kind: unknown value 'xgbost'; did you mean 'xgboost'?"),
    ("data.targt=churned", "data.targt: unknown key; did you mean 'target'?"),
])
def test_bad_config_never_starts_a_run(project, capsys, override, expected):
    before = _state()
    assert main(["run", str(project), "--set", override]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    _assert_nothing_registered(*before)


def test_bundled_regression_demo_runs(repo_root, tmp_path, monkeypatch, prefect_harness):
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    state = _flow()(str(repo_root / "configs" / "diabetes.yaml"), ["deploy.enabled=false"], "test", return_state=True)
    result = state.result()
    assert result.outcome == "promoted", result
    assert result.metrics["rmse"] < 65 and result.metrics["r2"] > 0.3
