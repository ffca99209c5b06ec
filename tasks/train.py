"""Task: fit the configured model kind; deterministic, so cached on its inputs."""

from __future__ import annotations

from typing import Any

from prefect import task

from sluicegate import training
from sluicegate.features import FeatureSet
from sluicegate.training import TrainResult
from tasks._common import content_cache, digest, settings


def _key(p: dict) -> str:
    return digest(p["features"], p["spec"], p["task_type"], p["seed"], p.get("params"))


@task(name="train-model", cache_key_fn=content_cache(_key), persist_result=True)
def train_model(features: FeatureSet, spec: Any, task_type: str, seed: int, project: str,
                    params: dict[str, Any] | None = None) -> TrainResult:
    """Train the candidate (features + estimator in one pipeline)."""
    out = settings().runs_dir / project / "models" / digest(features, spec, task_type, seed, params)
    result = training.train_model(features, spec, task_type, seed, out, params)
    print(f"trained {result.kind} in {result.fit_seconds:.2f}s")
    return result
