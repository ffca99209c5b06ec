"""Drift checks with Evidently (the only Evidently import), the verdict, and the hysteresis that debounces alerts.

Every column is tested with the method the config names (`monitoring.num_method`, default K-S;
`monitoring.cat_method`, default chi-square), never one Evidently picks by sample size, at an
explicit threshold. The dataset verdict (`decide_drift`) weighs columns by the champion's
importance, so one important input that moved is drift even when most columns did not.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from sluicegate.config import MonitoringConfig
from sluicegate.files import write_json_atomic

log = logging.getLogger(__name__)

# YAML names -> Evidently stattest names
METHODS = {
    "ks": "ks", "wasserstein": "wasserstein", "psi": "psi", "jensenshannon": "jensenshannon",
    "kl_div": "kl_div", "chisquare": "chisquare", "z": "z", "hellinger": "hellinger", "tvd": "TVD",
}
# methods whose score is a p-value (drift when p < threshold); the others are distances (drift when >= threshold)
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z", "tvd"})
DEFAULT_P_THRESHOLD = 0.001
DEFAULT_DISTANCE_THRESHOLD = 0.1
# numeric columns with this many distinct values or fewer are tested as categories
MAX_NUMERIC_AS_CATEGORY = 5
PREDICTION = "prediction"


def is_p_value(method: str) -> bool:
    return method in P_VALUE_METHODS


def threshold_for(method: str, spec: MonitoringConfig) -> float:
    """The configured threshold, else 0.001 for p-value tests and 0.1 for distances."""
    if spec.threshold is not None:
        return spec.threshold
    return DEFAULT_P_THRESHOLD if is_p_value(method) else DEFAULT_DISTANCE_THRESHOLD


def is_numeric(s: pd.Series) -> bool:
    """Tested as a number (else as a category): numeric, not bool, more than 5 distinct values."""
    return (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
            and s.nunique() > MAX_NUMERIC_AS_CATEGORY)


@dataclass(frozen=True)
class ColumnDrift:
    """One column's test: the statistic (a p-value or a distance), its threshold and the column's importance."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    weight: float = 0.0  # share of the champion's importance (0 when unknown)
    rank: int | None = None  # 1 = most important input

    def describe(self) -> str:
        """`tenure: ks p=1.2e-30 < 0.001 (importance rank 1, 41%)`."""
        if is_p_value(self.method):
            stat = f"p={self.score:.3g} {'<' if self.drifted else '>='} {self.threshold:g}"
        else:
            stat = f"distance={self.score:.3f} {'>=' if self.drifted else '<'} {self.threshold:g}"
        imp = f" (importance rank {self.rank}, {self.weight:.0%})" if self.rank is not None else ""
        return f"{self.column}: {self.method} {stat}{imp}"


@dataclass(frozen=True)
class RuleCheck:
    """One rule of the dataset verdict: its name, whether it fired, and the numbers behind it."""

    rule: str
    fired: bool
    detail: str


@dataclass(frozen=True)
class DriftVerdict:
    """The dataset verdict: drift when any rule fired; every rule explained."""

    drifted: bool
    share: float
    weighted_share: float | None
    top_columns: tuple[str, ...]
    checks: tuple[RuleCheck, ...]

    @property
    def rule(self) -> str:
        fired = [c.rule for c in self.checks if c.fired]
        return " + ".join(fired) if fired else "none"

    @property
    def reason(self) -> str:
        fired = [c for c in self.checks if c.fired]
        if fired:
            return "; ".join(f"[{c.rule}] {c.detail}" for c in fired)
        return "no rule fired: " + "; ".join(f"[{c.rule}] {c.detail}" for c in self.checks)


