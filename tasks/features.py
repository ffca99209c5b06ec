"""Task: fit the feature transform on the training split and transform all splits."""

from __future__ import annotations

from prefect import task

from sluicegate import features
from sluicegate.config import FeaturesConfig
from sluicegate.features import FeatureSet
from sluicegate.split import SplitResult
from tasks._common import content_cache, digest, settings


def _key(p: dict) -> str:
    return digest(p["split"], p["spec"], p["target"], sorted(p["exclude"]))


@task(name="build-features", cache_key_fn=content_cache(_key), persist_result=True)
def build_features(split: SplitResult, spec: FeaturesConfig, target: str, exclude: list[str], project: str) -> FeatureSet:
    """Fit imputers, scalers and encoders on train only; they ship inside the model."""
    out = settings().runs_dir / project / "features" / digest(split, spec, target, sorted(exclude))
    fs = features.build_features(split.train_path, split.valid_path, split.test_path, spec, target, set(exclude), out)
    print(f"features: {fs.n_features} columns from {len(fs.columns.numeric)} numeric, "
          f"{len(fs.columns.categorical)} categorical, {len(fs.columns.datetime)} datetime")
    return fs
