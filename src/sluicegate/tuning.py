"""Hyperparameter search and model selection with Optuna (the only Optuna import): pruned, parallel, resumable."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sqlite3
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sluicegate.config import LOWER_IS_BETTER, CandidateConfig, SearchParam, TuningConfig
from sluicegate.errors import TrainingError
from sluicegate.evaluation import compute_metrics
from sluicegate.features import FeatureSet, load_arrays
from sluicegate.trainers.registry import get_trainer

log = logging.getLogger(__name__)

# How many boosting rounds / epochs pass between pruning checks when the config gives none:
# each check is a storage transaction (~7 ms on SQLite).
REPORT_EVERY = {"xgboost": 10, "torch": 2}
# The parameter that sets a trial's CPU threads, so parallel trials share the cores.
THREAD_PARAM = {"xgboost": "n_jobs", "torch": "num_threads"}
CPU_THREADS = 2


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored: what was tried, how it ended, and why it failed if it did."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    duration_s: float | None
    last_step: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class TuningResult:
    """A finished (or resumed and finished) study of one candidate."""

    candidate: str
    kind: str
    study_name: str
    storage: str
    metric: str
    direction: str
    best_params: dict[str, Any]
    best_value: float
    trials: tuple[TrialRecord, ...]
    resumed_from: int
    seconds: float
    plots: dict[str, str] = field(default_factory=dict)

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)


@dataclass(frozen=True)
class CandidateScore:
    """One candidate in the comparison: its validation score and the parameters that got it."""

    name: str
    kind: str
    value: float | None
    params: dict[str, Any]
    tuned: bool
    trials: str = ""
    error: str | None = None


@dataclass(frozen=True)
class SelectionResult:
    """The winning model section and parameters, and the comparison that chose it."""

    name: str
    spec: Any
    params: dict[str, Any]
    metric: str
    value: float
    scores: tuple[CandidateScore, ...]
    tunings: tuple[TuningResult, ...]
    tied: tuple[str, ...] = ()

    @property
    def plots(self) -> dict[str, str]:
        return {f"{t.candidate} {name}": path for t in self.tunings for name, path in t.plots.items()}

    @property
    def summary(self) -> str:
        text = f"selected {self.name} ({self.metric} {self.value:.4f} on validation) out of {len(self.scores)} candidate(s)"
        if self.tied:
            text += (f"; tied with {', '.join(self.tied)} (within {TIE_TOLERANCE:g}): the first in the config's order "
                     f"wins")
        return text

    def to_markdown(self) -> str:
        """The comparison table for a Prefect artifact."""
        lines = [
            f"## Model selection on validation {self.metric} "
            f"({'lower' if self.metric in LOWER_IS_BETTER else 'higher'} is better)",
            "",
            f"| candidate | kind | tuned | trials (complete/pruned/failed) | valid {self.metric} | parameters | selected |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in self.scores:
            value = f"{s.value:.4f}" if s.value is not None else f"failed: {_md(s.error or '')}"
            params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(s.params.items())) or "as configured"
            lines.append(f"| {s.name} | {s.kind} | {'yes' if s.tuned else 'no'} | {s.trials or '-'} | {value} "
                         f"| {_md(params)} | {'**yes**' if s.name == self.name else ''} |")
        for t in self.tunings:
            lines.append(f"\nStudy `{t.study_name}` ({t.candidate}): {len(t.trials)} trials, "
                         f"{t.resumed_from} from an earlier run, {t.seconds:.1f}s this run.")
        if self.tied:
            lines.append(f"\nTie: {self.name} and {', '.join(self.tied)} scored the same (within {TIE_TOLERANCE:g}); "
                         f"the first in the config's order (`model`, then `candidates`) was selected.")
        lines.append("\nCandidates tuned on the validation split were chosen on the rows they are compared on, "
                     "so their scores lean optimistic; the holdout gates decide promotion.")
        return "\n".join(lines)


# ---------------------------------------------------------------- search spaces
def resolve_search_space(spec: Any, tuning: TuningConfig, task: str) -> dict[str, SearchParam]:
    """The configured search space, or the model kind's default one."""
    if tuning.search_space:
        return dict(tuning.search_space)
    raw = get_trainer(spec.kind).default_search_space(spec, task)
    return {k: SearchParam.model_validate(v) for k, v in raw.items()}


def suggest_params(trial: Any, space: dict[str, SearchParam]) -> dict[str, Any]:
    """Ask an Optuna trial for one value per parameter."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        if p.type == "categorical":
            out[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.type == "int":
            out[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[name] = trial.suggest_float(name, float(p.low), float(p.high), step=p.step, log=p.log)
    return out


def sample_search_space(space: dict[str, SearchParam], n: int, seed: int) -> list[dict[str, Any]]:
    """`n` random draws from a search space (in memory), e.g. to check that every draw is valid."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(n):
        trial = study.ask()
        draws.append(suggest_params(trial, space))
        study.tell(trial, 0.0)
    return draws


