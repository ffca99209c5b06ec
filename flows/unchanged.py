"""An unchanged re-run of the training pipeline, recorded without training (no pandas, scikit-learn or MLflow)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by Prefect's loader: make `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from sluicegate.outcome import TrainingOutcome
from sluicegate.registry_reader import reader_for
from sluicegate.runkey import load_config_for_key, run_key, unchanged_outcome
from tasks._common import CODE_FOLDERS, artifact_key, settings


@flow(name="training-pipeline", log_prints=True)
def training_unchanged(config_path: str, overrides: list[str] | None = None,
                       reason: str | None = None) -> TrainingOutcome | None:
    """Record a training run whose inputs have not changed since the champion was trained.

    The champion carries the key of the run that made it: the source's bytes, the whole config
    and the code. When this run's key is the same, every step would return what it returned
    then and the candidate would be the champion itself, so nothing is read, trained or
    registered: the run says `unchanged`. When anything differs it returns None and the caller
    runs the full training pipeline.

    Args:
        config_path: the project YAML, e.g. `configs/churn.yaml`.
        overrides: `dotted.key=value` settings applied on top of the YAML.
        reason: why this run started; logged.
    """
    logger = get_run_logger()
    cfg = load_config_for_key(config_path, overrides or [])  # the key vouches for the model checks
    reader = reader_for(settings())
    key = run_key(cfg, CODE_FOLDERS)
    outcome = unchanged_outcome(cfg, key, reader.champion_record(cfg.project) if reader is not None else None)
    if outcome is None:
        logger.info("%s: the inputs differ from the champion's run (key %s); the full pipeline runs", cfg.project, key)
        return None
    create_markdown_artifact(
        f"## {cfg.project}: unchanged\n\nversion {outcome.version}, champion {outcome.champion}\n\n{outcome.summary}\n\n"
        f"Run key `{key}` (data, config and code) is the champion's.",
        key=artifact_key(cfg.project, "training-summary"), description=f"{cfg.project} training outcome")
    logger.info("%s: UNCHANGED (v%s, reason: %s) - %s", cfg.project, outcome.version, reason or "manual", outcome.summary)
    return outcome
