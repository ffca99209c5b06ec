"""What a source section names: the files of a CSV/Parquet source (one file, a folder, a glob) and
the values bound to a SQL source's parameters."""

from __future__ import annotations

import glob
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sluicegate.config.schema import CsvSource, ParquetSource, SqlSource
from sluicegate.errors import DataSourceError

FILE_SUFFIXES = {"csv": (".csv", ".csv.gz", ".tsv"), "parquet": (".parquet", ".pq")}


def is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def source_files(source: CsvSource | ParquetSource, root: Path) -> list[Path]:
    """The files a CSV or Parquet source names, in the order they are read.

    `path` is one file; a folder (every file of the source's kind below it, hidden and `_`-prefixed
    files such as `_SUCCESS` skipped); or a glob (`data/events/*.csv`, `**` for subfolders).
    Folders and globs are read in sorted order of their paths, so date-named partitions
    (`2026-11-30.csv`, `day=2026-11-30/part-0.parquet`) come oldest first.

    Raises:
        DataSourceError: the file or folder does not exist, or nothing matches.
    """
    path = resolve_under(source.path, root)
    suffixes = FILE_SUFFIXES[source.kind]
    if is_glob(source.path):
        files = [Path(p) for p in glob.glob(str(path), recursive=True)]
        files = sorted((p for p in files if p.is_file()), key=lambda p: p.as_posix())
        if not files:
            raise DataSourceError(f"data.source.path: no files match {source.path!r} "
                                  f"(the pattern is relative to {root})")
        return files
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes)
                        and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)),
                       key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise DataSourceError(f"data.source.path: the folder {source.path} holds no {' or '.join(suffixes)} "
                                  f"files (kind is {source.kind})")
        return files
    if not path.exists():
        raise DataSourceError(
            f"data.source.path: file not found: {path} (check the path; it is relative to {root})"
        )
    return [path]


def sql_params(source: SqlSource, now: float | None = None) -> dict[str, Any]:
    """The values bound to the query's parameters, window placeholders replaced.

    `'{window_start}'`/`'{window_end}'` become naive UTC datetimes (the window is the last
    `window_days` days before `now`), `'{window_start_epoch}'`/`'{window_end_epoch}'` epoch
    seconds. Every value is bound by the driver, never formatted into the SQL text.
    """
    now = time.time() if now is None else now
    start = now - source.window_days * 86400 if source.window_days is not None else None
    values: dict[str, Any] = {}
    if start is not None:
        values = {
            "window_start": datetime.fromtimestamp(start, tz=timezone.utc).replace(tzinfo=None),
            "window_end": datetime.fromtimestamp(now, tz=timezone.utc).replace(tzinfo=None),
            "window_start_epoch": float(start),
            "window_end_epoch": float(now),
        }
    out: dict[str, Any] = {}
    for name, value in source.params.items():
        placeholder = _placeholder(value)
        if placeholder is None:
            out[name] = value
        elif placeholder in values:
            out[name] = values[placeholder]
        else:  # the config check refuses this; a hand-built SqlSource may still carry it
            raise DataSourceError(f"data.source.params.{name}: {value!r} needs data.source.window_days")
    return out


def _placeholder(value: Any) -> str | None:
    m = re.fullmatch(r"\{(\w+)\}", value.strip()) if isinstance(value, str) else None
    return m.group(1) if m else None


def relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def resolve_under(value: str, root: Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (root / p)
