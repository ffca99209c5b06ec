"""`model.kind: torch`: the settings model and the trainer of the tabular MLP.

The estimator classes (and torch) live in `torch_mlp`, imported when a model is fitted: building
the config schema registers this kind without importing scikit-learn or torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from sluicegate.schema_base import StrictModel
from sluicegate.trainers.registry import check_range, register_trainer, unknown_param

# Convenience parameters for tuning: `hidden_layers` is a list, which Optuna cannot sample.
SHAPE_PARAMS = ("n_layers", "hidden_size")


class TorchModelConfig(StrictModel):
    """A tabular MLP in PyTorch, early-stopped on the validation split."""

    kind: Literal["torch"]
    hidden_layers: list[Annotated[int, Field(ge=1)]] = [64, 32]
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: float = Field(default=0.1, ge=0, lt=1)
    norm: Literal["none", "batch", "layer"] = "none"
    epochs: int = Field(default=50, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    scheduler: Literal["none", "cosine", "step", "plateau"] = "none"
    patience: int | None = Field(default=10, ge=1, description="epochs without improvement before stopping; null: never")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(default=2, ge=1, description="CPU threads for torch")


def resolve_spec(spec: Any, params: dict[str, Any] | None = None):
    """The torch model section with overrides applied (`n_layers`/`hidden_size` reshape `hidden_layers`)."""
    p = dict(params or {})
    n_layers, hidden = p.pop("n_layers", None), p.pop("hidden_size", None)
    data = {**spec.model_dump(), **p}
    if n_layers is not None or hidden is not None:
        layers = list(data["hidden_layers"])
        n = int(n_layers) if n_layers is not None else len(layers)
        width = int(hidden) if hidden is not None else (layers[0] if layers else 64)
        data["hidden_layers"] = [width] * n
    return TorchModelConfig.model_validate(data)


class TorchTrainer:
    kind = "torch"

    def tunable(self) -> list[str]:
        return sorted((set(TorchModelConfig.model_fields) - {"kind"}) | set(SHAPE_PARAMS))

    def check(self, spec: Any, task: str) -> list[tuple[tuple, str]]:
        return []  # the typed fields are checked by the schema

    def check_overrides(self, spec: Any, task: str, params: dict[str, Any]) -> list[tuple[tuple, str]]:
        from pydantic import ValidationError

        known = self.tunable()
        problems = [((k,), unknown_param(k, known, "the torch MLP")) for k in params if k not in known]
        for k in SHAPE_PARAMS:
            if k in params:
                msg = check_range(k, params[k], low=1, integer=True)
                if msg:
                    problems.append(((k,), msg))
        if problems:
            return problems
        try:
            resolve_spec(spec, params)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                name = err["loc"][0] if err["loc"] else ""
                problems.append(((name,) if name in params else (), f"{err['msg']} (got {err.get('input')!r})"))
        return problems

    def fit(self, spec, task, X_train, y_train, X_valid, y_valid, seed, params=None, report=None,
            checkpoint_dir=None):
        from sluicegate.trainers.torch_mlp import estimator_for  # sklearn and torch: at fit time only

        est = estimator_for(resolve_spec(spec, params), task, seed)
        return est.fit(X_train, y_train, X_valid, y_valid, report=report, checkpoint_dir=checkpoint_dir)

    def default_search_space(self, spec: Any, task: str) -> dict[str, Any]:
        return {
            "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
            "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.4},
            "hidden_size": {"type": "categorical", "choices": [32, 64, 128]},
            "n_layers": {"type": "int", "low": 1, "high": 3},
        }


register_trainer(TorchTrainer(), TorchModelConfig)
