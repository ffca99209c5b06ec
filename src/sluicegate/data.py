"""Ingest from CSV, Parquet, SQL or a bundled dataset; fingerprint it and keep a snapshot."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from sluicegate.config import BundledSource, CsvSource, DataSource, ParquetSource, SecretRef, SqlSource
from sluicegate.errors import DataSourceError


@dataclass(frozen=True)
class DatasetRef:
    """A content-addressed snapshot of exactly the rows a run used."""

    path: str
    fingerprint: str
    rows: int
    columns: tuple[str, ...]


def source_key(source: DataSource, root: Path) -> str | None:
    """A cheap key that changes whenever the source's bytes change; None when unknowable (SQL).

    Files are hashed whole (far cheaper than parsing them), so an edited file never hits a
    cache entry of its old content even if its size and mtime were kept.
    """
    if isinstance(source, (CsvSource, ParquetSource)):
        path = _resolve(source.path, root)
        if not path.exists():
            return None
        return f"{source.kind}:{hash_file(path)}:{source.model_dump_json()}"
    if isinstance(source, BundledSource):
        import sklearn

        return f"bundled:{source.name}:sklearn-{sklearn.__version__}"
    return None


def hash_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# looks up a named secret in a secret store (the tasks layer passes one for Prefect Secret blocks)
SecretLoader = Callable[[str], str]


def read_source(source: DataSource, root: Path, target: str | None = None,
                secrets: SecretLoader | None = None) -> pd.DataFrame:
    """Read the configured source into a DataFrame.

    Args:
        source: the `data.source` section.
        root: the project root relative paths resolve against.
        target: name given to the target column of a bundled dataset.
        secrets: loads a `{prefect_secret: NAME}` reference by name (see `resolve_secret`).

    Returns:
        The raw frame.

    Raises:
        DataSourceError: the file is missing or unreadable, the query fails, or the URL is unset.
    """
    if isinstance(source, (CsvSource, ParquetSource)):
        path = _resolve(source.path, root)
        if not path.exists():
            raise DataSourceError(
                f"data.source.path: file not found: {path} (check the path; it is relative to {root})"
            )
        try:
            if isinstance(source, CsvSource):
                return pd.read_csv(path, sep=source.sep)
            return pd.read_parquet(path)
        except Exception as exc:  # pandas raises many types for unreadable files
            raise DataSourceError(f"data.source.path: cannot read {path}: {exc}") from exc
    if isinstance(source, SqlSource):
        return _read_sql(source, secrets)
    if isinstance(source, BundledSource):
        return load_bundled(source.name, target or "target")
    raise DataSourceError(f"data.source.kind: unsupported {source!r}")


def resolve_secret(ref: str | SecretRef, where: str, secrets: SecretLoader | None = None) -> str:
    """The value of a secret reference.

    Args:
        ref: a plain value, `{env: VAR}` or `{prefect_secret: NAME}`.
        where: the YAML path of the reference, for messages.
        secrets: loads a `prefect_secret` by name; the library imports no Prefect, so the
            tasks layer passes this (`tasks._common.load_prefect_secret`).

    Returns:
        The secret's value.

    Raises:
        DataSourceError: the variable is unset, no loader was given, or the loader failed.
    """
    if isinstance(ref, str):
        return ref
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise DataSourceError(f"{where}: environment variable {ref.env} is not set")
        return value
    if secrets is None:
        raise DataSourceError(f"{where}: a Prefect Secret reference ({ref.prefect_secret!r}) is resolved only "
                              f"inside a flow run; use {{env: VAR}} to run this step outside Prefect")
    try:
        return secrets(ref.prefect_secret)
    except Exception as exc:
        raise DataSourceError(f"{where}: cannot load Prefect Secret block {ref.prefect_secret!r}: {exc}") from exc


def _read_sql(source: SqlSource, secrets: SecretLoader | None = None) -> pd.DataFrame:
    import sqlalchemy as sa

    from sluicegate.settings import redact  # driver messages may echo the URL: mask its secrets

    url = resolve_secret(source.url, "data.source.url", secrets)
    try:
        engine = sa.create_engine(url)
    except Exception as exc:
        raise DataSourceError(f"data.source.url: not a usable SQLAlchemy URL: {redact(str(exc))}") from None
    try:
        with engine.connect() as conn:
            return pd.read_sql_query(sa.text(source.query), conn)
    except Exception as exc:
        raise DataSourceError(f"data.source.query: query failed: {redact(str(exc).splitlines()[0])}") from None
    finally:
        engine.dispose()


def load_bundled(name: str, target: str = "target") -> pd.DataFrame:
    """A dataset that ships inside an installed package (no download)."""
    from sklearn import datasets

    loaders = {
        "sklearn.breast_cancer": datasets.load_breast_cancer,
        "sklearn.diabetes": datasets.load_diabetes,
        "sklearn.wine": datasets.load_wine,
        "sklearn.iris": datasets.load_iris,
        "sklearn.digits": datasets.load_digits,
    }
    if name not in loaders:
        raise DataSourceError(f"data.source.name: unknown bundled dataset {name!r}")
    bunch = loaders[name](as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    if "target" in frame.columns and target != "target":
        frame = frame.rename(columns={"target": target})
    return frame


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """A content hash of the values, column names and dtypes (row order matters)."""
    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()[:20]


def snapshot_frame(frame: pd.DataFrame, store: Path, project: str) -> DatasetRef:
    """Write the frame once under its fingerprint; the same content is never written twice."""
    fp = fingerprint_frame(frame)
    folder = store / project
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{fp}.parquet"
    if not path.exists():
        tmp = path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return DatasetRef(str(path), fp, len(frame), tuple(map(str, frame.columns)))


def ingest_data(source: DataSource, root: Path, target: str, store: Path, project: str,
                secrets: SecretLoader | None = None) -> DatasetRef:
    """Read the source and snapshot it (data versioning).

    Args:
        source: the `data.source` section.
        root: project root for relative paths.
        target: target column name.
        store: folder of snapshots.
        project: project name (snapshot subfolder).
        secrets: loads `{prefect_secret: NAME}` references (see `resolve_secret`).

    Returns:
        A `DatasetRef` to the content-addressed Parquet snapshot.

    Raises:
        DataSourceError: when the source cannot be read.
    """
    frame = read_source(source, root, target, secrets)
    frame.columns = [str(c) for c in frame.columns]
    return snapshot_frame(frame, store, project)


def load_snapshot(ref: DatasetRef | str) -> pd.DataFrame:
    return pd.read_parquet(ref.path if isinstance(ref, DatasetRef) else ref)


def _resolve(value: str, root: Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (root / p)