def decide_drift(columns: tuple[ColumnDrift, ...] | list[ColumnDrift], spec: MonitoringConfig,
                 prediction: ColumnDrift | None = None, weighted: bool = True) -> DriftVerdict:
    """Decide whether a window drifted, from the per-column tests.

    Rules (any one is drift):
      - `top_k`: one of the `monitoring.top_k` most important inputs drifted;
      - `importance_share`: the drifted inputs carry at least `monitoring.importance_share` of the
        champion's importance;
      - `drift_share`: at least `monitoring.drift_share` of the tested columns drifted;
      - `prediction`: the champion's predictions drifted (with `monitoring.prediction_drift`).

    Args:
        columns: per-input tests with their importance `weight` and `rank` (weights sum to 1
            over the inputs when importance is known).
        spec: the `monitoring` section.
        prediction: the prediction-drift test, when there was one.
        weighted: whether `columns` carry importance; without it only the plain share and
            prediction rules apply.

    Returns:
        A `DriftVerdict`; identical windows test p=1 / distance 0 everywhere, so never drift.
    """
    cols = list(columns)
    drifted = [c for c in cols if c.drifted]
    share = len(drifted) / len(cols) if cols else 0.0
    checks = [RuleCheck("drift_share", bool(cols) and share >= spec.drift_share,
                        f"{len(drifted)} of {len(cols)} columns drifted (share {share:.2f}, alert at {spec.drift_share:g})")]
    weighted_share = None
    top: tuple[str, ...] = ()
    if weighted and any(c.weight > 0 for c in cols):
        weighted_share = float(sum(c.weight for c in drifted))
        checks.append(RuleCheck(
            "importance_share", weighted_share >= spec.importance_share,
            f"drifted columns carry {weighted_share:.0%} of the champion's importance (alert at {spec.importance_share:.0%})"))
        ranked = sorted((c for c in cols if c.weight > 0 and c.rank is not None), key=lambda c: c.rank)
        top = tuple(c.column for c in ranked[:spec.top_k])
        if spec.top_k:
            hit = [c.column for c in ranked[:spec.top_k] if c.drifted]
            checks.append(RuleCheck(
                "top_k", bool(hit),
                f"top-{spec.top_k} inputs by importance ({', '.join(top)}): "
                + (f"{', '.join(hit)} drifted" if hit else "none drifted")))
    if spec.prediction_drift and prediction is not None:
        checks.append(RuleCheck("prediction", prediction.drifted, f"champion's predictions: {prediction.describe()}"))
    return DriftVerdict(any(c.fired for c in checks), share, weighted_share, top, tuple(checks))


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
    verdict: DriftVerdict | None = None
    prediction: ColumnDrift | None = None
    prediction_html_path: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def rule(self) -> str:
        return self.verdict.rule if self.verdict else "none"

    def to_text(self) -> str:
        """What `sluice drift` and the flow log print: the verdict, its rule, each drifted column, the report."""
        if not self.sufficient:
            return f"drift: no verdict ({self.reason})"
        head = f"drift: {'DRIFT' if self.drifted else 'no drift'} (rule: {self.rule})"
        lines = [head, f"  {self.reason}"]
        moved = [c for c in self.columns if c.drifted] + ([self.prediction] if self.prediction and self.prediction.drifted else [])
        if moved:
            lines.append("  drifted columns:")
            lines += [f"    {c.describe()}" for c in sorted(moved, key=lambda c: (c.rank is None, c.rank or 0))]
        else:
            lines.append(f"  no column drifted ({len(self.columns)} tested"
                         + (", and the predictions" if self.prediction else "") + ")")
        lines += [f"  note: {n}" for n in self.notes]
        if self.html_path:
            lines.append(f"  report: {self.html_path}")
        if self.prediction_html_path:
            lines.append(f"  prediction report: {self.prediction_html_path}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        head = (f"## Drift check: {'DRIFT' if self.drifted else 'no drift'} (rule: {self.rule})\n\n{self.reason}\n\n"
                f"reference {self.reference_rows} rows, current {self.current_rows} rows, "
                f"drift share {self.drift_share:.2f}\n\n"
                "| column | importance rank | method | statistic | threshold | drifted |\n|---|---|---|---|---|---|\n")
        cols = list(self.columns) + ([self.prediction] if self.prediction else [])
        rows = "".join(f"| {c.column} | {c.rank or '-'} | {c.method} | {c.score:.4g} | {c.threshold:g} | "
                       f"{'**yes**' if c.drifted else 'no'} |\n"
                       for c in sorted(cols, key=lambda c: (not c.drifted, c.rank or 1e9)))
        notes = "".join(f"\n- {n}" for n in self.notes)
        perf = "".join(f"\n- {k}: {v:.4f}" for k, v in self.performance.items())
        return head + rows + (f"\nNotes:{notes}\n" if notes else "") + (f"\nPerformance on labelled rows:{perf}\n" if perf else "")

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
    *,
    importance: Mapping[str, float] | None = None,
    reference_predictions: pd.Series | None = None,
    notes: tuple[str, ...] = (),
) -> DriftReport:
    """Compare `current` with `reference` column by column, then decide with `decide_drift`.

    Args:
        reference: the champion's training snapshot.
        current: the recent window (prediction log or a batch).
        columns: the input columns to test (`prediction` is tested separately, see below).
        spec: the `monitoring` section: methods, thresholds, verdict rules, sample sizes.
        out_dir: where the HTML and JSON reports go (None: not saved).
        seed: sampling seed.
        html: build the HTML report (slow on big frames; the scheduled check keeps it).
        importance: the champion's importance per input column (any scale; negative counts as 0).
            None: the importance rules are off and the verdict says so.
        reference_predictions: the champion's predictions on its holdout; with a `prediction`
            column in `current` they are compared (prediction drift).
        notes: lines carried into the report (where the references came from).

    Returns:
        A `DriftReport`; too few current rows gives `sufficient=False` and no drift verdict.
    """
    cols = [c for c in columns if c != PREDICTION and c in reference.columns and c in current.columns]
    if len(current) < spec.min_rows:
        return DriftReport(False, 0.0, (), (), len(reference), len(current), False,
                           f"not enough data: {len(current)} current rows, need {spec.min_rows} (monitoring.min_rows)",
                           notes=notes)
    ref = _sample(reference[cols], spec.max_rows, seed)
    cur = _sample(current[cols], spec.max_rows, seed)
    started = time.perf_counter()
    per_column, snapshot, result = _evidently_columns(ref, cur, cols, spec)
    weights, ranks = importance_weights(importance, cols)
    per_column = [ColumnDrift(c.column, c.method, c.score, c.threshold, c.drifted, weights.get(c.column, 0.0),
                              ranks.get(c.column)) for c in per_column]
    pred = pred_snapshot = None
    if reference_predictions is not None and PREDICTION in current.columns and current[PREDICTION].notna().any():
        ref_p = _sample(pd.DataFrame({PREDICTION: pd.Series(reference_predictions).reset_index(drop=True)}), spec.max_rows, seed)
        cur_p = _sample(current[[PREDICTION]].dropna().reset_index(drop=True), spec.max_rows, seed)
        if not pd.api.types.is_float_dtype(ref_p[PREDICTION]):  # classes, however many: a category test
            ref_p, cur_p = ref_p.map(label_text), cur_p.map(label_text)
        if ref_p[PREDICTION].notna().any():
            found, pred_snapshot, pred_result = _evidently_columns(ref_p, cur_p, [PREDICTION], spec)
            pred = found[0] if found else None
            result = {**result, "prediction": pred_result}
    verdict = decide_drift(tuple(per_column), spec, pred, weighted=bool(weights))
    drifted = tuple(c.column for c in per_column if c.drifted)
    if importance is None:
        notes = (*notes, "no importance for this champion: the top_k and importance_share rules are off")
    html_path = json_path = pred_html = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = str(out_dir / "drift.json")
        Path(json_path).write_text(json.dumps(result, default=str, indent=1))
        if html:
            html_path = str(out_dir / "drift.html")
            snapshot.save_html(html_path)
            if pred_snapshot is not None:
                pred_html = str(out_dir / "prediction_drift.html")
                pred_snapshot.save_html(pred_html)
    log.info("drift check: %s in %.2fs", verdict.reason, time.perf_counter() - started)
    return DriftReport(verdict.drifted, verdict.share, drifted, tuple(per_column), len(reference), len(current), True,
                       verdict.reason, html_path, json_path, verdict=verdict, prediction=pred,
                       prediction_html_path=pred_html, notes=tuple(notes))


