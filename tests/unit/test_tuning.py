"""Tuning: config refusals name the YAML key; pruning, failed trials, resumed studies, model selection, torch resume."""

from __future__ import annotations

import numpy as np
import pytest

from sluicegate.config import (
    CandidateConfig,
    SklearnModelConfig,
    TorchModelConfig,
    TuningConfig,
    XGBoostModelConfig,
    load_config,
)
from sluicegate.errors import ConfigError, TrainingError
from sluicegate.features import FeatureColumns, FeatureSet
from sluicegate.trainers.registry import get_trainer
from sluicegate.tuning import CandidateScore, pick_best, select_model, study_name_for, tune_model
from tests.helpers import churn_config, write_project


# ---------------------------------------------------------------- helpers
def arrays(n: int = 400, seed: int = 0, task: str = "classification") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    signal = X[:, 0] + 0.7 * X[:, 1] - 0.5 * X[:, 2] * X[:, 3]
    y = (signal + rng.normal(scale=0.6, size=n) > 0).astype(int) if task == "classification" else signal * 10 + 50
    a, b = int(n * 0.6), int(n * 0.8)
    return {"X_train": X[:a], "y_train": y[:a], "X_valid": X[a:b], "y_valid": y[a:b], "X_test": X[b:], "y_test": y[b:]}


def feature_set(tmp_path, task: str = "classification", n: int = 400) -> FeatureSet:
    """Only `arrays_path` is read by the tuning steps."""
    data = arrays(n, task=task)
    path = tmp_path / f"arrays-{task}.npz"
    np.savez(path, **data)
    names = tuple(f"x{i}" for i in range(data["X_train"].shape[1]))
    return FeatureSet(str(tmp_path / "unused.joblib"), str(path), FeatureColumns(names, (), ()), names, len(names))


def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def cand(model, name: str, **tuning) -> CandidateConfig:
    return CandidateConfig(name=name, model=model, tuning=TuningConfig(**tuning))


# one thread: on a shared two-core machine OpenMP contention makes two threads slower for tiny data
XGB = XGBoostModelConfig(kind="xgboost", params={"n_estimators": 60, "n_jobs": 1}, early_stopping_rounds=None)
LOGREG = SklearnModelConfig(kind="sklearn", estimator="logistic_regression", params={"max_iter": 300})


# ---------------------------------------------------------------- config refusals
def _problems(tmp_path, **changes) -> list[str]:
    cfg = churn_config(tmp_path, **changes)
    cfg["model"] = {"kind": "xgboost", "params": {"n_estimators": 50}}
    path = write_project(tmp_path, cfg=cfg)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return err.value.problems


@pytest.mark.parametrize(
    ("tuning", "expected"),
    [
        ({"n_trials": 3, "search_space": {}}, "tuning.search_space: the search space is empty"),
        ({"n_trials": 3, "search_space": {"max_depth": {"type": "int", "low": 6, "high": 2}}},
         "tuning.search_space.max_depth: low must be <= high (got low=6, high=2)"),
        ({"n_trials": 3, "search_space": {"learning_rate": {"type": "float", "low": 0, "high": 0.3, "log": True}}},
         "tuning.search_space.learning_rate: a log scale needs low > 0 (got low=0)"),
        ({"n_trials": 3, "search_space": {"max_dept": {"type": "int", "low": 2, "high": 6}}},
         "tuning.search_space.max_dept: unknown parameter for XGBClassifier; did you mean 'max_depth'?"),
        ({"n_trials": 3, "search_space": {"subsample": {"type": "float", "low": 0.5, "high": 1.5}}},
         "tuning.search_space.subsample: must be a number in the range (0, 1] (got 1.5)"),
        ({"n_trials": 0}, "tuning.n_trials: input should be greater than or equal to 1 (got 0)"),
        ({"enabled": True}, "tuning: no budget: give n_trials, timeout_s or both"),
        ({"n_trials": 3, "cv_folds": 1}, "tuning.cv_folds: must be 0 (score on the validation split) or at least 2"),
    ],
    ids=["empty-space", "low-gt-high", "log-low-zero", "unknown-param", "out-of-range", "zero-trials", "no-budget",
         "one-fold"],
)
def test_bad_tuning_config_is_refused_with_its_yaml_path(tmp_path, tuning, expected):
    problems = _problems(tmp_path, tuning=tuning)
    assert any(expected in p for p in problems), problems
    assert all("churn.yaml: " in p for p in problems)


