"""Monitoring steps: the check windows, the champion's importance, live performance on labelled predictions, the retrain cooldown."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from sluicegate.config import MonitoringConfig
from sluicegate.config.schema import PerformanceConfig
from sluicegate.data import load_snapshot
from sluicegate.drift import DriftReport, RuleCheck, label_text
from sluicegate.errors import RegistryError
from sluicegate.evaluation import compute_metrics, higher_is_better
from sluicegate.files import write_json_atomic
from sluicegate.serving.feedback import read_labelled_predictions
from sluicegate.serving.predlog import read_prediction_log

# columns of the prediction log (and ids) that are never features to test for drift
LOG_COLUMNS = ("prediction_id", "ts", "model_version", "endpoint", "traffic", "source", "prediction")
HOLDOUT_TAG = "sluice.holdout"  # the holdout split the version was scored on (set at registration)


@dataclass(frozen=True)
class Windows:
    """Reference and current frames written to Parquet, with the columns to test, and what the verdicts need."""

    reference_path: str
    current_path: str
    columns: tuple[str, ...]
    champion_version: str
    current_rows: int
    window: str
    reference_predictions_path: str | None = None
    labelled_path: str | None = None
    importance: dict[str, float] | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def load_windows(tracker: Any, project: str, target: str, id_column: str | None, spec: MonitoringConfig,
                 home: Path, out_dir: Path, current_path: str | None = None, *, task: str = "classification",
                 metric: str | None = None, seed: int = 0) -> Windows:
    """Write the reference and current windows of a check to `out_dir`, with the champion's importance.

    Args:
        tracker: the MLflow `Tracker` (champion lookup and model loading).
        project: project name.
        target: target column (never tested for drift; its presence in a batch gives performance).
        id_column: id column (never tested).
        spec: the `monitoring` section: window size, columns, importance.
        home: SLUICE_HOME, where the prediction log and the per-champion cache live.
        out_dir: where `reference.parquet`, `current.parquet` and the rest go.
        current_path: a CSV/Parquet batch to check instead of the prediction log.
        task: classification or regression.
        metric: the metric permutation importance is measured with (the gates' primary metric).
        seed: permutation and sampling seed.

    Returns:
        `Windows`: reference = the champion's training snapshot; current = the batch or the last
        logged live predictions (canary, shadow and health rows excluded); the champion's
        predictions on its holdout (prediction drift); the window's labelled predictions
        (performance); the champion's permutation importance per input (cached per version).

    Raises:
        RegistryError: the project has no champion yet.
    """
    champ = tracker.champion(project)
    if champ is None:
        raise RegistryError(f"{project}: no champion yet; train one before checking drift")
    cache = champion_cache_dir(home, project, champ.version)
    snapshot = tracker.local_version_file(champ, champ.tags["sluice.data_snapshot"], "snapshot.parquet", cache)
    if snapshot is None:
        raise RegistryError(f"{project}: v{champ.version}'s training snapshot {champ.tags['sluice.data_snapshot']} is "
                            "not on this machine and not stored with the version (a version trained against an "
                            "MLflow server stores it there)")
    reference = load_snapshot(snapshot)  # without production marker columns
    notes: list[str] = []
    labelled = None
    if current_path:
        p = Path(current_path)
        current = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        window = f"file {p.name}"
    else:
        since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=spec.window_hours) if spec.window_hours else None
        # the champion's own answers: after a promotion the previous version's predictions (and
        # their labels) say nothing about the new one, so the window starts empty and fills again
        current = read_prediction_log(project, home, last_n=spec.window_rows, since=since, model_version=champ.version)
        window = (f"last {spec.window_rows} logged predictions of v{champ.version}"
                  + (f" within {spec.window_hours} h" if since is not None else "") + " (live traffic only)")
        labelled = labelled_in_window(read_labelled_predictions(project, home, since=since, model_version=champ.version),
                                      current)
    columns = drift_columns(reference, spec, {target, id_column, *LOG_COLUMNS})
    model_cache: list[Any] = []

    def model() -> Any:
        if not model_cache:
            model_cache.append(tracker.load_model(champ.registry_uri))
        return model_cache[0]

    holdout_path = champ.tags.get(HOLDOUT_TAG)
    if holdout_path:
        holdout_path = tracker.local_version_file(champ, holdout_path, "holdout.parquet", cache)
    if holdout_path:
        holdout_name = f"its holdout ({Path(holdout_path).name})"
    else:
        holdout_path, holdout_name = snapshot, "its training snapshot (no holdout recorded)"
        notes.append(f"v{champ.version} records no holdout: importance and reference predictions use the training snapshot")
    holdout_cache: list[pd.DataFrame] = []

    def holdout() -> pd.DataFrame:  # read only when a per-champion result is not cached yet
        if not holdout_cache:
            holdout_cache.append(_head(pd.read_parquet(holdout_path), seed))
        return holdout_cache[0]

    ref_pred_path = cache / "reference_predictions.parquet"
    if not ref_pred_path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"prediction": model().predict(holdout().drop(columns=[target], errors="ignore"))}).to_parquet(ref_pred_path)
    notes.append(f"prediction drift: against v{champ.version}'s predictions on {holdout_name}")
    importance = None
    if spec.importance == "permutation":
        importance = cached_importance(cache / "importance.json", lambda: champion_importance(
            model(), holdout(), target, task, metric, columns, seed) if target in holdout().columns else {})
        if not importance:
            notes.append(f"no importance: {holdout_name} has no {target!r} column or no input matters to v{champ.version}")
            importance = None
    if len(current) and "prediction" not in current.columns:  # a batch: the champion's predictions on it
        current = current.assign(prediction=model().predict(current.drop(columns=[target], errors="ignore")))
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_path, cur_path = out_dir / "reference.parquet", out_dir / "current.parquet"
    reference.to_parquet(ref_path, index=False)
    current.drop(columns=[c for c in ("ts",) if c in current.columns]).to_parquet(cur_path, index=False)
    labelled_path = None
    if labelled is not None:
        labelled_path = str(out_dir / "labelled.parquet")
        labelled.to_parquet(labelled_path, index=False)
    return Windows(str(ref_path), str(cur_path), tuple(columns), champ.version, len(current), window,
                   str(ref_pred_path), labelled_path, importance, dict(champ.metrics), tuple(notes))


def _head(frame: pd.DataFrame, seed: int, rows: int = 5000) -> pd.DataFrame:
    return frame.sample(rows, random_state=seed) if len(frame) > rows else frame


def labelled_in_window(labelled: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """The labelled predictions that are in the current window (same prediction ids)."""
    if labelled.empty or "prediction_id" not in current.columns:
        return labelled.iloc[0:0]
    return labelled[labelled["prediction_id"].isin(set(current["prediction_id"]))].reset_index(drop=True)


def champion_cache_dir(home: Path, project: str, version: str) -> Path:
    """Per-champion-version results computed once: importance, reference predictions."""
    return home / "monitoring" / project / f"champion-v{version}"


def drift_columns(reference: pd.DataFrame, spec: MonitoringConfig, excluded: set[str | None]) -> list[str]:
    """The configured columns, or with `auto` every numeric or low-cardinality column not excluded."""
    if spec.columns != "auto":
        return list(spec.columns)
    # ids, dates and free text as categories would always look drifted
    return [c for c in reference.columns if c not in excluded
            and (pd.api.types.is_numeric_dtype(reference[c]) or reference[c].nunique() <= 50)]


def read_windows(windows: Windows) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (reference, current) frames of `load_windows`."""
    return pd.read_parquet(windows.reference_path), pd.read_parquet(windows.current_path)


def reference_predictions(windows: Windows) -> pd.Series | None:
    """The champion's predictions on its holdout, when `load_windows` wrote them."""
    if windows.reference_predictions_path and Path(windows.reference_predictions_path).exists():
        return pd.read_parquet(windows.reference_predictions_path)["prediction"]
    return None


# ---------------------------------------------------------------- importance
def champion_importance(model: Any, holdout: pd.DataFrame, target: str, task: str, metric: str | None,
                        columns: list[str], seed: int = 0, repeats: int = 3) -> dict[str, float]:
    """Permutation importance of each raw input column on the holdout, measured with `metric`.

    The model is the full pipeline, so permuting a raw column covers every feature built from it.

    Args:
        model: the champion (raw frame in, predictions out).
        holdout: rows the champion did not train on, with the target.
        target: the target column.
        task: classification or regression.
        metric: the metric to lose (default: roc_auc / rmse); falls back to accuracy / rmse
            when it is undefined on this holdout (one class).
        columns: the input columns to permute.
        seed: permutation seed.
        repeats: permutations per column (the mean loss is kept).

    Returns:
        Column to mean loss of the metric when the column is shuffled (>= 0 matters; <= 0 does not).
    """
    X, y = holdout.drop(columns=[target]), holdout[target].to_numpy()
    base = compute_metrics(task, model, X, y)
    name = metric if metric in base else ("accuracy" if task == "classification" else "rmse")
    sign = 1.0 if higher_is_better(name) else -1.0
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for col in columns:
        if col not in X.columns:
            continue
        losses = []
        for _ in range(repeats):
            shuffled = X.assign(**{col: X[col].to_numpy()[rng.permutation(len(X))]})
            losses.append(sign * (base[name] - compute_metrics(task, model, shuffled, y)[name]))
        out[col] = float(np.mean(losses))
    return out


def cached_importance(path: Path, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The importance stored at `path`, computing and storing it the first time (once per champion)."""
    if path.exists():
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    value = compute()
    write_json_atomic(path, value)
    return value


# ---------------------------------------------------------------- performance
def add_performance(report: DriftReport, current: pd.DataFrame, target: str, task_type: str,
                    load_model: Callable[[], Any]) -> DriftReport:
    """The report with the champion's metrics on the current rows that carry labels (a batch with labels).

    Args:
        report: the drift check.
        current: the current window.
        target: the label column; rows where it is missing are not scored.
        task_type: classification or regression.
        load_model: returns the champion; called only when there are labelled rows.

    Returns:
        `report` unchanged when the window is too small or has no labels, else a copy with `performance`.
    """
    if not report.sufficient or target not in current.columns or not current[target].notna().any():
        return report
    labelled = current[current[target].notna()]
    return replace(report, performance=compute_metrics(task_type, load_model(), labelled, labelled[target].to_numpy()))


class _Logged:
    """What `compute_metrics` needs from a model, answered from logged predictions (no model is run)."""

    def __init__(self, pred: np.ndarray, classes: list[str] | None):
        self._pred = pred
        if classes is not None:
            self.classes_ = np.array(classes, dtype=object)

    def predict(self, X: Any) -> np.ndarray:
        return self._pred[np.asarray(X)]


class _LoggedProba(_Logged):
    def __init__(self, pred: np.ndarray, classes: list[str], proba: np.ndarray):
        super().__init__(pred, classes)
        self._proba = proba

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._proba[np.asarray(X)]


def label_column(labelled: pd.DataFrame) -> str | None:
    """The label column of `read_labelled_predictions` (named after the target; the one before `label_ts`)."""
    cols = list(labelled.columns)
    return cols[cols.index("label_ts") - 1] if "label_ts" in cols and cols.index("label_ts") > 0 else None


def _class_order(names: list[str]) -> list[str]:
    def key(name: str) -> tuple:
        try:
            return (0, float(name), "")
        except ValueError:
            return (1, 0.0, name)

    return sorted(set(names), key=key)


def logged_metrics(labelled: pd.DataFrame, task: str, label: str | None = None) -> tuple[dict[str, float], dict[str, int]]:
    """The evaluation module's metrics on logged predictions joined with their labels.

    Labels are compared with the logged `prediction` (both endpoints log the label). For
    classification, roc_auc and log_loss come from the `proba_<class>` columns, on the rows
    that have them (/predict_proba traffic).

    Returns:
        (metric -> value, metric -> rows it was computed on); empty when nothing is labelled.
    """
    label = label or label_column(labelled)
    if label is None or labelled.empty:
        return {}, {}
    rows = labelled[labelled[label].notna() & labelled["prediction"].notna()].reset_index(drop=True)
    if rows.empty:
        return {}, {}
    if task == "regression":
        y = rows[label].astype(float).to_numpy()
        m = compute_metrics(task, _Logged(rows["prediction"].astype(float).to_numpy(), None), np.arange(len(rows)), y)
        return m, {k: len(rows) for k in m}
    y = np.array([label_text(v) for v in rows[label]], dtype=object)
    pred = np.array([label_text(v) for v in rows["prediction"]], dtype=object)
    proba_cols = [c for c in rows.columns if c.startswith("proba_")]
    classes = _class_order([c[len("proba_"):] for c in proba_cols] + list(y) + list(pred))
    metrics = compute_metrics(task, _Logged(pred, classes), np.arange(len(rows)), y)
    counts = {k: len(rows) for k in metrics}
    if proba_cols:
        have = rows[proba_cols].notna().all(axis=1).to_numpy()
        if have.any():
            by_class = {c[len("proba_"):]: c for c in proba_cols}
            proba = np.column_stack([rows.loc[have, by_class[c]].to_numpy(float) if c in by_class else np.zeros(have.sum())
                                     for c in classes])
            sub = compute_metrics(task, _LoggedProba(pred[have], classes, proba), np.arange(int(have.sum())), y[have])
            for k in ("roc_auc", "log_loss"):
                if k in sub:
                    metrics[k], counts[k] = sub[k], int(have.sum())
    return metrics, counts


@dataclass(frozen=True)
class PerformanceVerdict:
    """Live performance of the champion on labelled predictions, against its floor and its holdout value."""

    metric: str
    value: float | None
    rows: int
    sufficient: bool
    degraded: bool
    champion_value: float | None
    checks: tuple[RuleCheck, ...]
    metrics: dict[str, float]
    reason: str

    def to_text(self) -> str:
        return f"performance: {'DEGRADED' if self.degraded else 'ok' if self.sufficient else 'no verdict'} ({self.reason})"

    def to_dict(self) -> dict:
        return asdict(self)


def performance_metric(spec: PerformanceConfig, primary_metric: str) -> str:
    """`monitoring.performance.metric`, default the gates' primary metric."""
    return spec.metric or primary_metric


def metric_standard_error(labelled: pd.DataFrame, task: str, metric: str) -> float | None:
    """The standard error of `metric` on logged predictions with labels (`read_labelled_predictions`)."""
    label = label_column(labelled)
    if label is None or labelled.empty:
        return None
    rows = labelled[labelled[label].notna() & labelled["prediction"].notna()]
    return sampling_error(rows[label].to_numpy(), rows["prediction"].to_numpy(), task, metric)


NOISE_METRICS = frozenset({"rmse", "mse", "mae", "accuracy"})  # means over rows: `sampling_error` knows them


def sampling_error(y: np.ndarray, pred: np.ndarray, task: str, metric: str) -> float | None:
    """The standard error of `metric` over these rows (its sampling noise), for the metrics that are means
    over rows: rmse and mse (delta method on the squared errors), mae, accuracy. None for the others, or
    with fewer than 2 rows."""
    n = len(y)
    if n < 2:
        return None
    if task == "regression" and metric in ("rmse", "mse", "mae"):
        err = np.asarray(pred, dtype=float) - np.asarray(y, dtype=float)
        if metric == "mae":
            return float(np.std(np.abs(err), ddof=1) / np.sqrt(n))
        sq = err ** 2
        se_mse = float(np.std(sq, ddof=1) / np.sqrt(n))
        if metric == "mse":
            return se_mse
        rmse = float(np.sqrt(sq.mean()))
        return se_mse / (2 * rmse) if rmse > 0 else None
    if task == "classification" and metric == "accuracy":
        hit = np.array([label_text(a) == label_text(b) for a, b in zip(y, pred)], dtype=float)
        p = float(hit.mean())
        return float(np.sqrt(p * (1 - p) / n))
    return None


def decide_performance(metrics: dict[str, float], rows: dict[str, int], metric: str, champion_value: float | None,
                       spec: PerformanceConfig, standard_error: float | None = None) -> PerformanceVerdict:
    """Whether the champion's live `metric` has degraded.

    Rules (any one is degradation): `floor` (worst acceptable value: a minimum, or a maximum for
    log_loss/rmse/mae), `max_drop` (allowed drop below the champion's holdout value, in the
    metric's units), `max_relative_drop` (the same as a share of the holdout value). Fewer than
    `min_labelled_rows` labelled rows gives no verdict. With the live value's `standard_error`, the
    two drop rules fire only past their limit by more than `noise_z` of it: a window of a few hundred
    rows of a heavy-tailed target differs from the holdout by chance more than 10%.

    Args:
        metrics: metric -> value on the labelled rows (`logged_metrics`).
        rows: metric -> rows it was computed on.
        metric: the metric watched.
        standard_error: the live value's (`metric_standard_error`), None when unknown.
        champion_value: the champion's holdout value (MLflow `test_<metric>`), None when unknown.
        spec: `monitoring.performance`.

    Returns:
        A `PerformanceVerdict` explaining each rule.
    """
    n = int(rows.get(metric, 0))
    value = metrics.get(metric)
    base = dict(metric=metric, value=value, rows=n, champion_value=champion_value, metrics=dict(metrics))
    if value is None or n < spec.min_labelled_rows:
        why = (f"{n} labelled rows with {metric} in the window, need {spec.min_labelled_rows} "
               "(monitoring.performance.min_labelled_rows)")
        if value is None and metric in ("roc_auc", "log_loss") and metrics:
            why += f"; {metric} needs /predict_proba traffic (probabilities)"
        return PerformanceVerdict(sufficient=False, degraded=False, checks=(), reason=f"no verdict: {why}", **base)
    higher = higher_is_better(metric)
    worse = (lambda v, limit: v < limit) if higher else (lambda v, limit: v > limit)
    sign = -1.0 if higher else 1.0
    checks = []
    if spec.floor is not None:
        checks.append(RuleCheck("floor", worse(value, spec.floor),
                                f"{metric} {value:.4f} vs floor {spec.floor:g} ({'min' if higher else 'max'})"))
    margin = spec.noise_z * standard_error if standard_error and spec.noise_z else 0.0
    noise = (f" {'-' if higher else '+'} {spec.noise_z:g} x standard error {standard_error:.4f} (sampling noise "
             f"of {n} rows)") if margin else ""
    if champion_value is not None:
        if spec.max_drop is not None:
            limit = champion_value + sign * (spec.max_drop + margin)
            checks.append(RuleCheck("max_drop", worse(value, limit),
                                    f"{metric} {value:.4f} vs champion holdout {champion_value:.4f} "
                                    f"{'-' if higher else '+'} {spec.max_drop:g}{noise} = {limit:.4f}"))
        if spec.max_relative_drop is not None:
            limit = champion_value + sign * (spec.max_relative_drop * abs(champion_value) + margin)
            checks.append(RuleCheck("max_relative_drop", worse(value, limit),
                                    f"{metric} {value:.4f} vs champion holdout {champion_value:.4f} "
                                    f"{'-' if higher else '+'} {spec.max_relative_drop:.0%}{noise} = {limit:.4f}"))
    fired = [c for c in checks if c.fired]
    where = f" on {n} labelled rows"
    if fired:
        reason = "degraded" + where + ": " + "; ".join(f"[{c.rule}] {c.detail}" for c in fired)
    elif checks:
        reason = "ok" + where + ": " + "; ".join(f"[{c.rule}] {c.detail}" for c in checks)
    else:
        reason = (f"{metric} {value:.4f}{where}; no rule applies (set monitoring.performance.floor, or the champion "
                  f"records no test_{metric} for max_drop)")
    return PerformanceVerdict(sufficient=True, degraded=bool(fired), checks=tuple(checks), reason=reason, **base)


def check_performance(windows: Windows, spec: PerformanceConfig, metric: str, task: str, target: str,
                      load_model: Callable[[], Any]) -> PerformanceVerdict:
    """The performance verdict of a window: logged predictions with labels, or a batch's target column."""
    noise = None
    if windows.labelled_path:
        labelled = pd.read_parquet(windows.labelled_path)
        metrics, rows = logged_metrics(labelled, task)
        noise = metric_standard_error(labelled, task, metric)
    else:
        current = pd.read_parquet(windows.current_path)
        if target in current.columns and current[target].notna().any():
            labelled = current[current[target].notna()]
            model, features = load_model(), labelled.drop(columns=["prediction"], errors="ignore")
            metrics = compute_metrics(task, model, features, labelled[target].to_numpy())
            rows = {k: len(labelled) for k in metrics}
            if metric in NOISE_METRICS:  # (a second predict of the batch: milliseconds)
                noise = sampling_error(labelled[target].to_numpy(), np.asarray(model.predict(features)), task, metric)
        else:
            metrics, rows = {}, {}
    return decide_performance(metrics, rows, metric, windows.champion_metrics.get(f"test_{metric}"), spec, noise)


def check_summary(project: str, windows: Windows, report: DriftReport, perf: PerformanceVerdict,
                  drift_signal: Any, perf_signal: Any) -> str:
    """The text `sluice drift` and the flow's log print."""
    lines = [f"{project}: champion v{windows.champion_version}, {windows.window} ({windows.current_rows} rows)",
             report.to_text(), f"  signal: {drift_signal.reason}", perf.to_text(), f"  signal: {perf_signal.reason}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- retrain cooldown
@dataclass(frozen=True)
class RetrainPermit:
    """Whether a retrain may start now, and why not."""

    allowed: bool
    reason: str


def retrain_state_path(home: Path, project: str) -> Path:
    return home / "monitoring" / project / "retrain_state.json"


def drift_state_path(home: Path, project: str) -> Path:
    return home / "monitoring" / project / "drift_state.json"


def performance_state_path(home: Path, project: str) -> Path:
    return home / "monitoring" / project / "performance_state.json"


def start_retrain(state_path: Path, cooldown_minutes: float, reason: str, now: float | None = None,
                  enabled: bool = True, force: bool = False) -> RetrainPermit:
    """Allow a retrain unless retraining is off or one started within the cooldown; record the start.

    Args:
        state_path: the project's retrain state file (see `retrain_state_path`).
        cooldown_minutes: the `monitoring.cooldown_minutes` setting.
        reason: why this retrain was asked for; stored with the start.
        now: the time (epoch seconds); default the clock.
        enabled: the `monitoring.retrain` setting; False refuses every retrain (alerts only).
        force: a person asked (a run started by hand): the cooldown, which debounces alerts, does not apply.

    Returns:
        A `RetrainPermit`; a refused one leaves the state untouched.
    """
    if not enabled:
        return RetrainPermit(False, f"skipped: monitoring.retrain is false (alerts only, no retraining); asked because {reason}")
    now = time.time() if now is None else now
    state = _read_state(state_path)
    last = state.get("started_at")
    if last is not None and now - last < cooldown_minutes * 60 and not force:
        return RetrainPermit(False, f"skipped: last retrain started {now - last:.0f}s ago (cooldown {cooldown_minutes} "
                                    "min; start it with force=true to retrain now)")
    write_json_atomic(state_path, {**state, "started_at": now, "reason": reason})
    return RetrainPermit(True, "allowed")


def finish_retrain(state_path: Path, outcome: str, now: float | None = None) -> None:
    """Record how the retrain ended (promoted, unchanged, rejected)."""
    state = _read_state(state_path)
    write_json_atomic(state_path, {**state, "finished_at": time.time() if now is None else now, "outcome": outcome})


def _read_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