def label_text(value: Any) -> Any:
    """One spelling per class (1, 1.0 and "1" are class "1"); missing stays missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return value
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if hasattr(value, "item") else value)


def importance_weights(importance: Mapping[str, float] | None, columns: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Importance as shares of 1 over `columns` (negative -> 0) and ranks (1 = most important, only > 0).

    Returns ({}, {}) when there is no importance or none of it is positive.
    """
    if not importance:
        return {}, {}
    raw = {c: max(0.0, float(importance.get(c, 0.0) or 0.0)) for c in columns}
    raw = {c: (v if math.isfinite(v) else 0.0) for c, v in raw.items()}
    total = sum(raw.values())
    if total <= 0:
        return {}, {}
    weights = {c: v / total for c, v in raw.items()}
    order = sorted((c for c in columns if weights[c] > 0), key=lambda c: (-weights[c], c))
    return weights, {c: i + 1 for i, c in enumerate(order)}


def column_plan(ref: pd.DataFrame, cur: pd.DataFrame, cols: list[str], spec: MonitoringConfig,
                numeric: set[str] | None = None) -> list[tuple[str, str, float, float]]:
    """(column, method, threshold given to Evidently, threshold shown) per column.

    Evidently's chi-square takes the reference shares as exact; with a reference of n rows and a
    window of m rows its statistic is (1 + m/n) times too large under no drift, which would make
    small references cry wolf. The threshold given to Evidently is corrected for that (a
    two-sample test at the shown threshold); `_corrected_p` maps its p-value back.
    """
    numeric = {c for c in cols if is_numeric(ref[c])} if numeric is None else numeric
    plan = []
    for col in cols:
        method = spec.num_method if col in numeric else spec.cat_method
        shown = threshold_for(method, spec)
        given = shown
        if method == "chisquare":
            k, factor = _chi_shape(ref[col], cur[col])
            if k >= 2:
                from scipy.stats import chi2

                given = float(chi2.sf(factor * chi2.isf(shown, k - 1), k - 1))
        plan.append((col, method, given, shown))
    return plan


