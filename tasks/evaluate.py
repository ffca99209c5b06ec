"""Tasks: score the candidate on every split, and the champion on the same holdout."""

from __future__ import annotations

from prefect import task

from sluicegate import training
from sluicegate.config import EvaluationConfig
from sluicegate.evaluation import EvaluationReport
from sluicegate.split import SplitResult
from sluicegate.training import ChampionScore, TrainResult, load_model_file
from tasks._common import content_cache, digest, tracker, transient_only


def _eval_key(p: dict) -> str:
    return digest(p["trained"], p["split"], p["spec"], p["task_type"], p["target"])


def _champion_key(p: dict) -> str | None:
    champ = tracker().champion(p["project"])  # the key must change whenever the champion does
    return None if champ is None else digest(p["project"], champ.version, champ.run_id, p["split"], p["task_type"], p["target"])


@task(name="evaluate-model", cache_key_fn=content_cache(_eval_key), persist_result=True)
def evaluate_model(trained: TrainResult, split: SplitResult, spec: EvaluationConfig, task_type: str, target: str) -> EvaluationReport:
    """Metrics on train, validation and holdout, plus per-slice holdout metrics."""
    report = training.evaluate_model(load_model_file(trained.model_path), task_type, target, split.train_path,
                           split.valid_path, split.test_path, list(spec.slices), spec.min_slice_rows, split.holdout)
    print((split.holdout or "holdout") + ": " + ", ".join(f"{k}={v:.4f}" for k, v in report.test.items()))
    for w in report.slice_warnings:
        print(f"warning: {w}")
    return report


@task(name="score-champion", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=transient_only,
      cache_key_fn=content_cache(_champion_key), persist_result=True)
def score_champion(project: str, split: SplitResult, task_type: str, target: str) -> ChampionScore:
    """Re-score the current champion on this run's holdout (None when there is no champion)."""
    tr = tracker()
    champ = tr.champion(project)
    if champ is None:
        return ChampionScore(None, None)
    try:
        model = tr.load_model(champ.registry_uri)
    except Exception as exc:
        return ChampionScore(champ.version, None, f"cannot load: {exc}")
    score = training.score_champion(model, champ.version, task_type, target, split.test_path)
    if score.metrics:
        print(f"champion v{champ.version} on this holdout: " + ", ".join(f"{k}={v:.4f}" for k, v in score.metrics.items()))
    return score
