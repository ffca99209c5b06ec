"""The gated training pipeline: ingest, validate, split, features, train, evaluate, gates, register, release."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by Prefect's loader: make `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from sluicegate.config import ProjectConfig, config_hash, load_config, resolve_path
from sluicegate import events
from sluicegate.data import DatasetRef
from sluicegate.features import FeatureSet
from sluicegate.split import SplitResult
from sluicegate.tracking import git_sha, library_versions
from sluicegate.training import candidate_key
from sluicegate.validation import ValidationReport
from tasks._common import artifact_key
from tasks.deploy import release_model
from tasks.evaluate import evaluate_candidate, score_champion
from tasks.events import emit
from tasks.features import build_feature_set
from tasks.ingest import ingest_data
from tasks.register import decide, promote, register_candidate
from tasks.split import split_data
from tasks.train import train_candidate
from tasks.tune import tune_candidates
from tasks.validate import validate_data


def prepare_features(cfg: ProjectConfig) -> tuple[DatasetRef, ValidationReport, SplitResult, FeatureSet]:
    """Ingest, validate, split and build features: the cached front half every training flow shares.

    Called inside a flow; each step is a task, so a failed validation stops the calling flow.
    """
    project = cfg.project
    dataset = ingest_data(cfg.data, str(cfg.root), project)
    listed = {k: list(getattr(cfg.features, k).columns) for k in ("numeric", "categorical")
              if getattr(cfg.features, k).columns != "auto"}
    checked = validate_data(dataset, cfg.validation, cfg.data.target, cfg.task, project, listed)
    split = split_data(dataset, cfg.split, cfg.split_method, cfg.data.target, cfg.seed, project,
                       cfg.split.time_column or cfg.data.time_column)
    exclude = [c for c in (cfg.data.id_column, cfg.data.time_column) if c and c not in cfg.features.datetime.columns]
    return dataset, checked, split, build_feature_set(split, cfg.features, cfg.data.target, exclude, project)


@flow(name="training-pipeline", log_prints=True)
def training_pipeline(config_path: str, overrides: list[str] | None = None, reason: str | None = None) -> dict:
    """Train a candidate from a project YAML and promote it only if it passes every gate.

    Reads and snapshots the data, validates it (errors stop the run before training),
    builds features, trains, scores the candidate and the current champion on the same
    holdout, registers the candidate in MLflow as `challenger`, and moves `champion` only
    when every gate passes. With `deploy.enabled`, a passing candidate is first deployed
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
    logger.info("project %s: %s model, %s task (reason: %s)", project, cfg.model.kind, cfg.task, reason or "manual")

    dataset, checked, split, features = prepare_features(cfg)
    spec, params, selected = cfg.model, None, None
    if cfg.selects_model:  # tuning and/or several candidates: the best on validation is trained below
        selection = tune_candidates(features, cfg.model_candidates(), cfg.task, cfg.gates.primary_metric,
                                    cfg.seed, project, dataset.fingerprint)
        spec, params, selected = selection.spec, selection.params, selection.name
    trained = train_candidate(features, spec, cfg.task, cfg.seed, project, params)

    report = evaluate_candidate(trained, split, cfg.evaluation, cfg.task, cfg.data.target)
    champion = score_champion(project, split, cfg.task, cfg.data.target)
    key = candidate_key(cfg, dataset.fingerprint, ("tuning", "candidates") if selected else ())
    tags = {
        "sluice.project": project,
        "sluice.task": cfg.task,
        "sluice.target": cfg.data.target,
        "sluice.data_fingerprint": dataset.fingerprint,
        "sluice.data_snapshot": dataset.path,
        "sluice.config_hash": config_hash(cfg),
        "sluice.config_path": str(cfg.source),
        "sluice.git_sha": git_sha(cfg.root),
        **{f"sluice.lib.{k}": v for k, v in library_versions().items()},
        **({"sluice.selected_candidate": selected} if selected else {}),
    }
    record = register_candidate(project, key, trained, report, split.test_path, tags,
                                {"validation": checked.json_path or ""}, reason)
    decision = decide(record, report, champion, cfg.gates, project)

    deployment = None
    if decision.promote and cfg.deploy.enabled:
        # the release blesses the candidate only after its canary passed; on failure nothing moved
        out_dir = str(resolve_path(cfg, cfg.deploy.output_dir)) if cfg.deploy.output_dir else None
        deployment = release_model(project, record.version, cfg.packaging, cfg.deploy, cfg.task,
                                   decision.champion_version, cfg.notifications, out_dir).message
        outcome = "promoted"
    elif decision.promote:
        promote(record, decision)
        outcome = "promoted"
    elif champion.version == record.version:
        outcome = "unchanged"
    else:
        outcome = "rejected"
    summary = {
        "project": project,
        "outcome": outcome,
        "version": int(record.version),
        "champion": int(record.version) if outcome == "promoted" else (int(champion.version) if champion.version else None),
        "primary_metric": cfg.gates.primary_metric,
        "metrics": report.test,
        "summary": decision.summary,
        "model_uri": f"models:/{project}/{record.version}",
        "data_fingerprint": dataset.fingerprint,
        "selected_candidate": selected,
        **({"deployment": deployment} if deployment is not None else {}),
    }
    create_markdown_artifact(
        f"## {project}: {outcome}\n\nversion {record.version}, champion {summary['champion']}\n\n{decision.summary}",
        key=artifact_key(project, "training-summary"), description=f"{project} training outcome")
    logger.info("%s: %s (v%s) - %s", project, outcome.upper(), record.version, decision.summary)
    if outcome in ("promoted", "rejected"):
        name = events.MODEL_PROMOTED if outcome == "promoted" else events.MODEL_REJECTED
        emit(project, name, events.gate_payload(project, outcome, record.version, summary["champion"], reason,
                                                decision.summary, report.test), cfg.notifications)
    return summary
