"""Train, evaluate and register steps: the full model is one scikit-learn pipeline (features + estimator)."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.pipeline import Pipeline

from sluicegate import __version__
from sluicegate.config import ProjectConfig, config_hash
from sluicegate.errors import TrainingError
from sluicegate.evaluation import EvaluationReport, compute_metrics, slice_metrics, slice_warnings
from sluicegate.features import FeatureSet, load_arrays, load_preprocessor
from sluicegate.outcome import TrainingOutcome, training_outcome  # noqa: F401 (re-exported)
from sluicegate.trainers.registry import get_trainer

log = logging.getLogger(__name__)

# Config sections that change what model comes out; gates and deploy settings do not.
MODEL_SECTIONS = ("task", "seed", "data", "features", "split", "model")


@dataclass(frozen=True)
class TrainResult:
    """A fitted full pipeline on disk and what produced it."""

    model_path: str
    kind: str
    params: dict[str, Any]
    n_features: int
    fit_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChampionScore:
    """The champion re-scored on the candidate's holdout (or why it could not be)."""

    version: str | None
    metrics: dict[str, float] | None
    error: str | None = None


def candidate_key(cfg: ProjectConfig, data_fingerprint: str, extra_sections: tuple[str, ...] = ()) -> str:
    """Identity of a candidate: same data, same model-relevant config, same code version."""
    blob = json.dumps(
        {"data": data_fingerprint, "config": config_hash(cfg, *MODEL_SECTIONS, *extra_sections), "code": __version__},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def train_model(
    features: FeatureSet, spec: Any, task: str, seed: int, out_dir: Path, params: dict[str, Any] | None = None
) -> TrainResult:
    """Fit the configured model kind on the transformed training split.

    Args:
        features: the fitted transform and transformed splits.
        spec: the `model` section.
        task: classification or regression.
        seed: the project seed; the same seed gives the same model.
        out_dir: where the full pipeline is written.
        params: parameters that override `spec.params` (the tuner's best).

    Returns:
        A `TrainResult` pointing at the saved full pipeline.

    Raises:
        TrainingError: the trainer failed.
    """
    arrays = load_arrays(features.arrays_path)
    trainer = get_trainer(spec.kind)
    extra: dict[str, Any] = {}
    if "checkpoint_dir" in inspect.signature(trainer.fit).parameters:
        # out_dir is keyed on the inputs, so a killed run finds its checkpoints and resumes
        extra["checkpoint_dir"] = out_dir / "checkpoints"
    started = time.perf_counter()
    try:
        estimator = trainer.fit(
            spec, task, arrays["X_train"], arrays["y_train"], arrays["X_valid"], arrays["y_valid"], seed, params,
            **extra,
        )
    except Exception as exc:
        raise TrainingError(f"model ({spec.kind}): training failed: {type(exc).__name__}: {exc}") from exc
    fit_seconds = time.perf_counter() - started
    model = Pipeline([("features", load_preprocessor(features.preprocessor_path)), ("model", estimator)])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.joblib"
    joblib.dump(model, path)
    # families configured by typed fields (torch) have no `params`: log those fields instead
    base = spec.params if hasattr(spec, "params") else spec.model_dump(mode="json", exclude={"kind"})
    merged = {**base, **(params or {})}
    log.info("trained %s on %d rows x %d features in %.2fs", spec.kind, len(arrays["y_train"]), features.n_features, fit_seconds)
    return TrainResult(str(path), spec.kind, merged, features.n_features, fit_seconds)


def load_model_file(path: str) -> Any:
    return joblib.load(path)


def evaluate_model(
    model: Any, task: str, target: str, train_path: str, valid_path: str, test_path: str,
    slices: list[str], min_slice_rows: int, holdout: str = "",
) -> EvaluationReport:
    """Metrics of a full pipeline on the raw train, validation and holdout splits, and per slice.

    `holdout` describes the test split in words (`SplitResult.holdout`); the gates quote it.
    """
    frames = {n: pd.read_parquet(p) for n, p in (("train", train_path), ("valid", valid_path), ("test", test_path))}
    scores = {n: compute_metrics(task, model, f, f[target].to_numpy()) for n, f in frames.items()}
    per_slice = slice_metrics(task, model, frames["test"], target, slices, min_slice_rows) if slices else {}
    skipped = tuple(slice_warnings(frames["test"], slices, min_slice_rows)) if slices else ()
    return EvaluationReport(scores["train"], scores["valid"], scores["test"], per_slice, len(frames["test"]), holdout,
                            skipped)


def score_champion(champion_model: Any, version: str, task: str, target: str, test_path: str) -> ChampionScore:
    """Score the champion on the candidate's holdout so both are compared on the same rows.

    A champion that cannot score this holdout (its expected columns changed) yields an error,
    which the gates treat as a failed comparison: nothing is promoted automatically.
    """
    frame = pd.read_parquet(test_path)
    try:
        return ChampionScore(version, compute_metrics(task, champion_model, frame, frame[target].to_numpy()))
    except Exception as exc:
        return ChampionScore(version, None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
