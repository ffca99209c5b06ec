"""XGBoost with early stopping on the validation split; CUDA when `device: auto` finds a GPU."""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import Field

from sluicegate.schema_base import StrictModel
from sluicegate.trainers.registry import check_range, register_trainer, unknown_param

# xgboost and scikit-learn are imported inside functions only (this module is xgboost's one
# importer): building the config schema loads every trainer module, and a project of another
# kind must not pay for it.

# Simple bounds xgboost itself only checks at fit time.
BOUNDS: dict[str, dict[str, Any]] = {
    "n_estimators": dict(low=1, integer=True),
    "max_depth": dict(low=0, integer=True),
    "learning_rate": dict(low=0, low_open=True),
    "subsample": dict(low=0, high=1, low_open=True),
    "colsample_bytree": dict(low=0, high=1, low_open=True),
    "min_child_weight": dict(low=0),
    "reg_alpha": dict(low=0),
    "reg_lambda": dict(low=0),
    "gamma": dict(low=0),
}


def resolve_device(device: str) -> str:
    if device == "auto":
        from sluicegate.trainers.torch_mlp import cuda_available  # the one CUDA probe (torch's owner)

        return "cuda" if cuda_available() else "cpu"
    return device


def _xgb():
    import xgboost

    return xgboost


def estimator_classes() -> tuple[type, type]:
    """(XGBClassifier, XGBRegressor), for converters that dispatch on the class (ONNX export)."""
    xgb = _xgb()
    return xgb.XGBClassifier, xgb.XGBRegressor


@functools.cache
def _report_rounds_class() -> type:
    """The xgboost callback class, defined on first use so that importing this module skips xgboost."""

    class _ReportRounds(_xgb().callback.TrainingCallback):
        """Passes each boosting round's validation score to the tuner (pruning)."""

        def __init__(self, report, metric: str):
            self.report = report
            self.metric = metric

        def after_iteration(self, model, epoch, evals_log):
            scores = evals_log.get("validation_0", {}).get(self.metric)
            if scores:
                self.report(epoch, float(scores[-1]))
            return False

    return _ReportRounds


class XGBoostModelConfig(StrictModel):
    """Gradient-boosted trees in XGBoost, early-stopped on the validation split."""

    kind: Literal["xgboost"]
    params: dict[str, Any] = {}
    early_stopping_rounds: int | None = Field(default=20, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class XGBoostTrainer:
    kind = "xgboost"

    def check(self, spec: Any, task: str) -> list[tuple[tuple, str]]:
        return self.check_params(task, spec.params, ("params",))

    def check_params(self, task: str, params: dict, loc: tuple) -> list[tuple[tuple, str]]:
        if not params:
            return []  # nothing to check: xgboost (seconds to import) is not needed
        xgb = _xgb()
        cls = xgb.XGBClassifier if task == "classification" else xgb.XGBRegressor
        known = sorted(set(cls().get_params()) | set(BOUNDS))
        problems = []
        for key, value in params.items():
            if key not in known:
                problems.append(((*loc, key), unknown_param(key, known, cls.__name__)))
            elif key in BOUNDS:
                msg = check_range(key, value, **BOUNDS[key])
                if msg:
                    problems.append(((*loc, key), msg))
        return problems

    def build(self, spec: Any, task: str, seed: int, params: dict | None = None, n_classes: int = 2):
        xgb = _xgb()
        merged = {"n_estimators": 300, "tree_method": "hist", "n_jobs": 2, **spec.params, **(params or {})}
        merged.setdefault("random_state", seed)
        merged["device"] = resolve_device(spec.device)
        if spec.early_stopping_rounds:
            merged.setdefault("early_stopping_rounds", spec.early_stopping_rounds)
        if task == "classification":
            merged.setdefault("eval_metric", "logloss" if n_classes <= 2 else "mlogloss")
            return xgb.XGBClassifier(**merged)
        merged.setdefault("eval_metric", "rmse")
        return xgb.XGBRegressor(**merged)

    def fit(self, spec, task, X_train, y_train, X_valid, y_valid, seed, params=None, report=None):
        import numpy as np

        n_classes = len(np.unique(y_train)) if task == "classification" else 0
        model = self.build(spec, task, seed, params, n_classes)
        if report is not None:
            model.set_params(callbacks=[_report_rounds_class()(report, model.get_params()["eval_metric"])])
        if task == "classification":
            from sluicegate.trainers.base import EncodedLabelClassifier

            wrapped = EncodedLabelClassifier(model)
            # eval_set labels must be encoded the same way as the training labels
            from sklearn.preprocessing import LabelEncoder

            enc = LabelEncoder().fit(y_train)
            wrapped.fit(X_train, y_train, eval_set=[(X_valid, enc.transform(y_valid))], verbose=False)
            wrapped.estimator_.set_params(callbacks=None)
            return wrapped
        model.fit(X_train, y_train, eval_set=[(X_valid, y_valid)], verbose=False)
        model.set_params(callbacks=None)
        return model

    def default_search_space(self, spec: Any, task: str) -> dict[str, Any]:
        return {
            "max_depth": {"type": "int", "low": 2, "high": 8},
            "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
            "subsample": {"type": "float", "low": 0.6, "high": 1.0},
            "min_child_weight": {"type": "float", "low": 0.5, "high": 10.0, "log": True},
        }


register_trainer(XGBoostTrainer(), XGBoostModelConfig)
