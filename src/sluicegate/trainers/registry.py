"""The trainer registry keyed by `model.kind`; each trainer checks its config and fits a model."""

from __future__ import annotations

import difflib
from typing import Any, Protocol

import numpy as np


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


_TRAINERS: dict[str, Trainer] = {}
_BUILTIN_LOADED = False


def register_trainer(trainer: Trainer) -> Trainer:
    """Add a trainer under its `kind`; a later registration of the same kind replaces it."""
    _TRAINERS[trainer.kind] = trainer
    return trainer


def _load_builtin() -> None:
    # Not `if _TRAINERS`: importing one trainer module directly (sk for its ESTIMATORS, torch_mlp
    # for its estimator classes) registers that kind alone and would hide the others.
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    from sluicegate.trainers import sk, xgb  # noqa: F401  (register themselves)

    try:  # torch is optional at import time: a missing wheel only removes that kind
        from sluicegate.trainers import torch_mlp  # noqa: F401
    except ImportError:
        pass
    _BUILTIN_LOADED = True


def kinds() -> list[str]:
    """Registered model kinds."""
    _load_builtin()
    return sorted(_TRAINERS)


def get_trainer(kind: str) -> Trainer:
    """The trainer for `kind`.

    Raises:
        KeyError: with a did-you-mean when the kind is unknown.
    """
    _load_builtin()
    try:
        return _TRAINERS[kind]
    except KeyError:
        hint = difflib.get_close_matches(kind, list(_TRAINERS), n=1)
        raise KeyError(
            f"unknown model kind {kind!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
        ) from None


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
    hint = difflib.get_close_matches(name, known, n=1)
    msg = f"unknown parameter for {owner}"
    if hint:
        msg += f"; did you mean {hint[0]!r}?"
    return msg