def test_candidate_search_space_is_checked_against_its_own_kind(tmp_path):
    problems = _problems(tmp_path, tuning={"n_trials": 2}, candidates=[
        {"model": {"kind": "torch", "epochs": 3}, "tuning": {"search_space": {"lrr": {"type": "float", "low": 1e-4, "high": 1e-2}}}},
        {"model": {"kind": "sklearn", "estimator": "knn"}},
        {"model": {"kind": "torch"}, "tuning": {"n_trials": 2}},
    ])
    assert any("candidates.0.tuning.search_space.lrr: unknown parameter for the torch MLP; did you mean 'lr'?" in p
               for p in problems), problems
    assert any("tuning: sklearn:knn has no default search space" in p for p in problems), problems
    assert any("candidates.2.name: duplicate candidate name 'torch'" in p for p in problems), problems


def test_candidates_inherit_tuning_but_not_the_model_search_space(tmp_path):
    cfg = churn_config(tmp_path, tuning={"n_trials": 5, "n_workers": 2,
                                         "search_space": {"max_depth": {"type": "int", "low": 2, "high": 4}}},
                       candidates=[{"model": {"kind": "torch", "epochs": 3}, "tuning": {"n_trials": 2}},
                                   {"name": "lr", "model": {"kind": "sklearn", "estimator": "logistic_regression"},
                                    "tuning": {"enabled": False}}])
    cfg["model"] = {"kind": "xgboost"}
    loaded = load_config(write_project(tmp_path, cfg=cfg))
    first, torch_c, lr = loaded.model_candidates()
    assert (first.name, first.tuning.n_trials, list(first.tuning.search_space)) == ("xgboost", 5, ["max_depth"])
    assert (torch_c.name, torch_c.tuning.n_trials, torch_c.tuning.n_workers, torch_c.tuning.search_space) == ("torch", 2, 2, None)
    assert lr.name == "lr" and not lr.tuning.enabled
    assert loaded.selects_model


# ---------------------------------------------------------------- studies
def test_study_name_is_stable_and_changes_with_the_search_space():
    a = cand(XGB, "xgboost", n_trials=3, search_space={"max_depth": {"type": "int", "low": 2, "high": 4}})
    b = cand(XGB, "xgboost", n_trials=9, n_workers=2, search_space={"max_depth": {"type": "int", "low": 2, "high": 4}})
    c = cand(XGB, "xgboost", n_trials=3, search_space={"max_depth": {"type": "int", "low": 2, "high": 5}})
    name = study_name_for("churn", "fp1", a, "classification", "roc_auc", 7)
    assert name == study_name_for("churn", "fp1", b, "classification", "roc_auc", 7)  # budget is not identity
    assert name != study_name_for("churn", "fp1", c, "classification", "roc_auc", 7)
    assert name != study_name_for("churn", "fp2", a, "classification", "roc_auc", 7)


def test_pruning_stops_weak_trials_and_the_study_finishes(tmp_path):
    fs = feature_set(tmp_path)
    c = cand(XGB, "xgboost", n_trials=10, sampler="random", pruner="median", report_every=5,
             search_space={"learning_rate": {"type": "float", "low": 1e-3, "high": 0.5, "log": True},
                           "max_depth": {"type": "int", "low": 1, "high": 6}})
    result = tune_model(fs, c, "classification", "roc_auc", 3, "prune-test", storage(tmp_path), tmp_path / "plots")
    assert len(result.trials) == 10
    assert result.count("PRUNED") >= 1, [(t.state, t.params) for t in result.trials]
    # a pruned trial has no score (Optuna keeps its last sign-flipped loss report as its value)
    assert all(t.value is None and t.last_step is not None for t in result.trials if t.state == "PRUNED")
    assert result.count("COMPLETE") >= 2
    assert result.direction == "maximize" and 0.5 < result.best_value <= 1.0
    assert set(result.best_params) == {"learning_rate", "max_depth"}
    assert {"history", "importances"} <= set(result.plots)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path):
    fs = feature_set(tmp_path)
    c = cand(LOGREG, "logreg", n_trials=6, sampler="random", pruner="none",
             search_space={"C": {"type": "categorical", "choices": [1.0, -1.0]}})
    result = tune_model(fs, c, "classification", "log_loss", 0, "fail-test", storage(tmp_path))
    failed = [t for t in result.trials if t.state == "FAIL"]
    assert failed and result.count("COMPLETE") >= 1, [(t.state, t.params) for t in result.trials]
    assert all(t.params["C"] == -1.0 and "InvalidParameterError" in t.error for t in failed)
    assert result.best_params == {"C": 1.0} and result.direction == "minimize"


