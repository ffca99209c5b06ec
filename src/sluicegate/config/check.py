"""Cheap checks of a loaded config against its data: the source file exists and has every named column.

Only the header is read (a CSV's first line, a Parquet file's schema), so `sluice config
check` stays fast on large files. SQL sources are contacted only when asked (`--connect`),
and then return no rows; bundled datasets need no check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from sluicegate.config.loader import resolve_path
from sluicegate.config.schema import CsvSource, ParquetSource, ProjectConfig, SqlSource
from sluicegate.config.sources import is_glob, source_files, sql_params
from sluicegate.errors import ConfigError, DataSourceError
from sluicegate.schema_base import did_you_mean
from sluicegate.settings import redact


def check_sources(cfg: ProjectConfig, connect: bool = False) -> list[str]:
    """Problems between the config and its data source, one `yaml.path: problem` line each.

    Args:
        cfg: a validated config (from `load_config`).
        connect: also connect to a SQL source and read the column names of its query.

    Returns:
        The problems; empty when there is nothing to check or everything named is in the header.
    """
    source = cfg.data.source
    if isinstance(source, SqlSource) and connect:
        where = "the result of data.source.query"
        try:
            header = read_sql_header(source)
        except ConfigError as exc:
            return exc.problems
    elif isinstance(source, (CsvSource, ParquetSource)):
        where = source.path
        path = resolve_path(cfg, source.path)
        try:
            files = source_files(source, cfg.root)
        except DataSourceError as exc:
            if path.exists() or is_glob(source.path):
                return [str(exc)]
            return [f"data.source.path: file not found: {source.path} (looked for {path}; "
                    f"paths are relative to the project root {cfg.root})"]
        try:
            header = read_header(source, files[0])  # the read itself checks every file has these columns
        except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
            return [f"data.source.path: cannot read the header of {files[0]}: {exc}"]
    else:
        return []
    problems = []
    for loc, column in named_columns(cfg):
        if column not in header:
            hint = did_you_mean(column, header)
            problems.append(f"{loc}: column {column!r} not in {where}"
                            + (f"; did you mean {hint!r}?" if hint else f" (columns: {_preview(header)})"))
    return problems


def read_header(source: CsvSource | ParquetSource, path: Path) -> list[str]:
    """The column names of a CSV (its first line) or a Parquet file (its schema), without reading rows."""
    if isinstance(source, CsvSource):
        import pandas as pd

        return [str(c) for c in pd.read_csv(path, sep=source.sep, nrows=0).columns]
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def read_sql_header(source: SqlSource) -> list[str]:
    """The column names of the source's query, run wrapped in `WHERE 1 = 0` so no row comes back.

    Raises:
        ConfigError: naming `data.source.url` or `data.source.query`.
    """
    import sqlalchemy as sa

    url = source.url
    if not isinstance(url, str):
        if url.env is None:  # the config package never imports Prefect; the flow resolves the block
            raise ConfigError(["data.source.url: --connect reads {env: VAR} references only, not a Prefect Secret block"])
        url = os.environ.get(url.env, "")
        if not url:
            raise ConfigError([f"data.source.url: environment variable {source.url.env} is not set"])
    try:
        engine = sa.create_engine(url)
    except Exception as exc:
        raise ConfigError([f"data.source.url: not a usable SQLAlchemy URL: {redact(str(exc))}"]) from None
    query = source.query.strip().rstrip(";")
    try:
        with engine.connect() as conn:
            return [str(c) for c in conn.execute(sa.text(f"SELECT * FROM ({query}) AS sluice_check WHERE 1 = 0"),
                                                 sql_params(source)).keys()]
    except Exception as exc:  # drivers raise their own types
        raise ConfigError([f"data.source.query: cannot run it: {redact(str(exc).splitlines()[0])}"]) from None
    finally:
        engine.dispose()


def named_columns(cfg: ProjectConfig) -> Iterator[tuple[str, str]]:
    """(yaml path, column) for every column the config names in the raw data."""
    yield "data.target", cfg.data.target
    for key in ("id_column", "time_column"):
        if getattr(cfg.data, key):
            yield f"data.{key}", getattr(cfg.data, key)
    if cfg.split.time_column:
        yield "split.time_column", cfg.split.time_column
    for name in cfg.validation.columns:
        yield f"validation.columns.{name}", name
    for group in ("numeric", "categorical", "datetime"):
        columns = getattr(cfg.features, group).columns
        if columns != "auto":
            yield from ((f"features.{group}.columns.{i}", c) for i, c in enumerate(columns))
    yield from ((f"features.drop.{i}", c) for i, c in enumerate(cfg.features.drop))
    yield from ((f"evaluation.slices.{i}", c) for i, c in enumerate(cfg.evaluation.slices))
    if cfg.monitoring.columns != "auto":
        yield from ((f"monitoring.columns.{i}", c) for i, c in enumerate(cfg.monitoring.columns))


def _preview(header: list[str], limit: int = 12) -> str:
    shown = ", ".join(header[:limit])
    return shown + (f", ... ({len(header)} in all)" if len(header) > limit else "")
