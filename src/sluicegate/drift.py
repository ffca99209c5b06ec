"""Drift checks with Evidently (the only Evidently import), and the hysteresis that debounces alerts."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sluicegate.config import MonitoringConfig

log = logging.getLogger(__name__)

# YAML names -> Evidently stattest names
METHODS = {
    "ks": "ks", "wasserstein": "wasserstein", "psi": "psi", "jensenshannon": "jensenshannon",
    "kl_div": "kl_div", "chisquare": "chisquare", "z": "z", "hellinger": "hellinger", "tvd": "TVD",
}


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """One check: per-column drift, the dataset verdict, and where the full report is."""

    drifted: bool
    drift_share: float
    drifted_columns: tuple[str, ...]
    columns: tuple[ColumnDrift, ...]
    reference_rows: int
    current_rows: int
    sufficient: bool
    reason: str
    html_path: str | None = None
    json_path: str | None = None
    performance: dict[str, float] = field(default_factory=dict)

    def to_markdown(self) -> str:
        head = (f"## Drift check: {'DRIFT' if self.drifted else 'no drift'}\n\n{self.reason}\n\n"
                f"reference {self.reference_rows} rows, current {self.current_rows} rows, "
                f"drift share {self.drift_share:.2f}\n\n| column | method | score | threshold | drifted |\n|---|---|---|---|---|\n")
        rows = "".join(f"| {c.column} | {c.method} | {c.score:.4f} | {c.threshold} | {'**yes**' if c.drifted else 'no'} |\n"
                       for c in sorted(self.columns, key=lambda c: not c.drifted))
        perf = "".join(f"\n- {k}: {v:.4f}" for k, v in self.performance.items())
        return head + rows + (f"\nPerformance on labelled rows:{perf}\n" if perf else "")

    def to_dict(self) -> dict:
        return asdict(self)


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    spec: MonitoringConfig,
    out_dir: Path | None = None,
    seed: int = 0,
    html: bool = True,
) -> DriftReport:
    """Compare `current` with `reference` column by column.

    Args:
        reference: the champion's training snapshot (or its predictions).
        current: the recent window (prediction log or a batch).
        columns: the columns to test (features, and `prediction` when present on both).
        spec: the `monitoring` section: methods, thresholds, drift share, sample sizes.
        out_dir: where the HTML and JSON reports go (None: not saved).
        seed: sampling seed.
        html: build the HTML report (slow on big frames; the scheduled check keeps it).

    Returns:
        A `DriftReport`; too few current rows gives `sufficient=False` and no drift verdict.
    """
    cols = [c for c in columns if c in reference.columns and c in current.columns]
    if len(current) < spec.min_rows:
        return DriftReport(False, 0.0, (), (), len(reference), len(current), False,
                           f"not enough data: {len(current)} current rows, need {spec.min_rows}")
    ref = _sample(reference[cols], spec.max_rows, seed)
    cur = _sample(current[cols], spec.max_rows, seed)
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    numeric = [c for c in cols if pd.api.types.is_numeric_dtype(ref[c]) and not pd.api.types.is_bool_dtype(ref[c])
               and ref[c].nunique() > 5]
    categorical = [c for c in cols if c not in numeric]
    metrics: list[Any] = [DriftedColumnsCount(columns=cols, drift_share=spec.drift_share)]
    for col in cols:
        method = spec.num_method if col in numeric else spec.cat_method
        kwargs: dict[str, Any] = {"column": col}
        if method:
            kwargs["method"] = METHODS[method]
        if spec.threshold is not None:
            kwargs["threshold"] = spec.threshold
        metrics.append(ValueDrift(**kwargs))
    # Declare column types so Evidently and the configured methods agree on them.
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    as_cat = {c: ref[c].astype(str) for c in categorical}
    ref_ds = Dataset.from_pandas(ref.assign(**as_cat), data_definition=definition)
    cur_ds = Dataset.from_pandas(cur.assign(**{c: cur[c].astype(str) for c in categorical}), data_definition=definition)
    started = time.perf_counter()
    snapshot = Report(metrics, include_tests=True).run(cur_ds, ref_ds)  # current first
    result = snapshot.dict()
    per_column = _per_column(result)
    drifted = tuple(c.column for c in per_column if c.drifted)
    share = len(drifted) / len(cols) if cols else 0.0
    is_drift = bool(cols) and share >= spec.drift_share
    reason = (f"{len(drifted)} of {len(cols)} columns drifted (share {share:.2f}, "
              f"alert at {spec.drift_share}): {', '.join(drifted) or 'none'}")
    html_path = json_path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = str(out_dir / "drift.json")
        Path(json_path).write_text(json.dumps(result, default=str, indent=1))
        if html:
            html_path = str(out_dir / "drift.html")
            snapshot.save_html(html_path)
    log.info("drift check: %s in %.2fs", reason, time.perf_counter() - started)
    return DriftReport(is_drift, share, drifted, tuple(per_column), len(reference), len(current), True,
                       reason, html_path, json_path)


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return frame.sample(max_rows, random_state=seed) if len(frame) > max_rows else frame


def _per_column(result: dict) -> list[ColumnDrift]:
    scores = {}
    for m in result.get("metrics", []):
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            scores[m["id"]] = (cfg["column"], str(cfg.get("method")), float(cfg.get("threshold", np.nan)), float(m["value"]))
    out = []
    for t in result.get("tests", []):
        mid = (t.get("metric_config") or {}).get("metric_id")
        if mid in scores:
            col, method, threshold, score = scores[mid]
            out.append(ColumnDrift(col, method, score, threshold, t.get("status") == "FAIL"))
    return out


# ---------------------------------------------------------------- hysteresis
@dataclass(frozen=True)
class DriftSignal:
    """Whether this check should raise an alert, after hysteresis and cooldown."""

    alert: bool
    consecutive: int
    reason: str


def record_drift(state_path: Path, drifted: bool, sufficient: bool, consecutive_needed: int,
                       cooldown_s: float, now: float | None = None) -> DriftSignal:
    """Record one check and decide whether to alert.

    An alert needs `consecutive_needed` drifted checks in a row; a check without drift resets
    the count (drift, drift, no drift, drift never alerts with K=3); an insufficient window
    neither counts nor resets. After an alert the count restarts, and no alert is raised
    within `cooldown_s` of the previous one.
    """
    now = time.time() if now is None else now
    state = json.loads(state_path.read_text()) if state_path.exists() else {"consecutive": 0, "last_alert": None, "history": []}
    if sufficient:
        state["consecutive"] = state["consecutive"] + 1 if drifted else 0
    state["history"] = (state["history"] + [{"at": now, "drifted": drifted, "sufficient": sufficient}])[-50:]
    alert = False
    if sufficient and drifted and state["consecutive"] >= consecutive_needed:
        last = state.get("last_alert")
        if last is not None and now - last < cooldown_s:
            reason = f"drift persists ({state['consecutive']} checks) but the last alert was {now - last:.0f}s ago (cooldown {cooldown_s:.0f}s)"
        else:
            alert = True
            state["last_alert"] = now
            reason = f"drift in {state['consecutive']} consecutive checks (needed {consecutive_needed})"
            state["consecutive"] = 0
    elif not sufficient:
        reason = "window too small: not counted"
    elif drifted:
        reason = f"drift in {state['consecutive']} of {consecutive_needed} consecutive checks needed"
    else:
        reason = "no drift"
    state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(state_path)
    return DriftSignal(alert, state["consecutive"], reason)
