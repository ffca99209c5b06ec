"""Ingest from CSV, Parquet (one file, a folder or a glob), SQL or a bundled dataset, plus labelled
production rows; fingerprint it and keep a snapshot."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from sluicegate.config import (
    BundledSource,
    CsvSource,
    DataSource,
    ParquetSource,
    ProductionConfig,
    SecretRef,
    SqlSource,
)
from sluicegate.config.sources import is_glob, relative_name, source_files, sql_params  # noqa: F401 (re-exported)
from sluicegate.errors import DataSourceError
from sluicegate.runkey import hash_file, source_key  # noqa: F401 (re-exported)

# Marker columns: where a snapshot row came from. Never features (features.select_columns skips
# the prefix), never validated, stripped from the split parts; the split reads them.
MARKER_PREFIX = "_sluice_"
ORIGIN = "_sluice_origin"  # "source" or "production"
PREDICTION_ID = "_sluice_prediction_id"  # production rows: the logged prediction's id
PREDICTED_AT = "_sluice_predicted_at"  # production rows: when the prediction was made (UTC)
LABELLED_AT = "_sluice_labelled_at"  # production rows: when its label arrived (UTC)
UNLOGGED = "_sluice_unlogged"  # production rows: the source columns the log lacks, comma-separated ("" none)
MARKER_COLUMNS = (ORIGIN, PREDICTION_ID, PREDICTED_AT, LABELLED_AT, UNLOGGED)
SOURCE, PRODUCTION = "source", "production"
# version tags: how many production rows a model trained on, and when the newest of their labels arrived
PRODUCTION_ROWS_TAG = "sluice.production_rows"
LABELLED_UNTIL_TAG = "sluice.labelled_until"


@dataclass(frozen=True)
class DatasetRef:
    """A content-addressed snapshot of exactly the rows a run used.

    `production_rows` of them are labelled production rows; `labelled_until` is when the newest
    of their labels arrived (ISO UTC), None without production rows.
    """

    path: str
    fingerprint: str
    rows: int
    columns: tuple[str, ...]
    production_rows: int = 0
    labelled_until: str | None = None


# looks up a named secret in a secret store (the tasks layer passes one for Prefect Secret blocks)
SecretLoader = Callable[[str], str]


def read_source(source: DataSource, root: Path, target: str | None = None,
                secrets: SecretLoader | None = None, now: float | None = None) -> pd.DataFrame:
    """Read the configured source into a DataFrame.

    Args:
        source: the `data.source` section.
        root: the project root relative paths resolve against.
        target: name given to the target column of a bundled dataset.
        secrets: loads a `{prefect_secret: NAME}` reference by name (see `resolve_secret`).
        now: the end of a SQL source's window, epoch seconds (default: now).

    Returns:
        The raw frame (a folder or glob: its files stacked in sorted order).

    Raises:
        DataSourceError: the file is missing or unreadable, partition files differ in columns,
            the query fails, or the URL is unset.
    """
    if isinstance(source, (CsvSource, ParquetSource)):
        return _read_files(source, source_files(source, root), root)
    if isinstance(source, SqlSource):
        return _read_sql(source, secrets, now)
    if isinstance(source, BundledSource):
        return load_bundled(source.name, target or "target")
    raise DataSourceError(f"data.source.kind: unsupported {source!r}")


def _read_files(source: CsvSource | ParquetSource, files: list[Path], root: Path) -> pd.DataFrame:
    """Read the files in order and stack them; every file must have the first file's columns."""
    frames = []
    for path in files:
        try:
            frame = pd.read_csv(path, sep=source.sep) if isinstance(source, CsvSource) else pd.read_parquet(path)
        except Exception as exc:  # pandas raises many types for unreadable files
            raise DataSourceError(f"data.source.path: cannot read {path}: {exc}") from exc
        if frames and list(frame.columns) != list(frames[0].columns):
            first, here = list(frames[0].columns), list(frame.columns)
            diff = sorted(set(first) ^ set(here)) or ["(same columns, another order)"]
            raise DataSourceError(
                f"data.source.path: {relative_name(path, root)} has other columns than {relative_name(files[0], root)} "
                f"(differing: {', '.join(map(str, diff[:10]))}); every partition file needs the same columns")
        frames.append(frame)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


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


def _read_sql(source: SqlSource, secrets: SecretLoader | None = None, now: float | None = None) -> pd.DataFrame:
    import sqlalchemy as sa

    params = sql_params(source, now)
    from sluicegate.settings import redact  # driver messages may echo the URL: mask its secrets

    url = resolve_secret(source.url, "data.source.url", secrets)
    try:
        engine = sa.create_engine(url)
    except Exception as exc:
        raise DataSourceError(f"data.source.url: not a usable SQLAlchemy URL: {redact(str(exc))}") from None
    try:
        with engine.connect() as conn:
            return pd.read_sql_query(sa.text(source.query), conn, params=params)
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
    production, until = 0, None
    if ORIGIN in frame.columns:
        is_prod = frame[ORIGIN] == PRODUCTION
        production = int(is_prod.sum())
        if production:
            until = pd.Timestamp(frame.loc[is_prod, LABELLED_AT].max()).isoformat()
    return DatasetRef(str(path), fp, len(frame), tuple(map(str, frame.columns)), production, until)


