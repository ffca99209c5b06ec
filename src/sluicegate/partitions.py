"""Batch scoring split by partition: cut a table into parts, score each anywhere, merge in order."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sluicegate.data import fingerprint_frame
from sluicegate.errors import DataSourceError, RegistryError
from sluicegate.scoring import read_table, score_frame, version_predictor, write_table

log = logging.getLogger(__name__)

_MODELS: dict[tuple[str, str], Any] = {}  # per process: a worker loads each model version once


@dataclass(frozen=True)
class PartitionPlan:
    """The input cut into contiguous parts (row order kept), and the fingerprint of the whole input."""

    input_path: str
    rows: int
    fingerprint: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class PartResult:
    """One scored part."""

    index: int
    path: str
    rows: int


def parts_dir(output_path: str | Path) -> Path:
    """Where the parts of `output_path` go: beside it, so every worker that can write the output can write them."""
    out = Path(output_path)
    return out.parent / f".{out.name}.parts"


def split_partitions(input_path: str, partitions: int, work_dir: str | Path) -> PartitionPlan:
    """Cut a CSV or Parquet file into `partitions` contiguous Parquet parts.

    Args:
        input_path: the rows to score.
        partitions: how many parts (fewer when there are fewer rows).
        work_dir: the folder for the parts; it must be reachable by every worker.

    Returns:
        A `PartitionPlan`; its fingerprint is that of the whole input, as single-process scoring writes.

    Raises:
        DataSourceError: unreadable input, or `partitions` < 1.
    """
    if partitions < 1:
        raise DataSourceError(f"partitions must be >= 1 (got {partitions})")
    frame = read_table(input_path)
    fingerprint = fingerprint_frame(frame)
    work = Path(work_dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    bounds = np.array_split(np.arange(len(frame)), min(partitions, max(1, len(frame))))
    parts = []
    for i, idx in enumerate(bounds):
        path = work / f"part-{i:05d}.parquet"
        frame.iloc[idx].to_parquet(path, index=False)
        parts.append(str(path))
    log.info("split %s: %d rows into %d parts under %s", input_path, len(frame), len(parts), work)
    return PartitionPlan(str(input_path), len(frame), fingerprint, tuple(parts))


def load_version(tracker: Any, model_uri: str) -> Any:
    key = (tracker.tracking_uri, model_uri)
    if key not in _MODELS:
        _MODELS[key] = tracker.load_model(model_uri)
    return _MODELS[key]


def score_partition(tracker: Any, project: str, version: str, index: int, part_path: str, fingerprint: str,
                    runtime: str = "auto") -> PartResult:
    """Score one part with a pinned model version and write `<part>.scored.parquet`.

    Scored by the version's ONNX graph where it passed parity (`runtime`, as `score_batch`).

    The version is resolved once by the caller (from `champion`), so every part is scored
    by the same model even if the alias moves during the job.

    Raises:
        RegistryError: no such version.
        DataValidationError: the part lacks model columns.
    """
    record = tracker.version(project, version)
    model = load_version(tracker, record.model_uri)
    frame = pd.read_parquet(part_path)
    scored = score_frame(model, frame, record.version, fingerprint, record.tags.get("sluice.task", "classification"),
                         version_predictor(tracker, record, runtime))
    out = Path(part_path).with_suffix(".scored.parquet")
    scored.to_parquet(out, index=False)
    return PartResult(index, str(out), len(scored))


def merge_partitions(results: list[PartResult], output_path: str) -> Path:
    """Concatenate scored parts in their original order and write the output (.csv or .parquet)."""
    ordered = sorted(results, key=lambda r: r.index)
    frame = pd.concat([pd.read_parquet(r.path) for r in ordered], ignore_index=True)
    path = write_table(frame, output_path)
    work = Path(ordered[0].path).parent if ordered else None
    if work is not None and work.name.endswith(".parts"):
        shutil.rmtree(work, ignore_errors=True)
    log.info("merged %d parts (%d rows) -> %s", len(ordered), len(frame), path)
    return path


def pin_champion(tracker: Any, project: str) -> str:
    """The champion's version number, pinned for a whole partitioned job.

    Raises:
        RegistryError: the project has no champion.
    """
    record = tracker.champion(project)
    if record is None:
        raise RegistryError(f"{project}: no champion to score with; train one with `sluice run` first")
    return record.version
