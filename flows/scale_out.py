"""Scale-out flows: Optuna trials spread over workers sharing one study, batch scoring split by partition."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by Prefect's loader: make `tasks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow, get_run_logger

from flows.training import prepare_features
from sluicegate.config import load_config
from sluicegate.errors import ConfigError
from sluicegate.partitions import parts_dir
from sluicegate.tuning import study_name_for
from tasks._common import settings
from tasks.distribute import (
    merge_partitions,
    pin_champion,
    prepare_study_storage,
    score_partition,
    split_partitions,
    summarize_study,
    tune_shard,
)
from tasks.runners import describe_runner, task_runner_from_settings


@flow(name="tune-shards")
def tune_shards(features, studies: list[dict], task_type: str, metric: str, seed: int, n_workers: int) -> list[list[dict]]:
    """Submit `n_workers` shares of every study at once (one cluster for all); each runs trials until its study is full.

    Args:
        studies: dicts with `candidate`, `study_name` and `storage`.

    Returns:
        Per study, one summary per worker share.
    """
    futures = [[tune_shard.submit(features, s["candidate"], task_type, metric, seed, s["study_name"], s["storage"], i)
                for i in range(n_workers)] for s in studies]
    return [[f.result() for f in shares] for shares in futures]


@flow(name="distributed-tuning", log_prints=True)
def distributed_tuning(config_path: str, n_workers: int = 2) -> dict:
    """Tune a project's candidates with trials spread over the workers of the task runner.

    Prepares the data as training does (ingest, validate, split, features), then, for every
    candidate with tuning enabled, runs `n_workers` workers against one Optuna study in the
    shared storage (SLUICE_OPTUNA_STORAGE: SQLite on one machine, Postgres across machines).
    The study has the name `sluice run` uses, so a later training run finds it finished and
    trains the best parameters without tuning again. Workers come from SLUICE_TASK_RUNNER
    (`threads`, or `dask` with SLUICE_DASK_ADDRESS or a local cluster of `n_workers` processes).

    Args:
        config_path: the project YAML; its `tuning` section sets the budget and search space.
        n_workers: how many workers share each study.
    """
    logger = get_run_logger()
    if n_workers < 1:
        raise ConfigError([f"n_workers: must be >= 1 (got {n_workers})"])
    cfg = load_config(config_path)
    tuned = [c for c in cfg.model_candidates() if c.tuning is not None and c.tuning.enabled]
    if not tuned:
        raise ConfigError([f"{cfg.source}: tuning: no candidate has tuning enabled; add a `tuning:` section"])
    project, metric = cfg.project, cfg.gates.primary_metric
    dataset, _, _, features = prepare_features(cfg)

    s = settings()
    logger.info("%s: %d candidate(s) on %d workers (%s)", project, len(tuned), n_workers, describe_runner(s))
    plan = [{"candidate": c, "study_name": study_name_for(project, dataset.fingerprint, c, cfg.task, metric, cfg.seed),
             "storage": c.tuning.storage or s.optuna_storage} for c in tuned]
    prepare_study_storage([study["storage"] for study in plan])
    shares = tune_shards.with_options(task_runner=task_runner_from_settings(n_workers, s))(
        features, plan, cfg.task, metric, cfg.seed, n_workers)
    studies = []
    for study, workers in zip(plan, shares):
        result = summarize_study(features, study["candidate"], cfg.task, metric, cfg.seed, study["study_name"],
                                 study["storage"], project)
        studies.append({
            "candidate": result.candidate, "study_name": result.study_name, "trials": len(result.trials),
            "complete": result.count("COMPLETE"), "pruned": result.count("PRUNED"), "failed": result.count("FAIL"),
            "best_value": result.best_value, "best_params": result.best_params, "workers": workers,
        })
    return {"project": project, "metric": metric, "runner": describe_runner(s), "n_workers": n_workers,
            "studies": studies}


@flow(name="score-partitions")
def score_partitions(project: str, version: str, parts: list[str], fingerprint: str) -> list:
    """Submit one scoring task per part; each worker loads the pinned model once."""
    futures = [score_partition.submit(project, version, i, p, fingerprint) for i, p in enumerate(parts)]
    return [f.result() for f in futures]


@flow(name="partitioned-scoring", log_prints=True)
def partitioned_scoring(project: str, input_path: str, output_path: str, partitions: int = 4) -> dict:
    """Score a large file with the champion, its partitions in parallel on the task runner's workers.

    The champion's version is pinned first, so every partition is scored by the same model
    even if a promotion happens meanwhile. The output is the same as `sluice predict`'s: the
    input rows in order, plus `prediction` (and `proba_<class>`), `model_version` and
    `input_fingerprint` (of the whole input). Parts are written beside the output, which
    must be on storage every worker can reach.

    Args:
        project: the project name (its registered model).
        input_path: a .csv or .parquet file.
        output_path: where the scored rows go (.csv or .parquet).
        partitions: how many parts to score in parallel.
    """
    s = settings()
    version = pin_champion(project)
    plan = split_partitions(input_path, partitions, str(parts_dir(output_path)))
    results = score_partitions.with_options(task_runner=task_runner_from_settings(partitions, s))(
        project, version, list(plan.parts), plan.fingerprint)
    path = merge_partitions(results, output_path)
    print(f"scored {plan.rows} rows in {len(plan.parts)} partitions with {project} v{version} -> {path}")
    return {"project": project, "rows": plan.rows, "model_version": version, "partitions": len(plan.parts),
            "input_fingerprint": plan.fingerprint, "output_path": path, "runner": describe_runner(s)}