def _chi_shape(ref: pd.Series, cur: pd.Series) -> tuple[int, float]:
    r, c = ref.dropna(), cur.dropna()
    k = len(set(r.astype(str).unique()) | set(c.astype(str).unique()))
    return k, 1.0 + (len(c) / len(r) if len(r) else 0.0)


def _corrected_p(p: float, ref: pd.Series, cur: pd.Series) -> float:
    """Evidently's one-sample chi-square p-value as the two-sample one (see `column_plan`)."""
    from scipy.stats import chi2

    k, factor = _chi_shape(ref, cur)
    if k < 2 or not math.isfinite(p):
        return p
    if p <= 0:
        return 0.0
    return float(chi2.sf(chi2.isf(p, k - 1) / factor, k - 1))


def _evidently_columns(ref: pd.DataFrame, cur: pd.DataFrame, cols: list[str], spec: MonitoringConfig
                       ) -> tuple[list[ColumnDrift], Any, dict]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    numeric = [c for c in cols if is_numeric(ref[c])]
    categorical = [c for c in cols if c not in numeric]
    # categories as text once: what Evidently sees, and what the chi-square correction counts
    ref = ref.assign(**{c: ref[c].astype(str) for c in categorical})
    cur = cur.assign(**{c: cur[c].astype(str) for c in categorical})
    plan = column_plan(ref, cur, cols, spec, set(numeric))
    metrics: list[Any] = [ValueDrift(column=col, method=METHODS[method], threshold=given) for col, method, given, _ in plan]
    # Declare column types so Evidently and the configured methods agree on them.
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    ref_ds = Dataset.from_pandas(ref, data_definition=definition)
    cur_ds = Dataset.from_pandas(cur, data_definition=definition)
    snapshot = Report(metrics, include_tests=True).run(cur_ds, ref_ds)  # current first
    result = snapshot.dict()
    scores = _scores(result)
    out = []
    for col, method, _given, shown in plan:
        score = scores.get(col, float("nan"))
        if method == "chisquare":
            score = _corrected_p(score, ref[col], cur[col])
        out.append(ColumnDrift(col, method, score, shown, is_drifted(method, score, shown)))
    return out, snapshot, result


