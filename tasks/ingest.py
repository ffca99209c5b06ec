"""Task: read the configured source (and labelled production rows) and snapshot it under its content fingerprint."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from sluicegate import data as core
from sluicegate.config import DataConfig
from sluicegate.data import DatasetRef, source_key
from tasks._common import content_cache, digest, load_prefect_secret, settings, transient_only


def _key(p: dict) -> str | None:
    if p["data"].production.enabled:
        # labels arrive at any time and windows move: read them every run; the snapshot's
        # fingerprint (which covers them) keys every later step
        return None
    key = source_key(p["data"].source, Path(p["root"]))
    return None if key is None else digest(key, p["data"], p["project"])


@task(name="ingest-data", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=transient_only,
      cache_key_fn=content_cache(_key), persist_result=True)
def ingest_data(data: DataConfig, root: str, project: str) -> DatasetRef:
    """Read the data and keep a content-addressed Parquet snapshot of exactly these rows."""
    s = settings()
    ref = core.ingest_data(data.source, Path(root), data.target, s.data_store, project, load_prefect_secret,
                           production=data.production, log_home=s.home)
    extra = f" ({ref.production_rows} labelled production rows)" if data.production.enabled else ""
    print(f"ingested {ref.rows} rows x {len(ref.columns)} columns{extra}, fingerprint {ref.fingerprint}")
    return ref
