"""Tasks: when the champion's training data ends, and the seeded train/validation/test split of the snapshot."""

from __future__ import annotations

from prefect import task

from sluicegate import split
from sluicegate.config import SplitConfig
from sluicegate.data import LABELLED_UNTIL_TAG, DatasetRef
from sluicegate.split import SplitResult
from tasks._common import content_cache, digest, settings, tracker, transient_only


def _key(p: dict) -> str:
    return digest(p["dataset"].fingerprint, p["spec"], p["method"], p["target"], p["seed"], p["time_column"],
                  p["holdout_after"])


@task(name="holdout-cutoff", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=transient_only)
def holdout_cutoff(project: str) -> str | None:
    """When the champion's newest training label arrived: only production rows labelled later may be held out."""
    champ = tracker().champion(project)
    return (champ.tags.get(LABELLED_UNTIL_TAG) or None) if champ is not None else None


@task(name="split-data", cache_key_fn=content_cache(_key), persist_result=True)
def split_data(dataset: DatasetRef, spec: SplitConfig, method: str, target: str, seed: int, project: str,
               time_column: str | None = None, holdout_after: str | None = None) -> SplitResult:
    """Split into train, validation and the holdout every gate scores on."""
    key = digest(dataset.fingerprint, spec, method, target, seed, time_column, holdout_after)
    out = settings().runs_dir / project / "splits" / key
    result = split.split_data(dataset.path, spec, method, target, seed, out, time_column, holdout_after)
    print(f"split {method}: train {result.rows[0]}, valid {result.rows[1]}, test {result.rows[2]}; {result.holdout}")
    return result