def test_when_every_trial_fails_the_first_error_is_raised(tmp_path):
    fs = feature_set(tmp_path)
    c = cand(LOGREG, "logreg", n_trials=2, pruner="none", search_space={"C": {"type": "categorical", "choices": [-1.0, -2.0]}})
    with pytest.raises(TrainingError, match=r"none of 2 trials completed \(2 failed.*first error: InvalidParameterError"):
        tune_model(fs, c, "classification", "roc_auc", 0, "all-fail", storage(tmp_path))


def test_an_interrupted_study_resumes_instead_of_starting_over(tmp_path):
    fs = feature_set(tmp_path)
    c = cand(XGB, "xgboost", n_trials=3, pruner="none",
             search_space={"max_depth": {"type": "int", "low": 1, "high": 8},
                           "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True}})

    def crash_after_two(study, trial):
        if trial.number == 1:
            raise KeyboardInterrupt  # as if the process were stopped between trials

    with pytest.raises(KeyboardInterrupt):
        tune_model(fs, c, "classification", "roc_auc", 0, "resume-test", storage(tmp_path), callbacks=[crash_after_two])
    resumed = tune_model(fs, c, "classification", "roc_auc", 0, "resume-test", storage(tmp_path))
    assert resumed.resumed_from == 2
    assert [t.number for t in resumed.trials] == [0, 1, 2]
    assert all(t.state == "COMPLETE" for t in resumed.trials)
    assert resumed.trials[2].params != resumed.trials[0].params  # a new draw, not a replay of trial 0
    again = tune_model(fs, c, "classification", "roc_auc", 0, "resume-test", storage(tmp_path))
    assert len(again.trials) == 3 and again.resumed_from == 3  # budget reached: nothing more runs


def test_parallel_workers_share_one_study(tmp_path):
    fs = feature_set(tmp_path)
    c = cand(XGB, "xgboost", n_trials=4, n_workers=2, pruner="median",
             search_space={"max_depth": {"type": "int", "low": 1, "high": 6}})
    result = tune_model(fs, c, "classification", "roc_auc", 0, "parallel-test", storage(tmp_path))
    assert len(result.trials) == 4 and sorted(t.number for t in result.trials) == [0, 1, 2, 3]


# ---------------------------------------------------------------- selection
def test_select_model_compares_candidates_on_validation(tmp_path):
    fs = feature_set(tmp_path)
    candidates = [
        CandidateConfig(name="sklearn:logistic_regression", model=LOGREG, tuning=None),
        cand(XGB, "xgboost", n_trials=3, pruner="none", search_space={"max_depth": {"type": "int", "low": 1, "high": 4}}),
        CandidateConfig(name="broken", model=SklearnModelConfig(kind="sklearn", estimator="logistic_regression",
                                                                params={"C": -1.0}), tuning=None),
    ]
    result = select_model(fs, candidates, "classification", "roc_auc", 0, "churn", "fp", storage(tmp_path))
    by_name = {s.name: s for s in result.scores}
    assert by_name["broken"].value is None and "InvalidParameterError" in by_name["broken"].error
    best = max((s for s in result.scores if s.value is not None), key=lambda s: s.value)
    assert result.name == best.name and result.value == best.value
    assert result.spec == (LOGREG if best.name.startswith("sklearn") else XGB)
    table = result.to_markdown()
    for name in by_name:
        assert f"| {name} |" in table
    with pytest.raises(TrainingError, match="every candidate failed"):
        select_model(fs, candidates[2:], "classification", "roc_auc", 0, "churn", "fp", storage(tmp_path))


def test_regression_selection_minimises_rmse(tmp_path):
    fs = feature_set(tmp_path, task="regression")
    ridge = SklearnModelConfig(kind="sklearn", estimator="ridge", params={})
    result = select_model(fs, [cand(ridge, "ridge", n_trials=3, pruner="none")], "regression", "rmse", 0,
                          "diab", "fp", storage(tmp_path))
    assert result.tunings[0].direction == "minimize"
    assert result.value == min(t.value for t in result.tunings[0].trials if t.value is not None)


# ---------------------------------------------------------------- torch checkpoints
def test_torch_fit_resumes_from_its_checkpoint(tmp_path):
    data = arrays(300)
    spec = TorchModelConfig(kind="torch", hidden_layers=[16], epochs=8, patience=None, scheduler="cosine",
                            dropout=0.1, num_threads=1)
    trainer = get_trainer("torch")
    fit_args = (spec, "classification", data["X_train"], data["y_train"], data["X_valid"], data["y_valid"], 5)
    uninterrupted = trainer.fit(*fit_args)

    class Killed(Exception):
        pass

    def kill_at_epoch_4(epoch, loss):
        if epoch == 4:
            raise Killed

    with pytest.raises(Killed):
        trainer.fit(*fit_args, report=kill_at_epoch_4, checkpoint_dir=tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "torch_mlp.ckpt").exists()
    epochs_run = []
    resumed = trainer.fit(*fit_args, report=lambda e, v: epochs_run.append(e), checkpoint_dir=tmp_path / "ckpt")
    assert epochs_run == [5, 6, 7]  # epochs 0-4 came from the checkpoint
    assert resumed.history_ == uninterrupted.history_
    np.testing.assert_array_equal(resumed.predict_proba(data["X_test"]), uninterrupted.predict_proba(data["X_test"]))

    other = trainer.fit(spec, "classification", data["X_train"][:-10], data["y_train"][:-10], data["X_valid"],
                        data["y_valid"], 5, report=lambda e, v: epochs_run.append(e), checkpoint_dir=tmp_path / "ckpt")
    assert epochs_run[3:] == list(range(8)) and other.n_epochs_ == 8  # other data: the checkpoint is ignored


def test_ties_go_to_the_first_candidate_in_config_order_and_are_reported():
    scores = [CandidateScore("ridge", "sklearn", 0.91, {}, False), CandidateScore("xgboost", "xgboost", 0.91 + 1e-13, {}, True),
              CandidateScore("mlp", "torch", 0.80, {}, False)]
    best, tied = pick_best(scores, "roc_auc")
    assert best.name == "ridge" and [s.name for s in tied] == ["xgboost"]
    best, tied = pick_best(scores[::-1], "roc_auc")
    assert best.name == "xgboost" and [s.name for s in tied] == ["ridge"]
    best, tied = pick_best([CandidateScore("a", "sklearn", 3.0, {}, False), CandidateScore("b", "sklearn", 2.5, {}, False)], "rmse")
    assert best.name == "b" and tied == []


def test_tied_selection_says_so(tmp_path):
    fs = feature_set(tmp_path)
    same = [CandidateConfig(name=n, model=LOGREG, tuning=None) for n in ("first", "second")]
    result = select_model(fs, same, "classification", "roc_auc", 0, "churn", "fp", storage(tmp_path))
    assert result.name == "first" and result.tied == ("second",)
    assert "tied with second" in result.summary and "first in the config's order" in result.summary
    assert "Tie:" in result.to_markdown()


def test_pruned_trials_are_not_logged_under_the_metric(tmp_path, monkeypatch):
    from sluicegate.settings import load_settings
    from sluicegate.tracking import Tracker

    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    tr = Tracker(load_settings())
    trials = [{"number": 0, "state": "COMPLETE", "value": 0.9, "params": {"a": 1}, "duration_s": 1.0, "last_step": 9},
              {"number": 1, "state": "PRUNED", "value": None, "params": {"a": 2}, "duration_s": 0.5, "last_step": 4}]
    pid = tr.log_trials("p", "study", "xgboost", "roc_auc", trials, {"a": 1})
    runs = tr.client.search_runs([tr.experiment_id("p")], f"tags.mlflow.parentRunId = '{pid}'")
    by_state = {r.data.tags["sluice.trial_state"]: r for r in runs}
    assert by_state["PRUNED"].info.status == "KILLED" and "roc_auc" not in by_state["PRUNED"].data.metrics
    assert by_state["PRUNED"].data.metrics["pruned_at_step"] == 4
    assert by_state["COMPLETE"].data.metrics["roc_auc"] == 0.9
