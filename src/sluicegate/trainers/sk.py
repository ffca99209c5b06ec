"""scikit-learn estimators by short name (`model.estimator`), classification and regression."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Literal

from sluicegate.schema_base import StrictModel, unknown_choice
from sluicegate.trainers.registry import register_trainer, unknown_param

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

# short name -> task -> "sklearn module.Class", imported when a project of that estimator is
# checked or fitted: building the config schema (`sluice config check`) imports no scikit-learn
ESTIMATORS: dict[str, dict[str, str]] = {
    "logistic_regression": {"classification": "linear_model.LogisticRegression"},
    "ridge": {"regression": "linear_model.Ridge", "classification": "linear_model.RidgeClassifier"},
    "linear_regression": {"regression": "linear_model.LinearRegression"},
    "elastic_net": {"regression": "linear_model.ElasticNet"},
    "random_forest": {
        "classification": "ensemble.RandomForestClassifier",
        "regression": "ensemble.RandomForestRegressor",
    },
    "extra_trees": {
        "classification": "ensemble.ExtraTreesClassifier",
        "regression": "ensemble.ExtraTreesRegressor",
    },
    "gradient_boosting": {
        "classification": "ensemble.GradientBoostingClassifier",
        "regression": "ensemble.GradientBoostingRegressor",
    },
    "hist_gradient_boosting": {
        "classification": "ensemble.HistGradientBoostingClassifier",
        "regression": "ensemble.HistGradientBoostingRegressor",
    },
    "knn": {
        "classification": "neighbors.KNeighborsClassifier",
        "regression": "neighbors.KNeighborsRegressor",
    },
}


class SklearnModelConfig(StrictModel):
    """A scikit-learn estimator by short name, with its parameters checked by the estimator's own rules."""

    kind: Literal["sklearn"]
    estimator: str
    params: dict[str, Any] = {}


class SklearnTrainer:
    kind = "sklearn"

    def label(self, spec: Any) -> str:
        return f"sklearn:{spec.estimator}"

    def estimator_class(self, name: str, task: str) -> type[BaseEstimator]:
        module, cls = ESTIMATORS[name][task].rsplit(".", 1)
        return getattr(importlib.import_module(f"sklearn.{module}"), cls)

    def check(self, spec: Any, task: str) -> list[tuple[tuple, str]]:
        if spec.estimator not in ESTIMATORS:
            return [(("estimator",), unknown_choice(spec.estimator, ESTIMATORS, "estimator"))]
        if task not in ESTIMATORS[spec.estimator]:
            fits = [n for n, t in ESTIMATORS.items() if task in t]
            return [(("estimator",), f"{spec.estimator!r} does not do {task} (use one of: {', '.join(fits)})")]
        return self.check_params(spec.estimator, task, spec.params, ("params",))

    def check_params(self, name: str, task: str, params: dict, loc: tuple) -> list[tuple[tuple, str]]:
        if not params:
            return []  # nothing to check: scikit-learn (seconds to import) is not needed
        cls = self.estimator_class(name, task)
        known = sorted(cls().get_params())
        problems = []
        for key in params:
            if key not in known:
                problems.append(((*loc, key), unknown_param(key, known, cls.__name__)))
        if problems:
            return problems
        from sklearn.utils._param_validation import InvalidParameterError

        try:
            cls(**params)._validate_params()
        except InvalidParameterError as exc:
            bad = next((k for k in params if f"'{k}'" in str(exc)), None)
            return [((*loc, bad) if bad else loc, str(exc))]
        return []

    def build(self, spec: Any, task: str, seed: int, params: dict | None = None) -> BaseEstimator:
        cls = self.estimator_class(spec.estimator, task)
        merged = {**spec.params, **(params or {})}
        if "random_state" in cls().get_params() and "random_state" not in merged:
            merged["random_state"] = seed
        return cls(**merged)

    def fit(self, spec, task, X_train, y_train, X_valid, y_valid, seed, params=None, report=None):
        return self.build(spec, task, seed, params).fit(X_train, y_train)

    def default_search_space(self, spec: Any, task: str) -> dict[str, Any]:
        spaces = {
            "logistic_regression": {"C": {"type": "float", "low": 1e-3, "high": 100.0, "log": True}},
            "ridge": {"alpha": {"type": "float", "low": 1e-3, "high": 100.0, "log": True}},
            "elastic_net": {"alpha": {"type": "float", "low": 1e-4, "high": 10.0, "log": True},
                            "l1_ratio": {"type": "float", "low": 0.0, "high": 1.0}},
            "random_forest": {"n_estimators": {"type": "int", "low": 50, "high": 300, "step": 50},
                              "max_depth": {"type": "int", "low": 2, "high": 16}},
        }
        return spaces.get(spec.estimator, {})


register_trainer(SklearnTrainer(), SklearnModelConfig)
