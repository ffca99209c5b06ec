"""Seeded train/validation/test splits: random, stratified or time-ordered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from sluicegate.config import SplitConfig
from sluicegate.errors import DataValidationError


@dataclass(frozen=True)
class SplitResult:
    """Paths of the three parts; the test part is the holdout every gate scores on."""

    train_path: str
    valid_path: str
    test_path: str
    rows: tuple[int, int, int]
    method: str


def split_frame(
    frame: pd.DataFrame, spec: SplitConfig, method: str, target: str, seed: int,
    time_column: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split into train, validation and test frames.

    Args:
        frame: the validated data.
        spec: the `split` section.
        method: `random`, `stratified` or `time` (already resolved from `auto`).
        target: the target column, for stratification.
        seed: the project seed.
        time_column: column that orders rows for a time split.

    Returns:
        (train, valid, test) frames; the originals are not modified.

    Raises:
        DataValidationError: a class too small to stratify, or a missing time column.
    """
    holdout = spec.test_size + spec.valid_size
    if method == "time":
        col = spec.time_column or time_column
        if col not in frame.columns:
            raise DataValidationError(f"split.time_column: column {col!r} is not in the data")
        ordered = frame.sort_values(col, kind="stable")
        n = len(ordered)
        n_test, n_valid = int(round(n * spec.test_size)), int(round(n * spec.valid_size))
        train = ordered.iloc[: n - n_test - n_valid]
        valid = ordered.iloc[n - n_test - n_valid : n - n_test]
        test = ordered.iloc[n - n_test :]
        return train, valid, test
    stratify = frame[target] if method == "stratified" else None
    try:
        train, rest = train_test_split(frame, test_size=holdout, random_state=seed, stratify=stratify)
        rest_strat = rest[target] if method == "stratified" else None
        valid, test = train_test_split(
            rest, test_size=spec.test_size / holdout, random_state=seed, stratify=rest_strat
        )
    except ValueError as exc:
        raise DataValidationError(f"split: cannot split the data {method}ly: {exc}") from exc
    return train, valid, test


def split_data(
    snapshot_path: str, spec: SplitConfig, method: str, target: str, seed: int, out_dir: Path,
    time_column: str | None = None,
) -> SplitResult:
    """Split a snapshot and write the parts next to each other as Parquet."""
    frame = pd.read_parquet(snapshot_path)
    train, valid, test = split_frame(frame, spec, method, target, seed, time_column)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        p = out_dir / f"{name}.parquet"
        part.to_parquet(p, index=False)
        paths.append(str(p))
    return SplitResult(*paths, rows=(len(train), len(valid), len(test)), method=method)

