"""Ingest steps on tiny files: CSV, Parquet, SQL and bundled sources, fingerprints, snapshots, secrets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from sluicegate.config import BundledSource, CsvSource, ParquetSource, SqlSource
from sluicegate.data import fingerprint_frame, ingest_data, read_source, snapshot_frame, source_key
from sluicegate.errors import DataSourceError
from tests.helpers import churn_frame


def test_csv_parquet_and_sql_give_the_same_frame(tmp_path):
    frame = churn_frame(200)
    frame.to_csv(tmp_path / "c.csv", index=False)
    frame.to_parquet(tmp_path / "c.parquet", index=False)
    with sqlite3.connect(tmp_path / "c.db") as conn:
        frame.to_sql("customers", conn, index=False)
    csv = read_source(CsvSource(kind="csv", path="c.csv"), tmp_path)
    pq = read_source(ParquetSource(kind="parquet", path="c.parquet"), tmp_path)
    sql = read_source(SqlSource(kind="sql", url=f"sqlite:///{tmp_path / 'c.db'}", query="SELECT * FROM customers"), tmp_path)
    pd.testing.assert_frame_equal(csv, pq)
    pd.testing.assert_frame_equal(csv.reset_index(drop=True), sql, check_dtype=False)


def test_sql_url_from_env_reference(tmp_path, monkeypatch):
    with sqlite3.connect(tmp_path / "c.db") as conn:
        churn_frame(50).to_sql("t", conn, index=False)
    monkeypatch.setenv("TEST_DB_URL", f"sqlite:///{tmp_path / 'c.db'}")
    src = SqlSource(kind="sql", url={"env": "TEST_DB_URL"}, query="SELECT * FROM t")
    assert len(read_source(src, tmp_path)) == 50
    monkeypatch.delenv("TEST_DB_URL")
    with pytest.raises(DataSourceError, match="TEST_DB_URL is not set"):
        read_source(src, tmp_path)


def test_bad_sql_query_is_a_data_source_error(tmp_path):
    src = SqlSource(kind="sql", url=f"sqlite:///{tmp_path / 'x.db'}", query="SELECT * FROM missing_table")
    with pytest.raises(DataSourceError, match="data.source.query"):
        read_source(src, tmp_path)


def test_missing_file_names_the_key(tmp_path):
    with pytest.raises(DataSourceError, match="data.source.path: file not found"):
        read_source(CsvSource(kind="csv", path="nope.csv"), tmp_path)


def test_bundled_dataset_loads_without_download(tmp_path):
    frame = read_source(BundledSource(kind="bundled", name="sklearn.breast_cancer"), tmp_path, target="malignant")
    assert frame.shape == (569, 31) and "malignant" in frame.columns and "mean_radius" in frame.columns


def test_fingerprint_is_content_addressed(tmp_path):
    a = churn_frame(100)
    b = a.copy()
    b.loc[3, "tenure"] += 1
    assert fingerprint_frame(a) == fingerprint_frame(a.copy())
    assert fingerprint_frame(a) != fingerprint_frame(b)
    r1 = snapshot_frame(a, tmp_path, "p")
    r2 = snapshot_frame(a.copy(), tmp_path, "p")
    assert r1.path == r2.path and Path(r1.path).exists()
    pd.testing.assert_frame_equal(pd.read_parquet(r1.path), a)


def test_source_key_changes_when_file_bytes_change(tmp_path):
    churn_frame(50).to_csv(tmp_path / "c.csv", index=False)
    src = CsvSource(kind="csv", path="c.csv")
    k1 = source_key(src, tmp_path)
    churn_frame(50, seed=1).to_csv(tmp_path / "c.csv", index=False)
    assert source_key(src, tmp_path) != k1
    assert source_key(SqlSource(kind="sql", url="sqlite://", query="select 1"), tmp_path) is None


def test_ingest_writes_snapshot(tmp_path):
    churn_frame(80).to_csv(tmp_path / "c.csv", index=False)
    ref = ingest_data(CsvSource(kind="csv", path="c.csv"), tmp_path, "churned", tmp_path / "store", "churn")
    assert ref.rows == 80 and Path(ref.path).parent == tmp_path / "store" / "churn"


def test_prefect_secret_reference_needs_the_loader_the_tasks_layer_passes(tmp_path):
    with sqlite3.connect(tmp_path / "c.db") as conn:
        churn_frame(30).to_sql("t", conn, index=False)
    src = SqlSource(kind="sql", url={"prefect_secret": "churn-db"}, query="SELECT * FROM t")
    with pytest.raises(DataSourceError, match="resolved only inside a flow run"):
        read_source(src, tmp_path)
    urls = {"churn-db": f"sqlite:///{tmp_path / 'c.db'}"}
    assert len(read_source(src, tmp_path, secrets=urls.__getitem__)) == 30
    with pytest.raises(DataSourceError, match="cannot load Prefect Secret block 'churn-db'"):
        read_source(src, tmp_path, secrets={}.__getitem__)
