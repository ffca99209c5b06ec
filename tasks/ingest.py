"""Task: read the configured source and snapshot it under its content fingerprint."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from sluicegate.config import DataConfig
from sluicegate import data as core
from sluicegate.data import DatasetRef, source_key
from tasks._common import content_cache, digest, load_prefect_secret, settings, transient_only


def _key(p: dict) -> str | None:
    key = source_key(p["data"].source, Path(p["root"]))
    return None if key is None else digest(key, p["data"], p["project"])


@task(name="ingest-data", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=transient_only,
      cache_key_fn=content_cache(_key), persist_result=True)
def ingest_data(data: DataConfig, root: str, project: str) -> DatasetRef:
    """Read the data and keep a content-addressed Parquet snapshot of exactly these rows."""
    ref = core.ingest_data(data.source, Path(root), data.target, settings().data_store, project, load_prefect_secret)
    print(f"ingested {ref.rows} rows x {len(ref.columns)} columns, fingerprint {ref.fingerprint}")
    return ref
