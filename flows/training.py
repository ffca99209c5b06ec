"""The gated training pipeline: ingest, validate, split, features, train, evaluate, gates, register, release."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a file by Prefect's loader: make `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from sluicegate import events
from sluicegate.config import ProjectConfig, config_hash, load_config, resolve_path
from sluicegate.data import DatasetRef, dataset_tags
from sluicegate.features import FeatureSet
from sluicegate.gates import approval_required, decide_outcome
from sluicegate.runkey import RUN_KEY_TAG, run_key
from sluicegate.serving.schema import request_rules
from sluicegate.split import SplitResult
from sluicegate.stores import run_tags
from sluicegate.training import TrainingOutcome, candidate_key, training_outcome
from sluicegate.validation import ValidationReport
from tasks._common import CODE_FOLDERS, artifact_key, reap_crashed_flow_runs, recover_interrupted_runs
from tasks.approve import record_approval, require_persistent_api, wait_for_approval
from tasks.deploy import release_model
from tasks.evaluate import evaluate_model, score_champion
from tasks.events import emit
from tasks.features import build_features
from tasks.ingest import ingest_data
from tasks.register import decide_promotion, promote_model, record_outcome, register_candidate
from tasks.split import holdout_cutoff, split_data
from tasks.train import train_model
from tasks.tune import select_model
from tasks.validate import validate_data


def prepare_features(cfg: ProjectConfig) -> tuple[DatasetRef, ValidationReport, SplitResult, FeatureSet]:
    """Ingest, validate, split and build features: the cached front half every training flow shares.

    With `data.production.enabled` the snapshot holds labelled production rows, and the newest
    of those labelled after the champion's training data are held out for the gates.

    Called inside a flow; each step is a task, so a failed validation stops the calling flow.
    """
    project = cfg.project
    dataset = ingest_data(cfg.data, str(cfg.root), project)
    listed = {k: list(getattr(cfg.features, k).columns) for k in ("numeric", "categorical")
              if getattr(cfg.features, k).columns != "auto"}
    checked = validate_data(dataset, cfg.validation, cfg.data.target, cfg.task, project, listed)
    # production rows the champion trained on never enter the holdout it is compared on
    cutoff = holdout_cutoff(project) if dataset.production_rows else None
    split = split_data(dataset, cfg.split, cfg.split_method, cfg.data.target, cfg.seed, project,
                       cfg.split.time_column or cfg.data.time_column, cutoff)
    exclude = [c for c in (cfg.data.id_column, cfg.data.time_column) if c and c not in cfg.features.datetime.columns]
    return dataset, checked, split, build_features(split, cfg.features, cfg.data.target, exclude, project)


@flow(name="training-pipeline", log_prints=True)
def training_pipeline(config_path: str, overrides: list[str] | None = None, reason: str | None = None) -> TrainingOutcome:
    """Train a candidate from a project YAML and promote it only if it passes every gate.

    Reads and snapshots the data, validates it (errors stop the run before training),
    builds features, trains, scores the candidate and the current champion on the same
    holdout, registers the candidate in MLflow as `challenger`, and moves `champion` only
    when every gate passes. With `gates.approval` (always, or on_retrain for runs started by
    an event or the retraining flow), a passing candidate then waits for a person: the run
    pauses with an approval form (approve, comment, approver) next to the gate verdicts, and
    `sluice approve/reject PROJECT` answers the same form; no answer within
    `gates.approval_timeout_minutes` rejects it. With `deploy.enabled`, a passing candidate is first deployed
    and canaried; it becomes champion and takes the traffic only if that succeeds, and a
    failed deploy fails the run with the old champion still serving. A rejected candidate
    is a normal outcome: the run completes, explains why, and the champion stays.

    Args:
        config_path: the project YAML, e.g. `configs/churn.yaml`.
        overrides: `dotted.key=value` settings applied on top of the YAML.
        reason: why this run started (manual, schedule, drift event); stored with the run.
    """
    logger = get_run_logger()
    cfg = load_config(config_path, overrides or [])
    project = cfg.project
    # what a killed earlier run left Running: its flow run (Prefect) and its MLflow run
    for line in reap_crashed_flow_runs("training-pipeline") + recover_interrupted_runs(project):
        logger.warning(line)
    logger.info("project %s: %s model, %s task (reason: %s)", project, cfg.model.kind, cfg.task, reason or "manual")
    approval = approval_required(cfg.gates.approval, reason)
    require_persistent_api(project, approval)  # before any work: nobody could answer a pause on a temporary API

    dataset, checked, split, features = prepare_features(cfg)
    spec, params, selected = cfg.model, None, None
    if cfg.selects_model:  # tuning and/or several candidates: the best on validation is trained below
        selection = select_model(features, cfg.model_candidates(), cfg.task, cfg.gates.primary_metric,
                                 cfg.seed, project, dataset.fingerprint)
        spec, params, selected = selection.spec, selection.params, selection.name
    trained = train_model(features, spec, cfg.task, cfg.seed, project, params)

    report = evaluate_model(trained, split, cfg.evaluation, cfg.task, cfg.data.target)
    champion = score_champion(project, split, cfg.task, cfg.data.target)
    key = candidate_key(cfg, dataset.fingerprint, ("tuning", "candidates") if selected else ())
    tags = {**run_tags(project, cfg.task, cfg.data.target, dataset.fingerprint, dataset.path, config_hash(cfg),
                       str(cfg.source), cfg.root, selected, request_rules(cfg.validation.columns)),
            **dataset_tags(dataset)}
    key_of_run = run_key(cfg, CODE_FOLDERS)  # the CLI finds an unchanged re-run by it, before importing this stack
    if key_of_run:
        tags[RUN_KEY_TAG] = key_of_run
    record = register_candidate(project, key, trained, report, split.test_path, tags,
                                {"validation": checked.json_path or ""}, reason)
    decision = decide_promotion(record, report, champion, cfg.gates, project)

    outcome = decide_outcome(decision, record.version, champion.version)
    verdict, approved_by = decision.summary, None
    if outcome == "promoted" and approval.required:
        answer = record_approval(record, wait_for_approval(project, record.version, champion.version,
                                                           decision.summary, cfg.gates, cfg.notifications), reason)
        if answer.approved:
            approved_by, verdict = answer.approver, f"{decision.summary} {answer.summary}."
        else:  # the refusal is in the audit trail already, by whoever gave it
            outcome, verdict = "rejected", answer.summary
    deployment = None
    if outcome == "promoted" and cfg.deploy.enabled:
        # the release blesses the candidate only after its canary passed; on failure nothing moved
        out_dir = str(resolve_path(cfg, cfg.deploy.output_dir)) if cfg.deploy.output_dir else None
        deployment = release_model(project, record.version, cfg.packaging, cfg.deploy, cfg.task,
                                   decision.champion_version, cfg.notifications, out_dir).message
    elif outcome == "promoted":
        promote_model(record, decision)
    summary = training_outcome(project, outcome, record.version, champion.version, cfg.gates.primary_metric,
                               report.test, verdict, dataset.fingerprint, selected)
    if deployment is not None:
        summary = replace(summary, deployment=deployment)
    create_markdown_artifact(
        f"## {project}: {outcome}\n\nversion {record.version}, champion {summary.champion}\n\n{verdict}",
        key=artifact_key(project, "training-summary"), description=f"{project} training outcome")
    logger.info("%s: %s (v%s) - %s", project, outcome.upper(), record.version, verdict)
    if not (approval.required and outcome == "rejected" and decision.promote):
        record_outcome(record, outcome, verdict, champion.version, reason, approved_by)
    if outcome in ("promoted", "rejected"):
        name = events.MODEL_PROMOTED if outcome == "promoted" else events.MODEL_REJECTED
        emit(project, name, events.gate_payload(project, outcome, record.version, summary.champion, reason,
                                                verdict, report.test), cfg.notifications)
    return summary