def read_production_rows(project: str, spec: ProductionConfig, columns: list[str], target: str,
                         home: Path | None = None, now: float | None = None) -> pd.DataFrame:
    """Labelled live predictions shaped like the source: its columns, then the marker columns.

    Args:
        project: project name (whose prediction log is read).
        spec: the `data.production` section: window, row limit, late labels.
        columns: the source's columns, in order; a column the log lacks is left empty, logged
            inputs the source lacks (and the prediction, probabilities) are dropped.
        target: the target column; it holds the label.
        home: SLUICE_HOME, where the prediction log lives.
        now: the end of the window, epoch seconds (default: now).

    Returns:
        At most `spec.max_rows` rows predicted within `spec.window_days`, oldest first, with
        `_sluice_origin` = production, the prediction id, and when it was predicted and labelled.
    """
    from sluicegate.serving.feedback import read_labelled_predictions

    now = time.time() if now is None else now
    since = now - spec.window_days * 86400 if spec.window_days is not None else None
    logged = read_labelled_predictions(project, home, since=since, last_n=spec.max_rows, traffic=("live",),
                                       include_late=spec.include_late)
    # the label column is named after the target the served model recorded (`<target>_label` when
    # the target was also sent as an input, `label` when no target was recorded)
    label = next((c for c in (f"{target}_label", target, "label") if c in logged.columns), None)
    if logged.empty or label is None:
        return pd.DataFrame(columns=[*columns, *MARKER_COLUMNS])
    out = pd.DataFrame(index=logged.index)
    unlogged = []
    for col in columns:
        if col == target:
            out[col] = logged[label]
        elif col in logged.columns:
            out[col] = logged[col]
        elif f"input_{col}" in logged.columns:  # a feature named like a log column (see read_prediction_log)
            out[col] = logged[f"input_{col}"]
        else:  # not a model input (an id, a name, a date the model does not use): nothing was logged
            out[col] = float("nan")
            unlogged.append(col)
    out[ORIGIN] = PRODUCTION
    out[PREDICTION_ID] = logged["prediction_id"].astype(str)
    out[PREDICTED_AT] = logged["ts"]
    out[LABELLED_AT] = logged["label_ts"]
    out[UNLOGGED] = ",".join(unlogged)
    return out.reset_index(drop=True)


def carried_rows(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """For each column some production rows lack (it is not logged), the rows that carry it.

    Validation judges such a column on those rows only: the empty cells of a column the
    prediction log never had are not missing data. Columns every row carries are not listed.
    """
    if UNLOGGED not in frame.columns:
        return {}
    lists = frame[UNLOGGED].fillna("").astype(str)
    names = {c for value in lists.unique() for c in value.split(",") if c}
    return {c: ~lists.str.split(",").apply(lambda cols, c=c: c in cols) for c in sorted(names)}


def combine_rows(source: pd.DataFrame, production: pd.DataFrame, spec: ProductionConfig) -> pd.DataFrame:
    """The source rows, then the newest production rows up to `spec.max_share` of the whole.

    Without production rows the source comes back as it is (no marker columns), so enabling
    production rows changes nothing until the first label arrives. Production values take the
    source column's dtype where they fit (a logged 3.0 is the source's int 3 again).
    """
    if production.empty:
        return source
    if spec.max_share < 1:
        limit = int(spec.max_share / (1 - spec.max_share) * len(source))
        production = production.sort_values(PREDICTED_AT, kind="stable").tail(limit)
    if production.empty:
        return source
    production = production.copy()
    for col in source.columns:
        if col in production.columns and production[col].dtype != source[col].dtype:
            try:
                production[col] = production[col].astype(source[col].dtype)
            except (TypeError, ValueError):
                if pd.api.types.is_integer_dtype(source[col]):  # an int column the log lacks: floats with NaN
                    production[col] = pd.to_numeric(production[col], errors="coerce").astype("float64")
                # else left as logged; validation reports a type the column must not have
    frame = source.assign(**{ORIGIN: SOURCE})
    return pd.concat([frame, production[[*source.columns, *MARKER_COLUMNS]]], ignore_index=True)


def ingest_data(source: DataSource, root: Path, target: str, store: Path, project: str,
                secrets: SecretLoader | None = None, *, production: ProductionConfig | None = None,
                log_home: Path | None = None, now: float | None = None) -> DatasetRef:
    """Read the source, add labelled production rows when enabled, and snapshot it (data versioning).

    Args:
        source: the `data.source` section.
        root: project root for relative paths.
        target: target column name.
        store: folder of snapshots.
        project: project name (snapshot subfolder, and whose prediction log is read).
        secrets: loads `{prefect_secret: NAME}` references (see `resolve_secret`).
        production: the `data.production` section; None or not enabled: the source only.
        log_home: SLUICE_HOME, where the prediction log lives.
        now: the end of the windows, epoch seconds (default: now).

    Returns:
        A `DatasetRef` to the content-addressed Parquet snapshot. Production rows are in it, so
        a new label changes its fingerprint.

    Raises:
        DataSourceError: when the source cannot be read.
    """
    frame = read_source(source, root, target, secrets, now)
    frame.columns = [str(c) for c in frame.columns]
    if production is not None and production.enabled:
        rows = read_production_rows(project, production, list(frame.columns), target, log_home, now)
        frame = combine_rows(frame, rows, production)
    return snapshot_frame(frame, store, project)


def dataset_tags(ref: DatasetRef) -> dict[str, str]:
    """Version tags saying which production rows a model trained on (none: no tags)."""
    if not ref.production_rows:
        return {}
    return {PRODUCTION_ROWS_TAG: str(ref.production_rows), LABELLED_UNTIL_TAG: ref.labelled_until or ""}


def strip_markers(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without the marker columns (the data as a model, a check or a drift test sees it)."""
    markers = [c for c in frame.columns if str(c).startswith(MARKER_PREFIX)]
    return frame.drop(columns=markers) if markers else frame


def load_snapshot(ref: DatasetRef | str, markers: bool = False) -> pd.DataFrame:
    """A snapshot's rows; the marker columns only when asked (validation reads it without them)."""
    frame = pd.read_parquet(ref.path if isinstance(ref, DatasetRef) else ref)
    return frame if markers else strip_markers(frame)


