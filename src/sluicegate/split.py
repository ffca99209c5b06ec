"""Seeded train/validation/test splits: random, stratified or time-ordered; labelled production rows
are split apart from the source so the holdout holds the newest rows the champion never saw."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from sluicegate.config import SplitConfig
from sluicegate.data import LABELLED_AT, ORIGIN, PREDICTED_AT, PRODUCTION, strip_markers
from sluicegate.errors import DataValidationError


@dataclass(frozen=True)
class SplitResult:
    """Paths of the three parts; the test part is the holdout every gate scores on.

    `production_rows` counts the labelled production rows in (train, valid, test); `holdout`
    says in words what the holdout is, for the gate verdict.
    """

    train_path: str
    valid_path: str
    test_path: str
    rows: tuple[int, int, int]
    method: str
    production_rows: tuple[int, int, int] = (0, 0, 0)
    holdout: str = ""


def split_frame(
    frame: pd.DataFrame, spec: SplitConfig, method: str, target: str, seed: int,
    time_column: str | None = None, holdout_after: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split into train, validation and test frames.

    Source rows are split by `method` exactly as they would be without production rows, so a
    source row keeps its part from run to run. Labelled production rows (marked by
    `_sluice_origin`) are split on their own: of those labelled after `holdout_after` (the
    champion's newest training label), the newest `spec.production_test_size` by prediction
    time join the test part; the rest are split into train and validation.

    Args:
        frame: the validated data.
        spec: the `split` section.
        method: `random`, `stratified` or `time` (already resolved from `auto`).
        target: the target column, for stratification.
        seed: the project seed.
        time_column: column that orders rows for a time split.
        holdout_after: ISO UTC time; only production rows labelled after it may be held out,
            because the champion may have trained on the others. None: every production row.

    Returns:
        (train, valid, test) frames, marker columns kept; the originals are not modified.

    Raises:
        DataValidationError: a class too small to stratify, or a missing time column.
    """
    if ORIGIN in frame.columns:
        is_prod = frame[ORIGIN] == PRODUCTION
        if is_prod.any():
            parts = _split_source(frame[~is_prod], spec, method, target, seed, time_column)
            extra = _split_production(frame[is_prod], spec, method, target, seed, holdout_after)
            return tuple(pd.concat([a, b]) for a, b in zip(parts, extra))  # type: ignore[return-value]
    return _split_source(frame, spec, method, target, seed, time_column)


def _split_source(frame: pd.DataFrame, spec: SplitConfig, method: str, target: str, seed: int,
                  time_column: str | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
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


def _split_production(frame: pd.DataFrame, spec: SplitConfig, method: str, target: str, seed: int,
                      holdout_after: str | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    frame = frame.sort_values(PREDICTED_AT, kind="stable")
    eligible = _eligible(frame, holdout_after)
    n_test = int(round(len(eligible) * spec.production_test_size))
    test = eligible.iloc[len(eligible) - n_test:]
    rest = frame.drop(index=test.index)
    n_valid = int(round(len(rest) * spec.valid_size / (1 - spec.test_size)))
    if n_valid == 0 or n_valid == len(rest):
        return rest, rest.iloc[0:0], test
    if method == "time":  # the newest of the rest validate, as in a time split of the source
        return rest.iloc[: len(rest) - n_valid], rest.iloc[len(rest) - n_valid:], test
    try:
        train, valid = train_test_split(rest, test_size=n_valid, random_state=seed,
                                        stratify=rest[target] if method == "stratified" else None)
    except ValueError:  # too few production rows of a class to stratify: a random split of them
        train, valid = train_test_split(rest, test_size=n_valid, random_state=seed)
    return train, valid, test


def _eligible(production: pd.DataFrame, holdout_after: str | None) -> pd.DataFrame:
    """Production rows the champion cannot have trained on: labelled after its newest training label."""
    if not holdout_after or production.empty:
        return production
    return production[pd.to_datetime(production[LABELLED_AT], utc=True) > pd.Timestamp(holdout_after)]


def describe_holdout(test: pd.DataFrame, production: int, eligible: int, spec: SplitConfig,
                     holdout_after: str | None) -> str:
    """The holdout in words, for the gate verdict, e.g. `holdout: 360 rows (240 source + 120
    production predicted 2026-11-23 to 2026-11-30, the newest 30% of 400 eligible)`.

    Args:
        test: the test part, marker columns kept.
        production: production rows in the snapshot.
        eligible: of those, the ones labelled after `holdout_after`.
        spec: the `split` section.
        holdout_after: the champion's newest training label (ISO UTC), if it trained on any.
    """
    prod = test[test[ORIGIN] == PRODUCTION] if ORIGIN in test.columns else test.iloc[0:0]
    n, p = len(test), len(prod)
    after = f"labelled after {_when(holdout_after)}, the champion's newest training label" if holdout_after else ""
    if not p:
        text = f"holdout: {n} source rows"
        if production:
            text += f" (none of the {production} production rows was {after or 'eligible'})" if not eligible \
                else f" ({eligible} eligible production rows, too few to hold out any)"
        return text
    first, last = (pd.Timestamp(v) for v in (prod[PREDICTED_AT].min(), prod[PREDICTED_AT].max()))
    return (f"holdout: {n} rows ({n - p} source + {p} production predicted {first:%Y-%m-%d} to {last:%Y-%m-%d}, "
            f"the newest {spec.production_test_size:.0%} of {eligible} production rows "
            + (after if after else "the champion never trained on") + ")")


def _when(iso: str | None) -> str:
    return pd.Timestamp(iso).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC") if iso else ""


def split_data(
    snapshot_path: str, spec: SplitConfig, method: str, target: str, seed: int, out_dir: Path,
    time_column: str | None = None, holdout_after: str | None = None,
) -> SplitResult:
    """Split a snapshot and write the parts next to each other as Parquet, without marker columns.

    Args:
        snapshot_path: the data snapshot (with marker columns when it holds production rows).
        spec, method, target, seed, time_column, holdout_after: as in `split_frame`.
        out_dir: where `train.parquet`, `valid.parquet` and `test.parquet` go.

    Returns:
        A `SplitResult` with the paths, the rows per part and what the holdout holds.
    """
    frame = pd.read_parquet(snapshot_path)
    train, valid, test = split_frame(frame, spec, method, target, seed, time_column, holdout_after)
    prod = frame[frame[ORIGIN] == PRODUCTION] if ORIGIN in frame.columns else frame.iloc[0:0]
    counts = tuple(int((p[ORIGIN] == PRODUCTION).sum()) if ORIGIN in p.columns else 0 for p in (train, valid, test))
    holdout = describe_holdout(test, len(prod), len(_eligible(prod, holdout_after)), spec, holdout_after)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        p = out_dir / f"{name}.parquet"
        strip_markers(part).to_parquet(p, index=False)
        paths.append(str(p))
    return SplitResult(*paths, rows=(len(train), len(valid), len(test)), method=method,
                       production_rows=counts, holdout=holdout)  # type: ignore[arg-type]
