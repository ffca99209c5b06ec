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
        validation score per boosting round or epoch where the family supports it.
        """

    def default_search_space(self, spec: Any, task: str) -> dict[str, Any]:
        """A reasonable search space when the config gives none."""


_TRAINERS: dict[str, Trainer] = {}


def register_trainer(trainer: Trainer) -> Trainer:
    """Add a trainer under its `kind`; a later registration of the same kind replaces it."""
    _TRAINERS[trainer.kind] = trainer
    return trainer


def _load_builtin() -> None:
    if _TRAINERS:
        return
    from sluicegate.trainers import sk, xgb  # noqa: F401  (register themselves)

    try:  # torch is optional at import time: a missing wheel only removes that kind
        from sluicegate.trainers import torch_mlp  # noqa: F401
    except ImportError:
        pass


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


def unknown_param(name: str, known: list[str], owner: str) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    msg = f"unknown parameter for {owner}"
    if hint:
        msg += f"; did you mean {hint[0]!r}?"
    return msg
