"""The model-kind registry: each trainer module registers its `kind`, its settings model and its trainer.

This is the one place model kinds are defined: the config schema builds the `model` union from
it, and training and tuning look trainers up in it. Importing this module imports the
`sluicegate.trainers` package first, whose `__init__` imports every trainer module.
"""

from __future__ import annotations

import contextlib
import contextvars
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from sluicegate.schema_base import did_you_mean

if TYPE_CHECKING:
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


@dataclass(frozen=True)
class ModelKind:
    """One registered model family: its `kind` tag, its YAML settings model, its trainer."""

    kind: str
    config: type[BaseModel]
    trainer: Trainer


_KINDS: dict[str, ModelKind] = {}
_MODEL_CHECKS = contextvars.ContextVar("sluice_model_checks", default=True)


@contextlib.contextmanager
def without_model_checks() -> typing.Iterator[None]:
    """Skip the trainers' own checks of model sections (`model.params` by the estimator's rules, which
    import scikit-learn or XGBoost: seconds) while loading a config.

    Only for a config that is then compared, by its run key, with one that passed them with the same
    code and libraries (`sluicegate.runkey`); anything else loads with every check.
    """
    token = _MODEL_CHECKS.set(False)
    try:
        yield
    finally:
        _MODEL_CHECKS.reset(token)


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
    """Problems in a model section, located under `model` (none inside `without_model_checks`).

    Checking `params` by the estimator's own rules imports its library (scikit-learn: ~1-2 s). A
    section that passed is remembered (`_PASSED`): the same section, task, library versions and
    trainer code pass again without the import. Problems are never remembered.
    """
    if not _MODEL_CHECKS.get():
        return []
    key = _check_key(spec, task)
    if key is not None and key in _passed_keys():
        return []
    problems = get_trainer(spec.kind).check(spec, task)
    if not problems and key is not None:
        _remember_pass(key)
    return problems


_PASSED = "model-checks-passed"  # under $SLUICE_HOME/cache: one key per line


def _check_key(spec: Any, task: str) -> str | None:
    """What a model check depends on: the section, the task, the model libraries' versions, the trainers' code."""
    import hashlib
    import json
    from importlib import metadata
    from pathlib import Path

    try:
        versions = {}
        for dist in ("scikit-learn", "xgboost", "torch"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = None
        code = hashlib.sha256()
        for path in sorted(Path(__file__).parent.glob("*.py")):
            code.update(path.read_bytes())
        blob = json.dumps([spec.model_dump(mode="json"), task, versions, code.hexdigest()], sort_keys=True, default=str)
    except Exception:  # never let the memo break a check: check the slow way
        return None
    return hashlib.sha256(blob.encode()).hexdigest()


def _memo_path():
    from sluicegate.settings import load_settings

    return load_settings().home / "cache" / _PASSED


def _passed_keys() -> set[str]:
    try:
        return set(_memo_path().read_text().split())
    except (OSError, ValueError):
        return set()


def _remember_pass(key: str) -> None:
    try:
        path = _memo_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:  # appends of one short line: concurrent writers do not interleave
            f.write(key + "\n")
    except OSError:
        pass  # a read-only home: the next check is slow, not wrong


def check_params(spec: Any, task: str, params: dict[str, Any]) -> list[tuple[tuple, str]]:
    """Problems with parameter overrides (the tuner's), each located by parameter name.

    A trainer may provide `check_overrides(spec, task, params)`; otherwise the overrides are
    merged into `spec.params` and the trainer's own `check` runs on the result.
    """
    if not _MODEL_CHECKS.get():
        return []
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


def check_range(name: str, value, low=None, high=None, low_open=False, high_open=False, integer=False):
    """A scikit-learn style message when `value` is outside the range, else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer and not float(value).is_integer():
        ok = False
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return None
    lo = "(" if (low_open or low is None) else "["
    hi = ")" if (high_open or high is None) else "]"
    kind = "an int" if integer else "a number"
    return (
        f"must be {kind} in the range {lo}{low if low is not None else '-inf'}, "
        f"{high if high is not None else 'inf'}{hi} (got {value!r})"
    )
