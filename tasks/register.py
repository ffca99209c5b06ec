"""Tasks: log and register the candidate, decide on the gates, promote on a pass only."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact

from sluicegate import audit, gates
from sluicegate.config import GatesConfig
from sluicegate.evaluation import EvaluationReport
from sluicegate.gates import GateDecision, same_model_decision
from sluicegate.runkey import RUN_KEY_TAG
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
    for line in tr.recover_interrupted(project, key):  # what a killed earlier run left half-done
        print(f"recovered: {line}")
    existing = tr.find_candidate(project, key)
    if existing is not None:
        if tr.adopt_unfinished(existing):
            print(f"adopting {project} v{existing.version}: registered by an interrupted run, no verdict yet")
        else:
            print(f"candidate unchanged: reusing {project} v{existing.version}")
        run_key = tags.get(RUN_KEY_TAG)
        if run_key and existing.tags.get(RUN_KEY_TAG) != run_key:  # these inputs give this version: say so for the next run
            tr.set_version_tags(project, existing.version, {RUN_KEY_TAG: run_key})
        return existing
    model = load_model_file(trained.model_path)
    example = pd.read_parquet(test_path).drop(columns=[tags["sluice.target"]]).head(5)
    params = {"model.kind": trained.kind, **{f"model.{k}": v for k, v in trained.params.items()},
              "fit_seconds": round(trained.fit_seconds, 3), **trained.extra}
    metrics = {**report.flat(), **report.flat_slices()}
    # the holdout: the drift check compares the champion's live predictions (and importance) with it,
    # and packaging compares the ONNX export with the native pipeline on it
    all_tags = {**tags, "sluice.candidate_key": key, "sluice.reason": reason or "manual", "sluice.holdout": test_path,
                "sluice.test_path": test_path}
    # on a tracking server, the drift check of another machine reads these from the version's run
    data_files = {"snapshot.parquet": tags.get("sluice.data_snapshot", ""), "holdout.parquet": test_path}
    return tr.register_candidate(project, model, example, params, metrics, all_tags, artifacts,
                                 run_name=f"{project}-{trained.kind}", data_files=data_files)


@task(name="decide-promotion")
def decide_promotion(record: ModelRecord, report: EvaluationReport, champion: ChampionScore, spec: GatesConfig,
                     project: str) -> GateDecision:
    """Apply the gates; publish and store every verdict with the run."""
    if champion.version is not None and champion.version == record.version:
        # an unchanged re-run: the champion's own verdict stays as it was recorded
        decision = same_model_decision(record.version)
    else:
        decision = gates.decide_promotion(report, champion.metrics, champion.version, spec, champion.error,
                                          project=project, candidate_version=record.version)
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


@task(name="record-outcome", retries=2, retry_delay_seconds=[2, 10])
def record_outcome(record: ModelRecord, outcome: str, summary: str, champion: str | None,
                   reason: str | None = None, approved_by: str | None = None) -> None:
    """Add the run's promotion or rejection to the audit trail (an unchanged re-run decided nothing)."""
    from tasks.events import flow_run_id

    if outcome not in ("promoted", "rejected"):
        return
    action = audit.PROMOTE if outcome == "promoted" else audit.REJECT
    details = {"source": "gates", "champion_before": champion, "run_reason": reason or "manual"}
    if approved_by:
        details["approved_by"] = approved_by
    audit.append_record(tracker(), audit.new_record(record.project, action, record.version, summary, None,
                                                    flow_run_id(), record.run_id, details))