# ---------------------------------------------------------------- studies
def study_name_for(project: str, data_fingerprint: str, candidate: CandidateConfig, task: str, metric: str,
                   seed: int) -> str:
    """Same data, model section, search space and objective: same study, so a crashed run resumes it.

    The budget, sampler, pruner and worker count are left out on purpose: raising `n_trials`
    continues the study instead of starting over.
    """
    tuning = candidate.tuning or TuningConfig()
    blob = json.dumps({
        "data": data_fingerprint, "model": candidate.model.model_dump(mode="json"),
        "space": {k: v.model_dump(mode="json") for k, v in sorted((tuning.search_space or {}).items())},
        "task": task, "metric": metric, "cv": tuning.cv_folds, "seed": seed,
    }, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{project}-{candidate.name}-{digest}")


def open_storage(url: str):
    """An Optuna RDB storage; SQLite gets its folder, WAL mode and a busy timeout for parallel trials."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):].split("?")[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path, timeout=30) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 30}}
    # Heartbeats let a later run mark trials of a killed process as failed instead of running forever.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120, **kwargs)


def _sampler(tuning: TuningConfig, seed: int):
    import optuna

    if tuning.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    budget = tuning.n_trials or 30
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=max(2, min(10, budget // 3)), constant_liar=tuning.n_workers > 1
    )


def _pruner(tuning: TuningConfig, report_every: int):
    import optuna

    if tuning.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if tuning.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=report_every, reduction_factor=3)
    if tuning.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=report_every, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def score_estimator(task: str, estimator: Any, X: np.ndarray, y: np.ndarray, metric: str) -> float:
    """One metric of a fitted estimator; an undefined or non-finite value is an error."""
    scores = compute_metrics(task, estimator, X, y)
    value = scores.get(metric)
    if value is None or not math.isfinite(value):
        raise ValueError(f"{metric} is undefined on these rows (got {value!r})")
    return float(value)


def _cv_score(trainer, spec, task, X, y, seed, params, metric, folds: int, on_fold: Callable | None) -> float:
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (StratifiedKFold if task == "classification" else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for i, (tr, va) in enumerate(splitter.split(X, y)):
        est = trainer.fit(spec, task, X[tr], y[tr], X[va], y[va], seed, params)
        scores.append(score_estimator(task, est, X[va], y[va], metric))
        if on_fold is not None:
            on_fold(i, float(np.mean(scores)))
    return float(np.mean(scores))


def tune_model(
    features: FeatureSet,
    candidate: CandidateConfig,
    task: str,
    metric: str,
    seed: int,
    study_name: str,
    storage: str,
    out_dir: Path | None = None,
    callbacks: Sequence[Callable] = (),
) -> TuningResult:
    """Search one candidate's hyperparameters; resume its study if an earlier run left one.

    Each trial fits on the training split and scores `metric` on the validation split (or
    k-fold CV over train + validation when `cv_folds` >= 2). Trainers report a validation
    loss every few rounds or epochs so the pruner can stop weak trials early. A trial that
    raises is recorded as failed and the study goes on.

    Args:
        features: the transformed splits.
        candidate: the model section and its effective tuning section.
        task: classification or regression.
        metric: the gates' primary metric; its direction comes from `LOWER_IS_BETTER`.
        seed: seeds the sampler and every fit.
        study_name: from `study_name_for`; an existing study of that name is continued.
        storage: SQLAlchemy URL, used when the tuning section names none.
        out_dir: where the optimisation history and parameter importances HTML go (None: no plots).
        callbacks: extra Optuna callbacks `(study, frozen_trial)`, e.g. to stop a study.

    Returns:
        A `TuningResult` with the best parameters and every trial of the study.

    Raises:
        TrainingError: no trial completed; the message shows the first trial error.
    """
    import optuna

    tuning = candidate.tuning or TuningConfig()
    spec = candidate.model
    trainer = get_trainer(spec.kind)
    space = resolve_search_space(spec, tuning, task)
    arrays = load_arrays(features.arrays_path)
    X_tr, y_tr, X_va, y_va = arrays["X_train"], arrays["y_train"], arrays["X_valid"], arrays["y_valid"]
    direction = _direction(metric)
    sign = -1.0 if direction == "maximize" else 1.0  # trainers report losses; the pruner compares in the study's direction
    every = tuning.report_every or REPORT_EVERY.get(spec.kind, 5)
    # parallel trials split the cores instead of each starting a full thread pool
    threads = ({THREAD_PARAM[spec.kind]: max(1, CPU_THREADS // tuning.n_workers)}
               if spec.kind in THREAD_PARAM and tuning.n_workers > 1 else {})
    url = tuning.storage or storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(url)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    try:
        existing = optuna.load_study(study_name=study_name, storage=store)
        done_before = len(existing.get_trials(deepcopy=False, states=finished))
    except KeyError:
        done_before = 0
    study = optuna.create_study(
        study_name=study_name, storage=store, direction=direction, load_if_exists=True,
        # a resumed study gets a fresh sampler seed, or TPE's random start-up would repeat earlier draws
        sampler=_sampler(tuning, seed + done_before), pruner=_pruner(tuning, every),
    )
    study.set_user_attr("candidate", candidate.name)
    study.set_user_attr("metric", metric)

    def objective(trial) -> float:
        params = suggest_params(trial, space)

        def report(step: int, loss: float) -> None:
            if (step + 1) % every:
                return
            trial.report(sign * loss, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        def report_fold(fold: int, running: float) -> None:
            trial.report(running, fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {fold}")

        try:
            if tuning.cv_folds >= 2:
                X = np.concatenate([X_tr, X_va])
                y = np.concatenate([y_tr, y_va])
                return _cv_score(trainer, spec, task, X, y, seed, {**params, **threads}, metric,
                                 tuning.cv_folds, report_fold)
            est = trainer.fit(spec, task, X_tr, y_tr, X_va, y_va, seed, {**params, **threads}, report=report)
            return score_estimator(task, est, X_va, y_va, metric)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise

    remaining = None if tuning.n_trials is None else max(0, tuning.n_trials - done_before)
    started = time.perf_counter()
    if done_before:
        log.info("study %s: resuming after %d finished trials", study_name, done_before)
    if remaining != 0:
        study.optimize(objective, n_trials=remaining, timeout=tuning.timeout_s, n_jobs=tuning.n_workers,
                       catch=(Exception,), callbacks=list(callbacks), gc_after_trial=False)
    seconds = time.perf_counter() - started

    trials = tuple(_record(t) for t in study.get_trials(deepcopy=False))
    complete = [t for t in trials if t.state == "COMPLETE"]
    if not complete:
        failed = [t for t in trials if t.state == "FAIL"]
        first = failed[0].error if failed and failed[0].error else "no trial completed"
        raise TrainingError(
            f"tuning {candidate.name}: none of {len(trials)} trials completed "
            f"({len(failed)} failed, {sum(t.state == 'PRUNED' for t in trials)} pruned); "
            f"first error: {first}"
        )
    best = study.best_trial
    plots = write_plots(study, out_dir) if out_dir is not None else {}
    result = TuningResult(
        candidate=candidate.name, kind=spec.kind, study_name=study_name, storage=_redact(url), metric=metric,
        direction=direction, best_params=dict(best.params), best_value=float(best.value), trials=trials,
        resumed_from=done_before, seconds=seconds, plots=plots,
    )
    log.info("tuned %s: %d trials (%d complete, %d pruned, %d failed) in %.1fs, best %s %.4f",
             candidate.name, len(trials), len(complete), result.count("PRUNED"), result.count("FAIL"),
             seconds, metric, result.best_value)
    return result


def _record(t: Any) -> TrialRecord:
    """A trial as plain data. A pruned trial has no score: Optuna stores its last intermediate report
    (a sign-flipped validation loss, or a running CV mean) as its value, which is not the metric."""
    duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    scored = t.value is not None and t.state.name == "COMPLETE"
    return TrialRecord(
        number=t.number, state=t.state.name, value=float(t.value) if scored else None,
        params=dict(t.params), duration_s=duration, last_step=t.last_step, error=t.user_attrs.get("error"),
    )


def _redact(url: str) -> str:
    return re.sub(r"://([^/:@\s]+):[^/@\s]+@", r"://\1:***@", url)


def write_plots(study: Any, out_dir: Path) -> dict[str, str]:
    """Optimisation history and parameter importances as HTML; skipped (logged) without plotly."""
    try:
        import optuna.visualization as vis
    except ImportError as exc:  # pragma: no cover - optuna ships the module
        log.info("skipping tuning plots: %s", exc)
        return {}
    if not vis.is_available():
        log.info("skipping tuning plots: plotly is not installed")
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    makers = {"history": vis.plot_optimization_history, "importances": vis.plot_param_importances}
    for name, make in makers.items():
        path = out_dir / f"{study.study_name}-{name}.html"
        try:
            # plotly.js is written once next to the pages, so they open offline
            make(study).write_html(str(path), include_plotlyjs="directory")
            paths[name] = str(path)
        except Exception as exc:  # importances need two or more complete trials
            log.info("skipping the %s plot of %s: %s", name, study.study_name, exc)
    return paths


# ---------------------------------------------------------------- selection
def select_model(
    features: FeatureSet,
    candidates: Sequence[CandidateConfig],
    task: str,
    metric: str,
    seed: int,
    project: str,
    data_fingerprint: str,
    storage: str,
    out_dir: Path | None = None,
) -> SelectionResult:
    """Tune every candidate that has tuning enabled, score the rest as configured, keep the best.

    All candidates are compared on validation `metric`. A candidate tuned with k-fold CV is
    refitted once with its best parameters and scored on the validation split like the others.
    A failing candidate is listed with its error; the others still compete.

    Args:
        features: the transformed splits.
        candidates: from `ProjectConfig.model_candidates()`: `model` first, then `candidates`.
        task: classification or regression.
        metric: the gates' primary metric.
        seed: the project seed.
        project: names the studies.
        data_fingerprint: names the studies (new data, new study).
        storage: default Optuna storage URL (settings).
        out_dir: where plots go.

    Returns:
        A `SelectionResult`; its `spec` and `params` go to the train step.

    Raises:
        TrainingError: every candidate failed; the message shows each first error.
    """
    arrays = load_arrays(features.arrays_path)
    X_tr, y_tr, X_va, y_va = arrays["X_train"], arrays["y_train"], arrays["X_valid"], arrays["y_valid"]
    scores: list[CandidateScore] = []
    tunings: list[TuningResult] = []
    for cand in candidates:
        trainer = get_trainer(cand.model.kind)
        tuned = cand.tuning is not None and cand.tuning.enabled
        try:
            if tuned:
                name = study_name_for(project, data_fingerprint, cand, task, metric, seed)
                result = tune_model(features, cand, task, metric, seed, name, storage, out_dir)
                tunings.append(result)
                value, params = result.best_value, result.best_params
                if cand.tuning.cv_folds >= 2:
                    est = trainer.fit(cand.model, task, X_tr, y_tr, X_va, y_va, seed, params)
                    value = score_estimator(task, est, X_va, y_va, metric)
                counts = f"{result.count('COMPLETE')}/{result.count('PRUNED')}/{result.count('FAIL')}"
                scores.append(CandidateScore(cand.name, cand.model.kind, value, params, True, counts))
            else:
                est = trainer.fit(cand.model, task, X_tr, y_tr, X_va, y_va, seed)
                value = score_estimator(task, est, X_va, y_va, metric)
                scores.append(CandidateScore(cand.name, cand.model.kind, value, {}, False))
        except Exception as exc:
            msg = str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}"
            log.warning("candidate %s failed: %s", cand.name, msg)
            scores.append(CandidateScore(cand.name, cand.model.kind, None, {}, tuned, error=msg))
    ok = [s for s in scores if s.value is not None]
    if not ok:
        raise TrainingError("every candidate failed: " + "; ".join(f"{s.name}: {s.error}" for s in scores))
    best, tied = pick_best(ok, metric)
    spec = next(c.model for c in candidates if c.name == best.name)
    result = SelectionResult(best.name, spec, dict(best.params), metric, float(best.value), tuple(scores), tuple(tunings),
                             tied=tuple(s.name for s in tied))
    log.info(result.summary)
    return result


TIE_TOLERANCE = 1e-12  # validation scores this close (absolute) are a tie


def pick_best(ok: Sequence[CandidateScore], metric: str) -> tuple[CandidateScore, list[CandidateScore]]:
    """The best score, and the others tied with it.

    Tie rule: scores within `TIE_TOLERANCE` of the best are equal, and the candidate listed
    first in the config wins (`model` before `candidates`, then their YAML order): list the
    simpler or faster family first to prefer it. The selection summary names the tie.
    """
    lower = metric in LOWER_IS_BETTER
    top = min(s.value for s in ok) if lower else max(s.value for s in ok)
    level = [s for s in ok if abs(s.value - top) <= TIE_TOLERANCE]  # config order kept
    return level[0], level[1:]


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- shared studies (scale-out, issue 6)
# Added for flows/scale_out.py: several processes or machines run `tune_model` on one study
# name and one RDB storage; this callback makes each stop once the study holds the budget.
def stop_at_total_trials(total: int) -> Callable:
    """An Optuna callback that stops this process's `optimize` once the shared study has `total` trials.

    Trials still running in other workers count, so the study ends close to `total` (at most
    one trial per worker over, when two workers ask at the same instant).
    """
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
              optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING)

    def callback(study, trial) -> None:
        if len(study.get_trials(deepcopy=False, states=states)) >= total:
            study.stop()

    return callback
