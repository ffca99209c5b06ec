"""One conformance suite over every registered trainer kind: fit, determinism, MLflow round trip, search space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sluicegate.config import FeaturesConfig, SearchParam, SklearnModelConfig, TorchModelConfig, XGBoostModelConfig
from sluicegate.features import build_features
from sluicegate.settings import load_settings
from sluicegate.trainers import registry
from sluicegate.training import load_model_file, train_model
from sluicegate.tuning import sample_search_space
from tests.helpers import churn_frame

pytestmark = pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer:UserWarning")

TASKS = ("classification", "regression")
TARGET = {"classification": "churned", "regression": "monthly_charges"}
# Small, fast settings per kind; a newly registered kind fails here until it gets an entry.
SPECS = {
    "sklearn": {
        "classification": SklearnModelConfig(kind="sklearn", estimator="logistic_regression", params={"max_iter": 300}),
        "regression": SklearnModelConfig(kind="sklearn", estimator="ridge"),
    },
    "xgboost": XGBoostModelConfig(kind="xgboost", params={"n_estimators": 30, "n_jobs": 1}),
    "torch": TorchModelConfig(kind="torch", hidden_layers=[16, 8], epochs=6, batch_size=64, num_threads=1),
}


def spec_for(kind: str, task: str):
    assert kind in SPECS, f"trainer kind {kind!r} has no conformance spec: add one to SPECS"
    spec = SPECS[kind]
    return spec[task] if isinstance(spec, dict) else spec


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Transformed splits of a small churn table, per task (a few hundred rows)."""
    root = tmp_path_factory.mktemp("conformance")
    frame = churn_frame(320, seed=3).drop(columns=["signup_date", "customer_id"])
    parts = {"train": frame.iloc[:200], "valid": frame.iloc[200:260], "test": frame.iloc[260:]}
    paths = {}
    for name, part in parts.items():
        paths[name] = str(root / f"{name}.parquet")
        part.to_parquet(paths[name])
    out = {}
    for task in TASKS:
        exclude = {TARGET["classification"]} if task == "regression" else set()
        fs = build_features(paths["train"], paths["valid"], paths["test"], FeaturesConfig(), TARGET[task], exclude,
                            root / f"features-{task}")
        test = parts["test"].drop(columns=[TARGET[task]])
        out[task] = (fs, test, parts["test"][TARGET[task]].to_numpy())
    return root, out


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    from sluicegate.tracking import Tracker

    home = tmp_path_factory.mktemp("mlflow-home")
    return Tracker(load_settings({"SLUICE_HOME": str(home)}))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", registry.kinds())
class TestTrainerConformance:
    def test_fits_inside_the_pipeline_and_predicts_every_row(self, kind, task, prepared, tmp_path):
        fs, test, y = prepared[1][task]
        result = train_model(fs, spec_for(kind, task), task, 11, tmp_path / "m")
        model = load_model_file(result.model_path)  # the joblib round trip of the full pipeline
        pred = np.asarray(model.predict(test))
        assert pred.shape == (len(test),) and result.kind == kind
        if task == "classification":
            assert set(np.unique(pred)) <= set(np.unique(y))
            assert list(model.classes_) == sorted(np.unique(y))
            proba = model.predict_proba(test)
            assert proba.shape == (len(test), 2)
            np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
        else:
            assert np.isfinite(pred.astype(float)).all()

    def test_same_seed_gives_the_same_predictions(self, kind, task, prepared, tmp_path):
        fs, test, _ = prepared[1][task]
        spec = spec_for(kind, task)
        a = load_model_file(train_model(fs, spec, task, 5, tmp_path / "a").model_path)
        b = load_model_file(train_model(fs, spec, task, 5, tmp_path / "b").model_path)
        out = "predict_proba" if task == "classification" else "predict"
        np.testing.assert_array_equal(getattr(a, out)(test), getattr(b, out)(test))

    def test_mlflow_round_trip_predicts_the_same(self, kind, task, prepared, tracker, tmp_path):
        fs, test, _ = prepared[1][task]
        model = load_model_file(train_model(fs, spec_for(kind, task), task, 5, tmp_path / "m").model_path)
        project = f"conf-{kind}-{task}"
        record = tracker.register_candidate(project, model, test.head(5), {"model.kind": kind}, {"m": 1.0},
                                       {"sluice.project": project})
        loaded = tracker.load_model(record.model_uri)
        out = "predict_proba" if task == "classification" else "predict"
        np.testing.assert_array_equal(getattr(loaded, out)(test), getattr(model, out)(test))

    def test_default_search_space_samples_valid_params(self, kind, task, prepared, tmp_path):
        spec = spec_for(kind, task)
        trainer = registry.get_trainer(kind)
        space = {k: SearchParam.model_validate(v) for k, v in trainer.default_search_space(spec, task).items()}
        assert space, f"{kind} ({task}) has no default search space"
        draws = sample_search_space(space, 6, seed=1)
        for params in draws:
            assert registry.check_params(spec, task, params) == [], params
        fs, test, _ = prepared[1][task]
        model = load_model_file(train_model(fs, spec, task, 0, tmp_path / "m", params=draws[0]).model_path)
        assert len(model.predict(test)) == len(test)


def test_torch_weights_are_pickled_as_a_state_dict_not_a_module(prepared, tmp_path):
    import pickle

    fs, test, _ = prepared[1]["classification"]
    model = load_model_file(train_model(fs, spec_for("torch", "classification"), "classification", 0, tmp_path).model_path)
    est = model.named_steps["model"]
    state = est.__getstate__()
    assert "module_" not in state and isinstance(state["weights_"], bytes)
    blob = pickle.dumps(est)
    assert b"torch.nn.modules" not in blob  # no pickled nn.Module classes
    X = model.named_steps["features"].transform(test)
    np.testing.assert_array_equal(pickle.loads(blob).predict_proba(X), est.predict_proba(X))


def test_config_check_of_a_non_torch_project_does_not_import_torch(repo_root):
    import subprocess
    import sys

    code = ("import sys; from sluicegate.config import load_config; "
            "load_config('configs/diabetes.yaml'); assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_frame_columns_survive(prepared):
    """Guard for the fixture itself: features come from the raw frame, not a pre-built array."""
    fs, test, _ = prepared[1]["regression"]
    assert isinstance(test, pd.DataFrame) and "monthly_charges" not in test.columns and fs.n_features > 3


def test_the_model_section_of_the_schema_is_the_registry():
    """One place defines kinds: the `model:` union and its JSON schema list exactly the registered ones."""
    from sluicegate.config import config_json_schema

    model = config_json_schema()["properties"]["model"]
    assert model["discriminator"]["propertyName"] == "kind"
    assert sorted(model["discriminator"]["mapping"]) == registry.kinds()
    for kind in registry.kinds():
        assert registry.get_trainer(kind).kind == kind


def test_a_settings_model_that_is_not_strict_or_untagged_is_refused():
    from typing import Literal

    from pydantic import BaseModel

    from sluicegate.schema_base import StrictModel

    class Loose(BaseModel):
        kind: Literal["loose"]

    class Untagged(StrictModel):
        size: int = 1

    class Trainer:
        kind = "loose"

    with pytest.raises(TypeError, match="forbid unknown keys and be frozen"):
        registry.register_trainer(Trainer(), Loose)
    with pytest.raises(TypeError, match="kind: Literal"):
        registry.register_trainer(Trainer(), Untagged)
    assert "loose" not in registry.kinds()


def test_an_unknown_kind_names_the_closest_one():
    with pytest.raises(KeyError, match="did you mean 'xgboost'"):
        registry.get_trainer("xgbost")
