"""The model-kind registry: each trainer module registers its `kind`, its settings model and its trainer.

This is the one place model kinds are defined: the config schema builds the `model` union from
it, and training and tuning look trainers up in it. Importing this module imports the
`sluicegate.trainers` package first, whose `__init__` imports every trainer module.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel

from sluicegate.schema_base import did_you_mean


class Trainer(Protocol):
    """What every model family provides; the conformance tests run over all of them."""

    kind: str

    def check(self, spec: Any, task: str) -> list[tuple[tuple, str]]:
        """Problems with the model section, as (yaml path under `model`, message)."""

    def fit(
        self,
        spec: Any,
        task: str,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_valid: np.ndarray,
        y_valid: np.ndarray,
        seed: int,
        params: dict[str, Any] | None = None,
        report: Any = None,
    ) -> Any:
        """Fit and return a scikit-learn compatible estimator on already-transformed features.

        `params` overrides `spec.params` (tuning); `report(step, value)` receives a
        validation loss (lower is better) per boosting round or epoch where the family
        supports it, and may raise to stop the fit (pruning).
        """

    def default_search_space(self, spec: Any, task: str) -> dict[str, Any]:
        """A reasonable search space when the config gives none."""


@dataclass(frozen=True)
class ModelKind:
    """One registered model family: its `kind` tag, its YAML settings model, its trainer."""

    kind: str
    config: type[BaseModel]
    trainer: Trainer


_KINDS: dict[str, ModelKind] = {}


def register_trainer(trainer: Trainer, config: type[BaseModel]) -> Trainer:
    """Add a model kind: `config` is its `model:` section, tagged by `kind: <trainer.kind>`.

    A later registration of the same kind replaces it.

    Raises:
        TypeError: when `config` is not frozen, allows unknown keys, or lacks the `kind` tag.
    """
    field = config.model_fields.get("kind")
    if field is None or typing.get_args(field.annotation) != (trainer.kind,) or typing.get_origin(field.annotation) is not Literal:
        raise TypeError(f"{config.__name__} needs a field `kind: Literal[{trainer.kind!r}]`")
    if config.model_config.get("extra") != "forbid" or not config.model_config.get("frozen"):
        raise TypeError(f"{config.__name__} must forbid unknown keys and be frozen (derive from StrictModel)")
    _KINDS[trainer.kind] = ModelKind(trainer.kind, config, trainer)
    return trainer


def kinds() -> list[str]:
    """Registered model kinds."""
    return sorted(_KINDS)


def config_models() -> tuple[type[BaseModel], ...]:
    """The settings model of every registered kind, ordered by kind."""
    return tuple(_KINDS[k].config for k in kinds())


def get_trainer(kind: str) -> Trainer:
    """The trainer for `kind`.

    Raises:
        KeyError: with a did-you-mean when the kind is unknown.
    """
    try:
        return _KINDS[kind].trainer
    except KeyError:
        hint = did_you_mean(kind, _KINDS)
        raise KeyError(f"unknown model kind {kind!r}" + (f"; did you mean {hint!r}?" if hint else "")) from None


def label(spec: Any) -> str:
    """A readable default name for a model section: `xgboost`, `sklearn:ridge` (a trainer may say)."""
    own = getattr(get_trainer(spec.kind), "label", None)
    return own(spec) if own is not None else spec.kind


def check_model_config(spec: Any, task: str) -> list[tuple[tuple, str]]:
    """Problems in a model section, located under `model`."""
    return get_trainer(spec.kind).check(spec, task)


def check_params(spec: Any, task: str, params: dict[str, Any]) -> list[tuple[tuple, str]]:
    """Problems with parameter overrides (the tuner's), each located by parameter name.

    A trainer may provide `check_overrides(spec, task, params)`; otherwise the overrides are
    merged into `spec.params` and the trainer's own `check` runs on the result.
    """
    trainer = get_trainer(spec.kind)
    own = getattr(trainer, "check_overrides", None)
    if own is not None:
        return own(spec, task, params)
    merged = spec.model_copy(update={"params": {**getattr(spec, "params", {}), **params}})
    out = []
    for loc, msg in trainer.check(merged, task):
        if loc[:1] == ("params",) and len(loc) > 1 and loc[1] in params:
            out.append((loc[1:], msg))
        elif loc == ("params",):
            out.append(((), msg))
    return out


def unknown_param(name: str, known: list[str], owner: str) -> str:
    hint = did_you_mean(name, known)
    msg = f"unknown parameter for {owner}"
    if hint:
        msg += f"; did you mean {hint!r}?"
    return msg
