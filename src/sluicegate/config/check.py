"""Cheap checks of a loaded config against its data: the source file exists and has every named column.

Only the header is read (a CSV's first line, a Parquet file's schema), so `sluice config
check` stays fast on large files. SQL sources are not contacted; bundled datasets need no check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from sluicegate.config.loader import resolve_path
from sluicegate.config.schema import CsvSource, ParquetSource, ProjectConfig
from sluicegate.schema_base import did_you_mean


def check_sources(cfg: ProjectConfig) -> list[str]:
    """Problems between the config and its file source, one `yaml.path: problem` line each.

    Args:
        cfg: a validated config (from `load_config`).

    Returns:
        The problems; empty when the source is not a file or everything named is in its header.
    """
    source = cfg.data.source
    if not isinstance(source, (CsvSource, ParquetSource)):
        return []
    path = resolve_path(cfg, source.path)
    if not path.is_file():
        return [f"data.source.path: file not found: {source.path} (looked for {path}; "
                f"paths are relative to the project root {cfg.root})"]
    try:
        header = read_header(source, path)
    except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
        return [f"data.source.path: cannot read the header of {source.path}: {exc}"]
    problems = []
    for loc, column in named_columns(cfg):
        if column not in header:
            hint = did_you_mean(column, header)
            problems.append(f"{loc}: column {column!r} not in {source.path}"
                            + (f"; did you mean {hint!r}?" if hint else f" (columns: {_preview(header)})"))
    return problems


def read_header(source: CsvSource | ParquetSource, path: Path) -> list[str]:
    """The column names of a CSV (its first line) or a Parquet file (its schema), without reading rows."""
    if isinstance(source, CsvSource):
        import pandas as pd

        return [str(c) for c in pd.read_csv(path, sep=source.sep, nrows=0).columns]
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


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