def is_drifted(method: str, score: float, threshold: float) -> bool:
    """p-value tests drift below the threshold, distances at or above it; a NaN score never drifts."""
    if not math.isfinite(score):
        return False
    return score < threshold if is_p_value(method) else score >= threshold


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return frame.sample(max_rows, random_state=seed) if len(frame) > max_rows else frame


def _scores(result: dict) -> dict[str, float]:
    out = {}
    for m in result.get("metrics", []):
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            value = m["value"]
            out[cfg["column"]] = float(value if not isinstance(value, dict) else value.get("value", np.nan))
    return out


# ---------------------------------------------------------------- fast path (same statistics, no Evidently)
def fast_column_drift(ref: pd.DataFrame, cur: pd.DataFrame, cols: list[str], spec: MonitoringConfig) -> list[ColumnDrift]:
    """The per-column statistics of `check_drift` for the default methods (ks, chisquare), with scipy.

    For calibration (false-alarm and detection rates over hundreds of checks) and benchmarks;
    a unit test keeps it equal to the Evidently path.

    Raises:
        ValueError: a method other than ks or chisquare is configured.
    """
    from scipy.stats import chisquare, ks_2samp

    out = []
    for col, method, _given, shown in column_plan(ref, cur, cols, spec):
        if method == "ks":
            score = float(ks_2samp(ref[col].dropna().to_numpy(), cur[col].dropna().to_numpy())[1])
        elif method == "chisquare":
            r, c = ref[col].astype(str), cur[col].astype(str)  # a missing value is a category, as in Evidently
            keys = sorted(set(r.unique()) | set(c.unique()))
            rc, cc = r.value_counts().reindex(keys, fill_value=0), c.value_counts().reindex(keys, fill_value=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                p = float(chisquare(cc.to_numpy(), rc.to_numpy() * (len(c) / len(r)))[1])
            score = _corrected_p(p if math.isfinite(p) else 0.0, r, c)
        else:
            raise ValueError(f"the fast path computes ks and chisquare only (got {method})")
        out.append(ColumnDrift(col, method, score, shown, is_drifted(method, score, shown)))
    return out


# ---------------------------------------------------------------- hysteresis
@dataclass(frozen=True)
class DriftSignal:
    """Whether this check should raise an alert, after hysteresis and cooldown."""

    alert: bool
    consecutive: int
    reason: str


def record_drift(state_path: Path, drifted: bool, sufficient: bool, consecutive_needed: int,
                 cooldown_s: float, now: float | None = None, what: str = "drift") -> DriftSignal:
    """Record one check and decide whether to alert (drift, or with `what` any other condition).

    An alert needs `consecutive_needed` bad checks in a row; a good check resets the count
    (drift, drift, no drift, drift never alerts with K=3); an insufficient window neither
    counts nor resets. After an alert the count restarts, and no alert is raised within
    `cooldown_s` of the previous one.
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
            reason = f"{what} persists ({state['consecutive']} checks) but the last alert was {now - last:.0f}s ago (cooldown {cooldown_s:.0f}s)"
        else:
            alert = True
            state["last_alert"] = now
            reason = f"{what} in {state['consecutive']} consecutive checks (needed {consecutive_needed})"
            state["consecutive"] = 0
    elif not sufficient:
        reason = "window too small: not counted"
    elif drifted:
        reason = f"{what} in {state['consecutive']} of {consecutive_needed} consecutive checks needed"
    else:
        reason = f"no {what}"
    write_json_atomic(state_path, state)
    return DriftSignal(alert, state["consecutive"], reason)
