"""Task: tune the candidate models with Optuna and select the best one on the validation split."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from sluicegate import tuning
from sluicegate.config import CandidateConfig
from sluicegate.features import FeatureSet
from sluicegate.tuning import SelectionResult
from tasks._common import artifact_key, content_cache, digest, settings, tracker


def _key(p: dict) -> str:
    return digest(p["features"], p["candidates"], p["task_type"], p["metric"], p["seed"], p["data_fingerprint"])


@task(name="select-model", cache_key_fn=content_cache(_key), persist_result=True)
def select_model(features: FeatureSet, candidates: list[CandidateConfig], task_type: str, metric: str,
                    seed: int, project: str, data_fingerprint: str) -> SelectionResult:
    """Search each candidate's hyperparameters (pruned, parallel, resumable) and keep the best on validation."""
    s = settings()
    out = s.runs_dir / project / "tuning" / digest(features, candidates, task_type, metric, seed, data_fingerprint)
    result = tuning.select_model(features, candidates, task_type, metric, seed, project, data_fingerprint,
                          s.optuna_storage, out)
    for t in result.tunings:
        tracker().log_trials(project, t.study_name, t.candidate, t.metric, [asdict(x) for x in t.trials],
                             t.best_params, list(t.plots.values()))
    create_markdown_artifact(result.to_markdown(), key=artifact_key(project, "model-selection"),
                             description=f"{project}: {result.summary}")
    for label, path in result.plots.items():
        create_link_artifact(Path(path).as_uri(), link_text=f"{label} ({Path(path).name})",
                             key=artifact_key(project, f"tuning-{label}"), description=f"Optuna {label}")
    print(result.summary)
    return result
