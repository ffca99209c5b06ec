"""Task: seeded train/validation/test split of the snapshot."""

from __future__ import annotations

from prefect import task

from sluicegate.config import SplitConfig
from sluicegate.data import DatasetRef
from sluicegate import split
from sluicegate.split import SplitResult
from tasks._common import content_cache, digest, settings


def _key(p: dict) -> str:
    return digest(p["dataset"].fingerprint, p["spec"], p["method"], p["target"], p["seed"], p["time_column"])


@task(name="split-data", cache_key_fn=content_cache(_key), persist_result=True)
def split_data(dataset: DatasetRef, spec: SplitConfig, method: str, target: str, seed: int, project: str,
               time_column: str | None = None) -> SplitResult:
    """Split into train, validation and the holdout every gate scores on."""
    key = digest(dataset.fingerprint, spec, method, target, seed, time_column)
    out = settings().runs_dir / project / "splits" / key
    result = split.split_data(dataset.path, spec, method, target, seed, out, time_column)
    print(f"split {method}: train {result.rows[0]}, valid {result.rows[1]}, test {result.rows[2]}")
    return result
