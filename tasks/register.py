"""Tasks: log and register the candidate, decide on the gates, promote on a pass only."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact

from sluicegate.config import GatesConfig
from sluicegate.evaluation import EvaluationReport
from sluicegate import gates
from sluicegate.gates import GateDecision, same_model_decision
from sluicegate.tracking import ModelRecord
from sluicegate.training import ChampionScore, TrainResult, load_model_file
from tasks._common import artifact_key, tracker, transient_only


@task(name="register-candidate", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=transient_only)
def register_candidate(
    project: str, key: str, trained: TrainResult, report: EvaluationReport, test_path: str,
    tags: dict[str, str], artifacts: dict[str, str], reason: str | None = None,
) -> ModelRecord:
    """Register the candidate once per candidate key (a re-run of the same inputs reuses it)."""
    tr = tracker()
    existing = tr.find_candidate(project, key)
    if existing is not None:
        print(f"candidate unchanged: reusing {project} v{existing.version}")
        return existing
    model = load_model_file(trained.model_path)
    example = pd.read_parquet(test_path).drop(columns=[tags["sluice.target"]]).head(5)
    params = {"model.kind": trained.kind, **{f"model.{k}": v for k, v in trained.params.items()},
              "fit_seconds": round(trained.fit_seconds, 3), **trained.extra}
    metrics = {**report.flat(), **report.flat_slices()}
    # the holdout is what the drift check compares the champion's live predictions (and importance) with
    all_tags = {**tags, "sluice.candidate_key": key, "sluice.reason": reason or "manual", "sluice.holdout": test_path}
    return tr.register_candidate(project, model, example, params, metrics, all_tags, artifacts,
                            run_name=f"{project}-{trained.kind}")


@task(name="decide-promotion")
def decide_promotion(record: ModelRecord, report: EvaluationReport, champion: ChampionScore, spec: GatesConfig,
                     project: str) -> GateDecision:
    """Apply the gates; publish and store every verdict with the run."""
    if champion.version is not None and champion.version == record.version:
        # an unchanged re-run: the champion's own verdict stays as it was recorded
        decision = same_model_decision(record.version)
    else:
        decision = gates.decide_promotion(report, champion.metrics, champion.version, spec, champion.error)
        tracker().record_decision(record, decision.to_dict())
    create_markdown_artifact(decision.to_markdown(), key=artifact_key(project, "gate-decision"),
                             description=f"{project} v{record.version}: {decision.verdict}")
    print(decision.summary)
    return decision


@task(name="promote-model", retries=0)
def promote_model(record: ModelRecord, decision: GateDecision) -> str:
    """Move `champion` to the candidate, compare-and-set against the version the gates saw."""
    if not decision.promote:
        raise ValueError("promote called on a failing decision")
    tracker().promote(record.project, record.version, decision.champion_version)
    return f"models:/{record.project}@champion"
