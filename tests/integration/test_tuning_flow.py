"""The training flow with tuning and model selection: XGBoost and a torch MLP, pruned, two workers, through the gates."""

from __future__ import annotations

import optuna
import pytest

from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import churn_config, churn_frame, flow_run_artifact, task_states, write_project

pytestmark = pytest.mark.slow


def _tuned_config(root) -> dict:
    cfg = churn_config(root)
    cfg["model"] = {"kind": "xgboost", "params": {"n_estimators": 80, "n_jobs": 1}, "early_stopping_rounds": 10}
    cfg["tuning"] = {
        "n_trials": 5, "n_workers": 2, "pruner": "median", "report_every": 5,
        "search_space": {"max_depth": {"type": "int", "low": 2, "high": 5},
                         "learning_rate": {"type": "float", "low": 0.03, "high": 0.3, "log": True}},
    }
    cfg["candidates"] = [{
        "model": {"kind": "torch", "hidden_layers": [32], "epochs": 12, "patience": 4, "num_threads": 1},
        "tuning": {"n_trials": 4, "report_every": 2,
                   "search_space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
                                    "dropout": {"type": "float", "low": 0.0, "high": 0.3}}},
    }]
    return cfg


def test_tuned_candidates_are_compared_and_the_best_goes_through_the_gates(tmp_path, sluice_home, prefect_harness):
    from flows.training import training_pipeline

    path = write_project(tmp_path, churn_frame(600, seed=4), _tuned_config(tmp_path))
    state = training_pipeline(str(path), None, "test", return_state=True)
    result = state.result()
    states = task_states(state.state_details.flow_run_id)

    assert states["select-model"] == "Completed"
    assert result.outcome == "promoted", result.summary
    assert result.selected_candidate in {"xgboost", "torch"}
    tracker = Tracker(load_settings())
    champion = tracker.champion("churn")
    assert champion is not None and champion.version == str(result.version)
    assert champion.tags["sluice.selected_candidate"] == result.selected_candidate

    table = flow_run_artifact("churn-model-selection", state.state_details.flow_run_id).data
    assert "| xgboost | xgboost | yes | " in table and "| torch | torch | yes | " in table
    assert f"| {result.selected_candidate} |" in table and "**yes**" in table

    # every trial is in the shared Optuna storage and logged as a nested MLflow run
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(load_settings().optuna_storage)}
    assert sorted(s.n_trials for s in studies.values()) == [4, 5]
    exp = tracker.client.get_experiment_by_name("churn")
    parents = tracker.client.search_runs([exp.experiment_id], "tags.`sluice.kind` = 'tuning'")
    assert {r.data.tags["sluice.candidate"] for r in parents} == {"xgboost", "torch"}
    trials = tracker.client.search_runs([exp.experiment_id], "tags.`sluice.trial` != ''")
    assert len(trials) == 9
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {r.info.run_id for r in parents}
    assert flow_run_artifact("churn-tuning-xgboost-history", state.state_details.flow_run_id) is not None

    # the same inputs again: the tuning is cached and the registered candidate reused
    again = training_pipeline(str(path), None, "test", return_state=True)
    assert task_states(again.state_details.flow_run_id)["select-model"] == "Cached"
    assert again.result().version == result.version
